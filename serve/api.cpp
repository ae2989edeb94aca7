#include "serve/api.h"

#include <cctype>
#include <cstdint>
#include <fstream>
#include <sstream>

namespace cocom::serve {

namespace {

const Json& require(const Json& obj, const std::string& field, const std::string& param) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) bad_field(param, "is required");
  return *it;
}

// The field when present and not null.
const Json* optional_field(const Json& obj, const std::string& field) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string string_of(const Json& v, const std::string& param, bool non_blank) {
  if (!v.is_string()) bad_field(param, "must be a string");
  std::string s = v.get<std::string>();
  if (non_blank && s.find_first_not_of(" \t\r\n") == std::string::npos) {
    bad_field(param, "must not be empty");
  }
  return s;
}

int64_t int_in(const Json& v, const std::string& param, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) bad_field(param, "must be an integer");
  // Out-of-range unsigned values do not fit int64: compare as unsigned first.
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) {
    bad_field(param, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    bad_field(param, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                         ", got " + std::to_string(x));
  }
  return x;
}

double number_in(const Json& v, const std::string& param, double lo, double hi, bool lo_open) {
  if (!v.is_number()) bad_field(param, "must be a number");
  const double x = v.get<double>();
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi)) {
    std::ostringstream why;
    why << "must be in " << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
    bad_field(param, why.str());
  }
  return x;
}

// nlohmann's parser recurses once per nesting level: a body of a million '[' would overflow
// the stack. Requests are shallow; refuse deep nesting before parsing.
void check_depth(const std::string& body, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        throw ApiError(
            400, "invalid_request_error",
            "the request body nests JSON deeper than " + std::to_string(max_depth) + " levels", "",
            "invalid_json");
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

Json parse_object(const std::string& body) {
  check_depth(body, 64);
  Json j;
  try {
    j = Json::parse(body);
  } catch (const Json::exception& e) {
    throw ApiError(400, "invalid_request_error",
                   std::string("the request body is not valid JSON: ") + e.what(), "",
                   "invalid_json");
  }
  if (!j.is_object()) {
    throw ApiError(400, "invalid_request_error", "the request body must be a JSON object", "",
                   "invalid_json");
  }
  return j;
}

// The text of a message's content: a string, or an array of {"type": "text", "text"} parts.
std::string content_text(const Json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad_field(param, "must be a string or an array of text parts");
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    const Json& part = content[i];
    if (!part.is_object()) bad_field(p, "must be an object {\"type\": \"text\", \"text\": ...}");
    const std::string type = string_of(require(part, "type", p + ".type"), p + ".type", true);
    if (type != "text") bad_field(p + ".type", "'" + type + "' is not supported (only text)");
    if (!out.empty()) out += "\n";
    out += string_of(require(part, "text", p + ".text"), p + ".text", false);
  }
  return out;
}

std::optional<SearchMode> mode_field(const Json& obj, const std::string& field) {
  const Json* v = optional_field(obj, field);
  if (!v) return std::nullopt;
  const std::string s = string_of(*v, field, true);
  auto m = parse_search_mode(s);
  if (!m) bad_field(field, "'" + s + "' is not one of auto, hybrid, dense, bm25");
  return m;
}

std::string collection_field(const Json& j) {
  const Json* v = optional_field(j, "model");
  if (v) return string_of(*v, "model", true);
  v = optional_field(j, "collection");
  if (v) return string_of(*v, "collection", true);
  bad_field("model", "is required (the collection to use)");
}

}  // namespace

void bad_field(const std::string& param, const std::string& why) {
  throw ApiError(400, "invalid_request_error", param + ": " + why, param, "invalid_field");
}

Json error_json(const ApiError& e) {
  Json err = {{"message", e.what()}, {"type", e.type}};
  err["param"] = e.param.empty() ? Json(nullptr) : Json(e.param);
  err["code"] = e.code.empty() ? Json(nullptr) : Json(e.code);
  return Json{{"error", err}};
}

ApiError from_status(const Status& s) {
  switch (s.code()) {
    case Status::Code::kInvalidArgument:
    case Status::Code::kFailedPrecondition:
      return ApiError(400, "invalid_request_error", s.message(), "", "invalid_request");
    case Status::Code::kNotFound:
      return ApiError(404, "not_found_error", s.message(), "", "not_found");
    case Status::Code::kCancelled:
      return ApiError(503, "server_error", s.message(), "", "cancelled");
    default:
      break;
  }
  const char* what = s.code() == Status::Code::kCorruption ? "corrupt data: "
                     : s.code() == Status::Code::kIOError  ? "I/O error: "
                                                           : "internal error: ";
  return ApiError(500, "server_error", what + s.message(), "", "internal_error");
}

std::optional<SearchMode> parse_search_mode(const std::string& s) {
  if (s == "auto") return SearchMode::kAuto;
  if (s == "hybrid") return SearchMode::kHybrid;
  if (s == "dense") return SearchMode::kDense;
  if (s == "bm25") return SearchMode::kBm25;
  return std::nullopt;
}

ChatRequest parse_chat_request(const std::string& body, const Limits& limits) {
  const Json j = parse_object(body);
  ChatRequest r;
  r.collection = collection_field(j);
  const Json& msgs = require(j, "messages", "messages");
  if (!msgs.is_array() || msgs.empty()) bad_field("messages", "must be a non-empty array");
  if (msgs.size() > 10000) bad_field("messages", "more than 10000 messages");
  static const std::set<std::string> kRoles = {"system",    "user", "assistant",
                                               "developer", "tool", "function"};
  std::optional<size_t> last_user;
  std::string question;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string p = "messages[" + std::to_string(i) + "]";
    const Json& m = msgs[i];
    if (!m.is_object()) bad_field(p, "must be an object {\"role\", \"content\"}");
    const std::string role = string_of(require(m, "role", p + ".role"), p + ".role", true);
    if (!kRoles.count(role)) {
      bad_field(p + ".role",
                "'" + role + "' is not one of system, user, assistant, developer, tool");
    }
    const Json* content = optional_field(m, "content");
    if (role == "user") {
      if (!content) bad_field(p + ".content", "is required");
      question = content_text(*content, p + ".content");
      last_user = i;
    } else if (content) {
      content_text(*content, p + ".content");  // checked, not used
    }
  }
  if (!last_user)
    bad_field("messages", "needs at least one message with role 'user' (the question)");
  const std::string qp = "messages[" + std::to_string(*last_user) + "].content";
  if (question.find_first_not_of(" \t\r\n") == std::string::npos)
    bad_field(qp, "the question is empty");
  if (question.size() > limits.max_question_bytes) {
    bad_field(qp, "the question has " + std::to_string(question.size()) + " bytes; at most " +
                      std::to_string(limits.max_question_bytes));
  }
  r.question = question;

  r.generation.max_new_tokens = limits.default_max_tokens;
  for (const char* f : {"max_completion_tokens", "max_tokens"}) {
    if (const Json* v = optional_field(j, f)) {
      r.generation.max_new_tokens = static_cast<int>(int_in(*v, f, 1, limits.max_tokens));
    }
  }
  if (const Json* v = optional_field(j, "temperature")) {
    r.generation.temperature = number_in(*v, "temperature", 0, 2, false);
  }
  if (const Json* v = optional_field(j, "top_p")) {
    r.generation.top_p = number_in(*v, "top_p", 0, 1, true);
  }
  if (const Json* v = optional_field(j, "top_k")) {
    r.generation.top_k = static_cast<int>(int_in(*v, "top_k", 0, 100000));
  }
  if (const Json* v = optional_field(j, "seed")) {
    if (!v->is_number_integer()) bad_field("seed", "must be an integer");
    r.generation.seed =
        v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }
  if (const Json* v = optional_field(j, "stream")) {
    if (!v->is_boolean()) bad_field("stream", "must be true or false");
    r.stream = v->get<bool>();
  }
  if (const Json* v = optional_field(j, "stop")) {
    if (v->is_string()) {
      r.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 4) bad_field("stop", "at most 4 sequences");
      for (size_t i = 0; i < v->size(); ++i) {
        r.stop.push_back(string_of((*v)[i], "stop[" + std::to_string(i) + "]", false));
      }
    } else {
      bad_field("stop", "must be a string or an array of strings");
    }
    for (const auto& s : r.stop) {
      if (s.empty()) bad_field("stop", "a stop sequence must not be empty");
      if (s.size() > 256) bad_field("stop", "a stop sequence has at most 256 bytes");
    }
  }
  if (const Json* v = optional_field(j, "n")) {
    if (int_in(*v, "n", 1, 1) != 1) bad_field("n", "only 1 is supported");
  }
  if (const Json* v = optional_field(j, "k")) {
    r.k = static_cast<size_t>(int_in(*v, "k", 1, static_cast<int64_t>(limits.max_k)));
  }
  r.mode = mode_field(j, "search_mode");
  if (const Json* v = optional_field(j, "compress")) {
    if (!v->is_boolean()) bad_field("compress", "must be true or false");
    r.compress = v->get<bool>();
  }
  return r;
}

bool SearchFilter::matches(const Passage& p) const {
  if (document_id && p.document_id != *document_id) return false;
  if (source_prefix && p.source.compare(0, source_prefix->size(), *source_prefix) != 0)
    return false;
  return true;
}

SearchRequest parse_search_request(const std::string& body, const Limits& limits) {
  const Json j = parse_object(body);
  SearchRequest r;
  r.collection = collection_field(j);
  r.query = string_of(require(j, "query", "query"), "query", true);
  if (r.query.size() > limits.max_question_bytes) {
    bad_field("query", "has " + std::to_string(r.query.size()) + " bytes; at most " +
                           std::to_string(limits.max_question_bytes));
  }
  if (const Json* v = optional_field(j, "k")) {
    r.k = static_cast<size_t>(int_in(*v, "k", 1, static_cast<int64_t>(limits.max_search_k)));
  }
  r.mode = mode_field(j, "mode");
  if (const Json* f = optional_field(j, "filter")) {
    if (!f->is_object()) bad_field("filter", "must be an object");
    for (auto it = f->begin(); it != f->end(); ++it) {
      const std::string p = "filter." + it.key();
      if (it.key() == "document_id") {
        r.filter.document_id = string_of(it.value(), p, true);
      } else if (it.key() == "source_prefix") {
        r.filter.source_prefix = string_of(it.value(), p, false);
      } else {
        bad_field(p, "is not a known filter (document_id, source_prefix)");
      }
    }
  }
  return r;
}

std::vector<Document> parse_documents(const std::string& body, const Limits& limits) {
  const Json j = parse_object(body);
  const Json& docs = require(j, "documents", "documents");
  if (!docs.is_array() || docs.empty()) bad_field("documents", "must be a non-empty array");
  if (docs.size() > limits.max_documents) {
    bad_field("documents", std::to_string(docs.size()) + " documents; at most " +
                               std::to_string(limits.max_documents) + " per request");
  }
  std::vector<Document> out;
  for (size_t i = 0; i < docs.size(); ++i) {
    const std::string p = "documents[" + std::to_string(i) + "]";
    const Json& d = docs[i];
    if (!d.is_object()) bad_field(p, "must be an object {\"id\", \"text\", \"title\", \"source\"}");
    Document doc;
    doc.id = string_of(require(d, "id", p + ".id"), p + ".id", true);
    doc.text = string_of(require(d, "text", p + ".text"), p + ".text", true);
    if (const Json* v = optional_field(d, "title")) doc.title = string_of(*v, p + ".title", false);
    if (const Json* v = optional_field(d, "source"))
      doc.source = string_of(*v, p + ".source", false);
    out.push_back(std::move(doc));
  }
  return out;
}

std::string excerpt_of(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  // Back up to the start of a UTF-8 character, then to a space when one is near.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  const size_t space = text.rfind(' ', end);
  if (space != std::string::npos && space + 40 > end) end = space;
  return text.substr(0, end) + "\u2026";
}

Json passage_json(const Passage& p, int number, bool excerpt) {
  Json j;
  if (number > 0) j["number"] = number;
  j["passage_id"] = p.id;
  j["document_id"] = p.document_id;
  j["title"] = p.title;
  j["source"] = p.source;
  j["index"] = p.index;
  if (excerpt) {
    j["excerpt"] = excerpt_of(p.text);
  } else {
    j["text"] = p.text;
  }
  j["score"] = p.score;
  return j;
}

Json timings_json(const Timings& t) {
  return Json{{"retrieve_ms", t.retrieve_ms},
              {"load_embeddings_ms", t.load_embeddings_ms},
              {"prefill_ms", t.prefill_ms},
              {"decode_ms", t.decode_ms},
              {"total_ms", t.total_ms},
              {"prompt_tokens", t.prompt_tokens},
              {"generated_tokens", t.generated_tokens},
              {"decode_tokens_per_second", t.decode_tokens_per_second}};
}

bool ApiKeys::allows(const std::string& key, const std::string& collection) const {
  auto it = keys.find(key);
  if (it == keys.end()) return false;
  return it->second.count("*") > 0 || it->second.count(collection) > 0;
}

ApiKeys parse_api_keys(const std::string& text, const std::string& origin) {
  Json j;
  try {
    check_depth(text, 64);
    j = Json::parse(text);
  } catch (const ApiError& e) {
    throw std::runtime_error(origin + ": " + e.what());
  } catch (const Json::exception& e) {
    throw std::runtime_error(origin + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("keys") || !j["keys"].is_object()) {
    throw std::runtime_error(origin +
                             ": expected {\"keys\": {\"KEY\": [\"collection\", ...]}} (field "
                             "\"keys\" missing or not an object)");
  }
  ApiKeys k;
  for (auto it = j["keys"].begin(); it != j["keys"].end(); ++it) {
    const std::string where = origin + ": keys[\"" + it.key() + "\"]";
    if (it.key().size() < 8) {
      throw std::runtime_error(origin +
                               ": a key has fewer than 8 characters (keys must be hard "
                               "to guess)");
    }
    if (!it.value().is_array() || it.value().empty()) {
      throw std::runtime_error(where +
                               ": must be a non-empty array of collection names (or \"*\")");
    }
    std::set<std::string>& cols = k.keys[it.key()];
    for (const Json& c : it.value()) {
      if (!c.is_string() || c.get<std::string>().empty()) {
        throw std::runtime_error(where + ": collection names must be non-empty strings");
      }
      cols.insert(c.get<std::string>());
    }
  }
  if (k.keys.empty()) throw std::runtime_error(origin + ": \"keys\" is empty");
  return k;
}

ApiKeys load_api_keys(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open the api-keys file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (1u << 20)) throw std::runtime_error(path + ": larger than 1 MiB");
  return parse_api_keys(ss.str(), path);
}

std::string bearer_key(const std::string& authorization) {
  static const std::string kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size()) return {};
  for (size_t i = 0; i < kBearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kBearer[i]))) {
      return {};
    }
  }
  std::string key = authorization.substr(kBearer.size());
  while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
  return key;
}

}  // namespace cocom::serve
