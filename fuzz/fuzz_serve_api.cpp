// libFuzzer target: arbitrary bytes as the bodies `cocom serve` parses (chat completion,
// search, documents, the api-keys file) and as streamed pieces for the stop-sequence filter.
// The parsers may only fail with ApiError (400) or std::runtime_error (keys file); what
// they accept must satisfy their documented limits.
#include <cstddef>
#include <cstdint>
#include <string>

#include "serve/api.h"
#include "serve/stop_text.h"

namespace {
void check(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  using namespace cocom::serve;
  const Limits limits;
  try {
    ChatRequest r = parse_chat_request(body, limits);
    check(!r.collection.empty() && !r.question.empty());
    check(r.question.size() <= limits.max_question_bytes);
    check(r.generation.max_new_tokens >= 1 && r.generation.max_new_tokens <= limits.max_tokens);
    check(r.generation.temperature >= 0 && r.generation.temperature <= 2);
    check(r.generation.top_p > 0 && r.generation.top_p <= 1);
    check(r.k <= limits.max_k && r.stop.size() <= 4);
    // The stop filter over the question cut in pieces: what it shows is a prefix of the text.
    StopText s(r.stop);
    std::string shown;
    for (size_t i = 0; i < r.question.size(); i += 3) shown += s.push(r.question.substr(i, 3));
    shown += s.finish();
    check(r.question.compare(0, shown.size(), shown) == 0);
    check(shown == s.text());
  } catch (const ApiError& e) {
    check(e.status == 400);
  }
  try {
    SearchRequest r = parse_search_request(body, limits);
    check(r.k >= 1 && r.k <= limits.max_search_k && !r.query.empty());
  } catch (const ApiError& e) {
    check(e.status == 400);
  }
  try {
    auto docs = parse_documents(body, limits);
    check(!docs.empty() && docs.size() <= limits.max_documents);
    for (const auto& d : docs) check(!d.id.empty());
  } catch (const ApiError& e) {
    check(e.status == 400);
  }
  try {
    ApiKeys k = parse_api_keys(body, "fuzz");
    check(!k.keys.empty());
  } catch (const std::runtime_error&) {
  }
  return 0;
}
