// common/: hashing and JSON field helpers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"
#include "common/rw_lock.h"
#include "common/utf8.h"

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

// The UTF-8 toolkit against hand-decoded bytes (Unicode Table 3-7, maximal subparts).
TEST(Utf8, DecodeRepairAndStreamBoundaries) {
  using namespace cocom::utf8;
  uint32_t cp = 0;
  size_t bad = 0;
  const std::string euro = "\xE2\x82\xAC";  // U+20AC
  EXPECT_EQ(decode(euro.data(), euro.size(), 0, &cp, &bad), 3u);
  EXPECT_EQ(cp, 0x20ACu);
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600
  EXPECT_EQ(decode(emoji.data(), emoji.size(), 0, &cp, &bad), 4u);
  EXPECT_EQ(cp, 0x1F600u);
  // Overlong, surrogate, above U+10FFFF, truncated: ill-formed with their maximal subparts.
  const std::string overlong = "\xC0\xAF", surrogate = "\xED\xA0\x80", big = "\xF4\x90\x80\x80";
  const std::string cut = "\xE2\x82";
  EXPECT_EQ(decode(overlong.data(), 2, 0, &cp, &bad), 0u);
  EXPECT_EQ(bad, 1u);
  EXPECT_EQ(decode(surrogate.data(), 3, 0, &cp, &bad), 0u);
  EXPECT_EQ(bad, 1u);
  EXPECT_EQ(decode(big.data(), 4, 0, &cp, &bad), 0u);
  EXPECT_EQ(bad, 1u);
  EXPECT_EQ(decode(cut.data(), 2, 0, &cp, &bad), 0u);
  EXPECT_EQ(bad, 2u);
  EXPECT_TRUE(is_valid("plain " + euro + emoji));
  EXPECT_FALSE(is_valid("a" + cut));
  EXPECT_EQ(first_invalid(("ab" + surrogate).data(), 5), 2u);

  std::string s = "a" + cut + "b" + overlong + "c";
  EXPECT_EQ(repair(&s), 3u);  // E2 82 | C0 | AF
  EXPECT_EQ(s, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c");
  std::string ok = "fine " + euro;
  EXPECT_EQ(repair(&ok), 0u);
  EXPECT_EQ(ok, "fine " + euro);

  EXPECT_EQ(complete_prefix_length("ab" + cut), 2u);
  EXPECT_EQ(complete_prefix_length("ab" + euro), 5u);
  EXPECT_EQ(complete_prefix_length("x\xF0\x9F\x98"), 1u);
  EXPECT_EQ(complete_prefix_length(""), 0u);

  // Each byte of an ill-formed sequence is one U+FFFD; code points round-trip.
  EXPECT_EQ(to_u32("a" + cut), (std::u32string{U'a', 0xFFFD, 0xFFFD}));
  EXPECT_EQ(from_u32(to_u32("x" + euro + emoji)), "x" + euro + emoji);
  std::string out;
  append(&out, 0xD800);  // a surrogate is not a code point
  EXPECT_EQ(out, kReplacement);
}

// Readers that never stop (each takes the shared lock again as soon as it let go, and the
// readers overlap so the shared count never drops to zero by itself) must not keep a writer
// out: the writer gets the lock within the test's bound, the readers go on afterwards.
TEST(WriterPriorityMutex, WriterGetsInUnderReadersThatNeverStop) {
  cocom::WriterPriorityMutex mu;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0};
  std::atomic<int> inside{0}, max_inside{0};
  auto reader = [&] {
    while (!stop.load()) {
      std::shared_lock<cocom::WriterPriorityMutex> l(mu);
      const int now = ++inside;
      int seen = max_inside.load();
      while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      --inside;
      ++reads;
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 4; ++i) readers.emplace_back(reader);
  while (reads.load() < 100) std::this_thread::yield();
  std::atomic<bool> wrote{false};
  auto writer = std::async(std::launch::async, [&] {
    for (int i = 0; i < 20; ++i) {
      std::unique_lock<cocom::WriterPriorityMutex> l(mu);
      EXPECT_EQ(inside.load(), 0) << "a reader is inside during the write";
    }
    wrote = true;
  });
  const bool finished = writer.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  const int64_t reads_at_write = reads.load();
  // The readers keep going after the writer is done (nobody is left waiting on a closed gate).
  const auto t0 = std::chrono::steady_clock::now();
  while (finished && reads.load() < reads_at_write + 100 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    std::this_thread::yield();
  }
  const int64_t reads_after = reads.load();
  stop = true;
  for (auto& t : readers) t.join();
  if (!finished) writer.wait();  // the readers stopped, so the writer gets in now
  EXPECT_TRUE(finished) << "20 writes did not get the lock within 30 s of sustained reads";
  EXPECT_TRUE(wrote.load());
  EXPECT_GE(reads_after, reads_at_write + 100);
  EXPECT_GE(max_inside.load(), 2) << "readers never shared the lock";
}

TEST(WriterPriorityMutex, TryLockRespectsHoldersAndWaitingWriters) {
  cocom::WriterPriorityMutex mu;
  mu.lock_shared();
  EXPECT_FALSE(mu.try_lock());
  EXPECT_TRUE(mu.try_lock_shared());  // no writer waits: readers share
  mu.unlock_shared();
  std::atomic<bool> got{false};
  std::thread w([&] {
    mu.lock();
    got = true;
    mu.unlock();
  });
  // Once the writer waits, a new reader is turned away although only readers hold the lock.
  bool refused = false;
  for (int i = 0; i < 2000 && !refused; ++i) {
    if (mu.try_lock_shared()) {
      mu.unlock_shared();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } else {
      refused = true;
    }
  }
  EXPECT_TRUE(refused);
  EXPECT_FALSE(got.load());
  mu.unlock_shared();
  w.join();
  EXPECT_TRUE(got.load());
  EXPECT_TRUE(mu.try_lock());
  EXPECT_FALSE(mu.try_lock_shared());
  mu.unlock();
}
