// The OpenAI-compatible wire format of `cocom serve` (docs/server.md): request parsing with
// errors that name the field at fault, the error object, and the JSON of passages. Pure
// functions of their input (no sockets, no engine), so they can be tested and fuzzed alone.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "cocom/cocom.h"

namespace cocom::serve {

using Json = nlohmann::json;

// An error answered with an HTTP status and the OpenAI error object.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = "",
           std::string code = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type, param, code;
};

// 400 invalid_request_error naming `param`.
[[noreturn]] void bad_field(const std::string& param, const std::string& why);

// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
Json error_json(const ApiError& e);

// The HTTP status and error type for a Status the public API returned.
ApiError from_status(const Status& s);

// Limits the parsers enforce.
struct Limits {
  int max_tokens = 4096;  // largest max_tokens a request may ask
  int default_max_tokens = 64;
  size_t max_k = 50;  // passages per question
  size_t max_search_k = 100;
  // A question is prefilled in one forward pass that cannot be interrupted: its length bounds
  // how long a shutdown or a disconnect waits for it.
  size_t max_question_bytes = 4 * 1024;
  size_t max_documents = 10000;  // per ingestion request
};

struct ChatRequest {
  std::string collection;  // "model"
  std::string question;    // the last user message
  GenerationOptions generation;
  bool stream = false;
  std::vector<std::string> stop;
  size_t k = 0;  // 0 = the engine's default
  std::optional<SearchMode> mode;
  bool compress = true;
};
// Throws ApiError (400) for a body that is not JSON or a field that is missing, ill-typed
// or out of range.
ChatRequest parse_chat_request(const std::string& body, const Limits& limits = {});

struct SearchFilter {
  std::optional<std::string> document_id, source_prefix;
  bool matches(const Passage& p) const;
  bool empty() const { return !document_id && !source_prefix; }
};
struct SearchRequest {
  std::string collection;
  std::string query;
  size_t k = 5;
  std::optional<SearchMode> mode;
  SearchFilter filter;
};
SearchRequest parse_search_request(const std::string& body, const Limits& limits = {});

// {"documents": [{"id", "title", "text", "source"}]}.
std::vector<Document> parse_documents(const std::string& body, const Limits& limits = {});

// "auto|hybrid|dense|bm25" (nullopt for anything else).
std::optional<SearchMode> parse_search_mode(const std::string& s);

// A passage as the API shows it; `number` > 0 adds the 1-based source number, `excerpt`
// shows a shortened text instead of the whole one.
Json passage_json(const Passage& p, int number, bool excerpt);

// An answer's timings as JSON (the field names of Timings).
Json timings_json(const Timings& t);

// The text shortened to about `max_bytes` on a character boundary, with an ellipsis.
std::string excerpt_of(const std::string& text, size_t max_bytes = 300);

// The api-keys file: {"keys": {"KEY": ["collection", ...] | ["*"]}}. Throws
// std::runtime_error naming the file and the field at fault.
struct ApiKeys {
  std::map<std::string, std::set<std::string>> keys;
  bool allows(const std::string& key, const std::string& collection) const;
  bool known(const std::string& key) const { return keys.count(key) > 0; }
};
ApiKeys parse_api_keys(const std::string& text, const std::string& origin);
ApiKeys load_api_keys(const std::string& path);

// The key of an "Authorization: Bearer KEY" header value (empty when it is not one).
std::string bearer_key(const std::string& authorization);

}  // namespace cocom::serve
