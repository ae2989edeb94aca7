// common/: hashing and JSON field helpers.
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"

using namespace cocom;

TEST(Hash, Fnv1a64KnownVectors) {
  // Published FNV-1a 64-bit test vectors.
  EXPECT_EQ(fnv1a64(std::string()), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64(std::string("a")), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64(std::string("foobar")), 0x85944171f73967e8ULL);
  // Chaining equals hashing the concatenation.
  EXPECT_EQ(fnv1a64(std::string("bar"), fnv1a64(std::string("foo"))),
            fnv1a64(std::string("foobar")));
  EXPECT_EQ(hex64(0xaf63dc4c8601ec8cULL), "af63dc4c8601ec8c");
  EXPECT_EQ(hex64(1), "0000000000000001");
}

TEST(JsonUtil, FieldErrorsNameFileAndField) {
  Json j = parse_json_text(R"({"a": "x", "b": 1.5, "c": 3})", "cfg.json");
  EXPECT_EQ(json_int(j, "c", "cfg.json"), 3);
  EXPECT_EQ(json_int_or(j, "missing", 7, "cfg.json"), 7);
  try {
    json_int(j, "a", "cfg.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json: field 'a' must be an integer"), std::string::npos);
  }
  EXPECT_THROW(json_int(j, "b", "cfg.json"), Error);
  EXPECT_THROW(parse_json_text("{", "broken.json"), Error);
}
