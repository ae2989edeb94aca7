// The wire format of `cocom serve` (serve/api.h, serve/stop_text.h): requests parsed into what
// the engine is asked, hostile bodies refused with the field named, API keys, stop sequences.
#include <gtest/gtest.h>

#include <string>

#include "serve/api.h"
#include "serve/stop_text.h"

using namespace cocom::serve;

namespace {

// The ApiError a parse throws (status and param), or a failure when it throws nothing.
template <class F>
ApiError error_of(F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no error thrown";
  return ApiError(0, "", "");
}

std::string chat(const std::string& extra) {
  return R"({"model": "docs", "messages": [{"role": "user", "content": "What is zstd?"}])" + extra +
         "}";
}

}  // namespace

TEST(ServeApi, ChatRequestFields) {
  ChatRequest r = parse_chat_request(chat(
      R"(, "max_tokens": 12, "temperature": 0.5, "top_p": 0.9, "seed": 7, "stream": true,
         "stop": ["\n", "END"], "k": 3, "search_mode": "bm25", "compress": false,
         "stream_options": {"include_usage": true}, "user": "x")"));
  EXPECT_EQ(r.collection, "docs");
  EXPECT_EQ(r.question, "What is zstd?");
  EXPECT_EQ(r.generation.max_new_tokens, 12);
  EXPECT_DOUBLE_EQ(r.generation.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r.generation.top_p, 0.9);
  EXPECT_EQ(r.generation.seed, 7u);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(r.k, 3u);
  ASSERT_TRUE(r.mode.has_value());
  EXPECT_EQ(*r.mode, cocom::SearchMode::kBm25);
  EXPECT_FALSE(r.compress);

  // Defaults; null fields are absent ones.
  ChatRequest d = parse_chat_request(chat(R"(, "temperature": null, "max_tokens": null)"));
  EXPECT_EQ(d.generation.max_new_tokens, Limits().default_max_tokens);
  EXPECT_EQ(d.generation.temperature, 0.0);
  EXPECT_FALSE(d.stream);
  EXPECT_TRUE(d.compress);
  EXPECT_EQ(d.k, 0u);
}

TEST(ServeApi, TheQuestionIsTheLastUserMessage) {
  ChatRequest r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "first"},
      {"role": "assistant", "content": null},
      {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]},
      {"role": "assistant", "content": "ignored"}]})");
  EXPECT_EQ(r.question, "second\npart");
  // max_completion_tokens is the newer name of max_tokens.
  EXPECT_EQ(parse_chat_request(chat(R"(, "max_completion_tokens": 9)")).generation.max_new_tokens,
            9);
}

TEST(ServeApi, BadChatRequestsNameTheField) {
  struct Case {
    std::string body, param;
  };
  const Case cases[] = {
      {R"({"messages": [{"role": "user", "content": "q"}]})", "model"},
      {R"({"model": "", "messages": [{"role": "user", "content": "q"}]})", "model"},
      {R"({"model": 3, "messages": [{"role": "user", "content": "q"}]})", "model"},
      {R"({"model": "m"})", "messages"},
      {R"({"model": "m", "messages": []})", "messages"},
      {R"({"model": "m", "messages": {"role": "user"}})", "messages"},
      {R"({"model": "m", "messages": ["hi"]})", "messages[0]"},
      {R"({"model": "m", "messages": [{"role": "king", "content": "q"}]})", "messages[0].role"},
      {R"({"model": "m", "messages": [{"content": "q"}]})", "messages[0].role"},
      {R"({"model": "m", "messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"model": "m", "messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "  "}]})", "messages[0].content"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0].type"},
      {R"({"model": "m", "messages": [{"role": "system", "content": "only a system message"}]})",
       "messages"},
      {chat(R"(, "max_tokens": 0)"), "max_tokens"},
      {chat(R"(, "max_tokens": 100000)"), "max_tokens"},
      {chat(R"(, "max_tokens": 1.5)"), "max_tokens"},
      {chat(R"(, "max_tokens": "10")"), "max_tokens"},
      {chat(R"(, "max_tokens": 18446744073709551615)"), "max_tokens"},
      {chat(R"(, "temperature": 5)"), "temperature"},
      {chat(R"(, "temperature": -0.1)"), "temperature"},
      {chat(R"(, "top_p": 0)"), "top_p"},
      {chat(R"(, "top_p": 1.01)"), "top_p"},
      {chat(R"(, "seed": 1.5)"), "seed"},
      {chat(R"(, "stream": "yes")"), "stream"},
      {chat(R"(, "stop": ["a", "b", "c", "d", "e"])"), "stop"},
      {chat(R"(, "stop": [""])"), "stop"},
      {chat(R"(, "stop": 3)"), "stop"},
      {chat(R"(, "n": 2)"), "n"},
      {chat(R"(, "k": 0)"), "k"},
      {chat(R"(, "k": 51)"), "k"},
      {chat(R"(, "search_mode": "vector")"), "search_mode"},
      {chat(R"(, "compress": 1)"), "compress"},
  };
  for (const Case& c : cases) {
    ApiError e = error_of([&] { parse_chat_request(c.body); });
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << " -> " << e.what();
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_NE(std::string(e.what()).find(c.param), std::string::npos) << e.what();
  }
}

TEST(ServeApi, HostileBodiesAreRefusedNotCrashed) {
  static const char kWithNul[] = "{\"model\": \"m\x00\", \"messages\": 1}";
  const std::string bodies[] = {"",
                                "not json",
                                "[1, 2]",
                                "null",
                                "{\"model\": \"m\", \"messages\": [",
                                std::string(kWithNul, sizeof kWithNul - 1),
                                "\xff\xfe{}",
                                std::string(100000, '[') + std::string(100000, ']'),
                                "{\"a\":" + std::string(200, '{') + std::string(200, '}') + "}"};
  for (const std::string& b : bodies) {
    ApiError e = error_of([&] { parse_chat_request(b); });
    EXPECT_EQ(e.status, 400) << b.substr(0, 40);
    EXPECT_EQ(error_of([&] { parse_search_request(b); }).status, 400);
    EXPECT_EQ(error_of([&] { parse_documents(b); }).status, 400);
  }
  // A question over the byte limit.
  Limits small;
  small.max_question_bytes = 8;
  EXPECT_EQ(error_of([&] { parse_chat_request(chat(""), small); }).param, "messages[0].content");
  // Brackets inside strings do not count as nesting.
  EXPECT_NO_THROW(
      parse_chat_request(R"({"model": "m", "messages": [{"role": "user", "content": ")" +
                         std::string(500, '[') + R"("}]})"));
}

TEST(ServeApi, SearchRequests) {
  SearchRequest r = parse_search_request(
      R"({"collection": "docs", "query": "zstd", "k": 3, "mode": "hybrid",
          "filter": {"document_id": "a.md", "source_prefix": "/srv/"}})");
  EXPECT_EQ(r.collection, "docs");
  EXPECT_EQ(r.k, 3u);
  EXPECT_EQ(*r.mode, cocom::SearchMode::kHybrid);
  cocom::Passage p;
  p.document_id = "a.md";
  p.source = "/srv/a.md";
  EXPECT_TRUE(r.filter.matches(p));
  p.source = "/tmp/a.md";
  EXPECT_FALSE(r.filter.matches(p));
  EXPECT_EQ(parse_search_request(R"({"model": "d", "query": "q"})").k, 5u);
  EXPECT_EQ(error_of([] { parse_search_request(R"({"model": "d"})"); }).param, "query");
  EXPECT_EQ(
      error_of([] { parse_search_request(R"({"model": "d", "query": "q", "k": 101})"); }).param,
      "k");
  EXPECT_EQ(error_of([] {
              parse_search_request(R"({"model": "d", "query": "q", "filter": {"author": "x"}})");
            }).param,
            "filter.author");
  EXPECT_EQ(
      error_of([] { parse_search_request(R"({"model": "d", "query": "q", "filter": []})"); }).param,
      "filter");
}

TEST(ServeApi, Documents) {
  auto docs = parse_documents(
      R"({"documents": [{"id": "a", "text": "alpha", "title": "A", "source": "s"}, {"id": "b", "text": "beta"}]})");
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].title, "A");
  EXPECT_EQ(docs[1].id, "b");
  EXPECT_EQ(error_of([] { parse_documents(R"({"documents": []})"); }).param, "documents");
  EXPECT_EQ(error_of([] { parse_documents(R"({"documents": [{"text": "x"}]})"); }).param,
            "documents[0].id");
  EXPECT_EQ(error_of([] {
              parse_documents(R"({"documents": [{"id": "a", "text": "x"}, {"id": "b"}]})");
            }).param,
            "documents[1].text");
  Limits few;
  few.max_documents = 1;
  EXPECT_EQ(error_of([&] {
              parse_documents(
                  R"({"documents": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]})", few);
            }).param,
            "documents");
}

TEST(ServeApi, ErrorObjectAndStatuses) {
  const cocom::serve::Json j =
      error_json(ApiError(400, "invalid_request_error", "k: bad", "k", "invalid_field"));
  EXPECT_EQ(j["error"]["message"], "k: bad");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "k");
  EXPECT_EQ(j["error"]["code"], "invalid_field");
  EXPECT_TRUE(error_json(ApiError(500, "server_error", "x"))["error"]["param"].is_null());
  EXPECT_EQ(from_status(cocom::Status::NotFound("no")).status, 404);
  EXPECT_EQ(from_status(cocom::Status::InvalidArgument("no")).status, 400);
  EXPECT_EQ(from_status(cocom::Status::Corruption("no")).status, 500);
}

TEST(ServeApi, ApiKeys) {
  ApiKeys k =
      parse_api_keys(R"({"keys": {"key-aaaaaaaa": ["a"], "key-admin-1": ["*"]}})", "keys.json");
  EXPECT_TRUE(k.allows("key-aaaaaaaa", "a"));
  EXPECT_FALSE(k.allows("key-aaaaaaaa", "b"));
  EXPECT_TRUE(k.allows("key-admin-1", "b"));
  EXPECT_FALSE(k.allows("nobody-123", "a"));
  auto message = [](const std::string& text) {
    try {
      parse_api_keys(text, "keys.json");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("{").find("keys.json: not valid JSON"), std::string::npos);
  EXPECT_NE(message(R"({"keys": []})").find("\"keys\""), std::string::npos);
  EXPECT_NE(message(R"({"keys": {"short": ["a"]}})").find("fewer than 8"), std::string::npos);
  EXPECT_NE(message(R"({"keys": {"key-aaaaaaaa": []}})").find("keys[\"key-aaaaaaaa\"]"),
            std::string::npos);
  EXPECT_NE(message(R"({"keys": {"key-aaaaaaaa": [1]}})").find("non-empty strings"),
            std::string::npos);
  EXPECT_NE(message(R"({"keys": {}})").find("empty"), std::string::npos);
  EXPECT_NE(message(std::string(10000, '[')).find("deeper"), std::string::npos);
  EXPECT_EQ(bearer_key("Bearer abc"), "abc");
  EXPECT_EQ(bearer_key("bearer abc  "), "abc");
  EXPECT_EQ(bearer_key("Basic abc"), "");
  EXPECT_EQ(bearer_key("Bearer "), "");
}

TEST(ServeApi, StopSequencesAcrossPieces) {
  StopText s({"END", "\n\n"});
  std::string shown;
  for (const char* piece : {"The ans", "wer is 4", "2 E", "N", "D and more"})
    shown += s.push(piece);
  EXPECT_TRUE(s.hit());
  EXPECT_EQ(shown, "The answer is 42 ");
  EXPECT_EQ(s.text(), "The answer is 42 ");
  EXPECT_EQ(s.push("later"), "");

  // A held-back prefix that turns out not to be a stop sequence is released.
  StopText t({"END"});
  EXPECT_EQ(t.push("abc E"), "abc ");
  EXPECT_EQ(t.push("x"), "Ex");
  EXPECT_EQ(t.push("EN"), "");
  EXPECT_EQ(t.finish(), "EN");
  EXPECT_FALSE(t.hit());

  StopText none({});
  EXPECT_EQ(none.push("abc"), "abc");
  EXPECT_EQ(none.finish(), "");
}

TEST(ServeApi, Excerpts) {
  EXPECT_EQ(excerpt_of("short", 300), "short");
  const std::string text =
      std::string(290, 'a') + " " + "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";
  const std::string e = excerpt_of(text, 296);
  // Cut at the space (near the limit), never inside the two-byte characters.
  EXPECT_EQ(e, std::string(290, 'a') + "\u2026");
  const std::string f = excerpt_of(std::string(10, '\xC3') + std::string(400, 'b'), 5);
  EXPECT_LE(f.size(), 5u + 3u);
}
