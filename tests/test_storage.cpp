// Tests of the RocksDB knowledge store (storage/store.h).
#include "storage/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <ostream>
#include <random>
#include <set>
#include <thread>

#include "common/error.h"
#include "tests/test_util.h"

extern char** environ;

namespace cocom::storage {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------
// helpers

struct TempDir {
  std::string dir = test::make_temp_dir("storage");
  std::string db = dir + "/db";
  ~TempDir() {
    std::error_code ec;
    if (!::testing::Test::HasFailure()) fs::remove_all(dir, ec);
  }
};

Manifest test_manifest(EmbeddingDType dt = EmbeddingDType::F32) {
  Manifest m;
  m.compressor_fingerprint = "cmp-A";
  m.compr_rate = 16;
  m.embeddings_per_passage = 2;
  m.embedding_dim = 4;
  m.embedding_dtype = dt;
  m.retriever_fingerprint = "ret-A";
  m.retriever_dim = 3;
  m.index_factory = "Flat";
  return m;
}

std::vector<float> emb_values(uint64_t seed) {
  std::vector<float> v(8);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(seed % 97) * 0.25f - float(i);
  return v;
}

// Lower-cased ASCII letter/digit runs: the storage tests need terms, not the analyzer
// (index::analyze, tested in test_index).
std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      word.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    } else if (!word.empty()) {
      out.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) out.push_back(std::move(word));
  return out;
}

NewPassage make_passage(const std::string& text, int64_t index, uint64_t seed) {
  NewPassage p;
  p.record.index = index;
  p.record.text = text;
  p.record.char_begin = index * 100;
  p.record.char_end = index * 100 + static_cast<int64_t>(text.size());
  p.embeddings = emb_values(seed);
  p.retriever_vector = {float(seed), 0.5f, -1.0f};
  p.terms = words_of(text);
  return p;
}

// The passage ids in the postings of `term`.
std::vector<uint64_t> postings_of(const Store& store, const std::string& term) {
  const PostingsSnapshot snap = store.read_postings({term});
  std::vector<uint64_t> ids;
  for (const Posting& p : snap.terms.at(0).postings) ids.push_back(p.passage_id);
  return ids;
}

DocumentRecord make_doc(const std::string& id, const std::string& source,
                        const std::string& title) {
  DocumentRecord d;
  d.id = id;
  d.source = source;
  d.title = title;
  d.content_hash = "hash-" + title;
  d.meta_json = R"({"k":1})";
  return d;
}

uint16_t u16_at(const std::string& blob, size_t header, size_t i) {
  const size_t off = header + 2 * i;
  return static_cast<uint16_t>(static_cast<uint8_t>(blob[off]) |
                               (static_cast<uint8_t>(blob[off + 1]) << 8));
}

// What a raw scan of the RocksDB column families finds (opened read-only, store closed).
struct Scan {
  int64_t documents = 0, passages = 0, embeddings = 0, retriever = 0, lengths = 0;
  int64_t total_terms = 0, postings = 0, sources = 0;
  uint64_t max_id_plus_one = 0;
  std::set<uint64_t> passage_ids;
};

uint64_t be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t le32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

Scan raw_scan(const std::string& path) {
  std::vector<std::string> names;
  rocksdb::Options opt;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(opt, path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status st = rocksdb::DB::OpenForReadOnly(opt, path, descs, &handles, &db);
  EXPECT_TRUE(st.ok()) << st.ToString();
  Scan s;
  if (!st.ok()) return s;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cf;
  for (size_t i = 0; i < names.size(); ++i) cf[names[i]] = handles[i];
  auto each = [&](const char* name,
                  const std::function<void(const rocksdb::Slice&, const rocksdb::Slice&)>& fn) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cf.at(name)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) fn(it->key(), it->value());
    EXPECT_TRUE(it->status().ok());
  };
  std::map<uint64_t, uint64_t> tf_sum, len;
  std::set<uint64_t> emb_ids, ret_ids;
  each("documents", [&](auto&, auto&) { ++s.documents; });
  each("sources", [&](auto&, auto&) { ++s.sources; });
  each("passages", [&](const rocksdb::Slice& k, auto&) {
    ++s.passages;
    EXPECT_EQ(k.size(), 8u);
    s.passage_ids.insert(be64(k.data()));
    s.max_id_plus_one = std::max(s.max_id_plus_one, be64(k.data()) + 1);
  });
  each("embeddings", [&](const rocksdb::Slice& k, auto&) {
    ++s.embeddings;
    emb_ids.insert(be64(k.data()));
  });
  each("retriever", [&](const rocksdb::Slice& k, auto&) {
    ++s.retriever;
    ret_ids.insert(be64(k.data()));
  });
  each("passage_len", [&](const rocksdb::Slice& k, const rocksdb::Slice& v) {
    ++s.lengths;
    len[be64(k.data())] = le32(v.data());
    s.total_terms += le32(v.data());
  });
  each("postings", [&](const rocksdb::Slice& k, const rocksdb::Slice& v) {
    ++s.postings;
    ASSERT_GE(k.size(), 9u);
    EXPECT_EQ(k[k.size() - 9], '\0');
    tf_sum[be64(k.data() + k.size() - 8)] += le32(v.data());
  });
  // Cross-checks: every posting/length/embedding belongs to a stored passage, and the term
  // frequencies of a passage add up to its length.
  EXPECT_EQ(tf_sum.size(), len.size());
  for (const auto& [id, sum] : tf_sum) {
    EXPECT_TRUE(s.passage_ids.count(id)) << id;
    EXPECT_EQ(len[id], sum) << "passage " << id;
  }
  for (uint64_t id : emb_ids) EXPECT_TRUE(s.passage_ids.count(id)) << id;
  for (uint64_t id : ret_ids) EXPECT_TRUE(s.passage_ids.count(id)) << id;
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  delete db;
  return s;
}

// stats() of the store at `path` equals a full scan (the store is opened and closed here).
void expect_stats_match_scan(const std::string& path) {
  StoreStats st;
  {
    auto store = Store::open_existing(path);
    st = store->stats();
    // Through the API too: every listed passage exists and points back at its document.
    int64_t docs = 0, passages = 0, embeddings = 0;
    store->for_each_document([&](const DocumentRecord& d) {
      ++docs;
      for (uint64_t id : d.passage_ids) {
        auto p = store->get_passage(id);
        ASSERT_TRUE(p) << id;
        EXPECT_EQ(p->doc_id, d.id);
        if (store->get_embeddings(id)) ++embeddings;
        ++passages;
      }
      EXPECT_EQ(store->documents_by_source(d.source).size() >= 1, true);
    });
    EXPECT_EQ(docs, st.documents);
    EXPECT_EQ(passages, st.passages);
    EXPECT_EQ(embeddings, st.embeddings);
  }
  Scan s = raw_scan(path);
  EXPECT_EQ(st.documents, s.documents);
  EXPECT_EQ(st.documents, s.sources);
  EXPECT_EQ(st.passages, s.passages);
  EXPECT_EQ(st.embeddings, s.embeddings);
  EXPECT_EQ(st.bm25_documents, s.lengths);
  EXPECT_EQ(st.total_terms, s.total_terms);
  EXPECT_GE(st.next_passage_id, s.max_id_plus_one);
}

// ---------------------------------------------------------------------------------------
// embedding blobs

constexpr size_t kHeader1D = 7 + 8;  // header of a 1-D blob

TEST(EmbeddingBlob, Fp16HandValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float sub1 = std::ldexp(1.0f, -24);  // smallest fp16 subnormal
  std::vector<float> in = {1.0f,
                           -2.5f,
                           65504.0f,
                           65520.0f,  // ties to inf
                           1e-8f,
                           3e-8f,
                           1e-7f,
                           std::ldexp(1.0f, -14),
                           inf,
                           -inf,
                           nan,
                           -0.0f,
                           1.0f + std::ldexp(1.0f, -11),      // tie -> even (1.0)
                           1.0f + 3 * std::ldexp(1.0f, -11),  // tie -> even (1 + 2^-9)
                           65519.0f};
  const std::string blob = encode_embedding(in, {int64_t(in.size())}, EmbeddingDType::F16);
  ASSERT_EQ(blob.size(), kHeader1D + 2 * in.size());
  EXPECT_EQ(blob.substr(0, 4), "CCEM");
  const uint16_t want[] = {0x3c00,
                           0xc100,
                           0x7bff,
                           0x7c00,
                           0x0000,
                           0x0001,
                           0x0002,
                           0x0400,
                           0x7c00,
                           0xfc00,
                           0x0000 /*nan, checked below*/,
                           0x8000,
                           0x3c00,
                           0x3c02,
                           0x7bff};
  for (size_t i = 0; i < in.size(); ++i) {
    if (i == 10) {
      EXPECT_EQ(u16_at(blob, kHeader1D, i) & 0x7c00, 0x7c00);
      EXPECT_NE(u16_at(blob, kHeader1D, i) & 0x03ff, 0);
      continue;
    }
    EXPECT_EQ(u16_at(blob, kHeader1D, i), want[i]) << "value " << i << " = " << in[i];
  }
  std::vector<int64_t> shape;
  auto out = decode_embedding(blob, &shape, "t");
  ASSERT_EQ(shape, std::vector<int64_t>{int64_t(in.size())});
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.5f);
  EXPECT_EQ(out[2], 65504.0f);
  EXPECT_EQ(out[3], inf);
  EXPECT_EQ(out[4], 0.0f);
  EXPECT_EQ(out[5], sub1);
  EXPECT_EQ(out[6], 2 * sub1);
  EXPECT_EQ(out[7], std::ldexp(1.0f, -14));
  EXPECT_EQ(out[8], inf);
  EXPECT_EQ(out[9], -inf);
  EXPECT_TRUE(std::isnan(out[10]));
  EXPECT_EQ(out[11], 0.0f);
  EXPECT_TRUE(std::signbit(out[11]));
  EXPECT_EQ(out[12], 1.0f);
  EXPECT_EQ(out[13], 1.0f + std::ldexp(1.0f, -9));
}

TEST(EmbeddingBlob, Bf16HandValues) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> in = {1.0f,
                           -2.5f,
                           1.0f + std::ldexp(1.0f, -8),
                           1.0f + 3 * std::ldexp(1.0f, -8),
                           inf,
                           FLT_MAX,
                           std::numeric_limits<float>::quiet_NaN(),
                           1e-40f};
  const std::string blob = encode_embedding(in, {2, 4}, EmbeddingDType::BF16);
  const size_t header = 7 + 16;
  EXPECT_EQ(u16_at(blob, header, 0), 0x3f80);
  EXPECT_EQ(u16_at(blob, header, 1), 0xc020);
  EXPECT_EQ(u16_at(blob, header, 2), 0x3f80);
  EXPECT_EQ(u16_at(blob, header, 3), 0x3f82);
  EXPECT_EQ(u16_at(blob, header, 4), 0x7f80);
  EXPECT_EQ(u16_at(blob, header, 5), 0x7f80);  // FLT_MAX rounds up to inf
  std::vector<int64_t> shape;
  auto out = decode_embedding(blob, &shape, "t");
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.5f);
  EXPECT_EQ(out[3], 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(out[4], inf);
  EXPECT_TRUE(std::isnan(out[6]));
  EXPECT_NEAR(out[7], 1e-40f, 5e-41f);  // subnormal floats survive in bf16 (spacing 2^-133)
}

TEST(EmbeddingBlob, RandomRoundTripsWithinRounding) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> in(1000);
  for (auto& v : in) v = dist(rng);
  for (auto dt : {EmbeddingDType::F16, EmbeddingDType::BF16, EmbeddingDType::F32}) {
    auto out = decode_embedding(encode_embedding(in, {10, 100}, dt), nullptr, "t");
    ASSERT_EQ(out.size(), in.size());
    const float rel = dt == EmbeddingDType::F16    ? std::ldexp(1.0f, -11)
                      : dt == EmbeddingDType::BF16 ? std::ldexp(1.0f, -8)
                                                   : 0.0f;
    for (size_t i = 0; i < in.size(); ++i) {
      // fp16 subnormals (|x| < 2^-14) have an absolute error of at most 2^-25.
      const float tol = std::max(std::abs(in[i]) * rel, dt == EmbeddingDType::F16 ? 3e-8f : 0.0f);
      EXPECT_LE(std::abs(out[i] - in[i]), tol) << embedding_dtype_name(dt) << " " << in[i];
    }
  }
  EXPECT_EQ(parse_embedding_dtype("bf16"), EmbeddingDType::BF16);
  EXPECT_EQ(parse_embedding_dtype("fp32"), EmbeddingDType::F32);
  EXPECT_EQ(parse_embedding_dtype("int8"), EmbeddingDType::I8);
  EXPECT_FALSE(parse_embedding_dtype("int4"));
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << e.what() << "' lacks '" << p << "'";
    }
  }
}

TEST(EmbeddingBlob, CorruptBlobsAreErrorsNamingWhat) {
  const std::string good = encode_embedding({1, 2, 3, 4}, {2, 2}, EmbeddingDType::F16);
  EXPECT_EQ(decode_embedding(good, nullptr, "x").size(), 4u);
  expect_error([&] { decode_embedding("", nullptr, "passage 7"); }, {"passage 7", "truncated"});
  expect_error([&] { decode_embedding(good.substr(0, 12), nullptr, "p"); }, {"p", "truncated"});
  std::string bad = good;
  bad[0] = 'X';
  expect_error([&] { decode_embedding(bad, nullptr, "blobA"); }, {"blobA", "magic"});
  expect_error([&] { decode_embedding(good.substr(0, good.size() - 1), nullptr, "blobB"); },
               {"blobB", "shape"});
  expect_error([&] { decode_embedding(good + "zz", nullptr, "blobC"); }, {"blobC", "shape"});
  bad = good;
  bad[5] = 9;
  expect_error([&] { decode_embedding(bad, nullptr, "blobD"); }, {"blobD", "dtype"});
  bad = good;
  bad[6] = 100;
  expect_error([&] { decode_embedding(bad, nullptr, "blobE"); }, {"blobE"});
  bad = good;
  for (int i = 0; i < 8; ++i) bad[7 + i] = static_cast<char>(0x7f);  // huge first dimension
  expect_error([&] { decode_embedding(bad, nullptr, "blobF"); }, {"blobF"});
  bad = good;
  bad[7 + 7] = static_cast<char>(0x80);  // negative dimension
  expect_error([&] { decode_embedding(bad, nullptr, "blobG"); }, {"blobG"});
  expect_error([&] { encode_embedding({1, 2, 3}, {2, 2}, EmbeddingDType::F32); }, {"shape"});
  // A zero-sized tensor is valid.
  EXPECT_TRUE(
      decode_embedding(encode_embedding({}, {0, 4}, EmbeddingDType::F16), nullptr, "z").empty());
}

// int8: per-vector fp32 scale, symmetric. Vectors are the rows of the last dimension.
float f32_at(const std::string& blob, size_t off) {
  uint32_t x = le32(blob.data() + off);
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

TEST(EmbeddingBlob, Int8HandValues) {
  // Row 0: max 127 -> scale 1 exactly; -63.5 rounds away from zero to -64; 0.4 -> 0.
  // Row 1: all zeros -> scale 0. Row 2: negatives with large magnitudes.
  // Row 3: one huge value swamps the small ones (they round to 0, within scale / 2).
  const std::vector<float> in = {127.0f, -63.5f, 0.4f,  1.0f, 0.0f,  0.0f,  0.0f,   -0.0f,
                                 -2e6f,  -1e6f,  -3e5f, 2e6f, 1e30f, 1e-3f, -1e29f, 5e28f};
  const std::string blob = encode_embedding(in, {4, 4}, EmbeddingDType::I8);
  const size_t header = 7 + 16;
  ASSERT_EQ(blob.size(), header + 4 * (4 + 4));
  EXPECT_EQ(blob[5], 3);  // dtype code
  EXPECT_EQ(f32_at(blob, header), 1.0f);
  EXPECT_EQ(static_cast<int8_t>(blob[header + 4]), 127);
  EXPECT_EQ(static_cast<int8_t>(blob[header + 5]), -64);
  EXPECT_EQ(static_cast<int8_t>(blob[header + 6]), 0);
  EXPECT_EQ(static_cast<int8_t>(blob[header + 7]), 1);
  EXPECT_EQ(f32_at(blob, header + 8), 0.0f);
  EXPECT_EQ(f32_at(blob, header + 16), 2e6f / 127.0f);
  EXPECT_EQ(static_cast<int8_t>(blob[header + 20]), -127);
  EXPECT_EQ(static_cast<int8_t>(blob[header + 23]), 127);
  std::vector<int64_t> shape;
  const auto out = decode_embedding(blob, &shape, "t");
  EXPECT_EQ(shape, (std::vector<int64_t>{4, 4}));
  ASSERT_EQ(out.size(), in.size());
  for (size_t r = 0; r < 4; ++r) {
    const float scale = f32_at(blob, header + 8 * r);
    for (size_t i = 4 * r; i < 4 * r + 4; ++i) {
      // q * scale and x / scale are rounded floats: allow one part in 2^20 beyond scale / 2.
      EXPECT_LE(std::abs(out[i] - in[i]), scale / 2 * (1 + std::ldexp(1.0f, -20)))
          << "row " << r << " value " << in[i];
    }
  }
  EXPECT_EQ(out[0], 127.0f);
  EXPECT_EQ(out[1], -64.0f);
  for (size_t i = 4; i < 8; ++i) EXPECT_EQ(out[i], 0.0f);
  EXPECT_EQ(out[12], 1e30f / 127.0f * 127.0f);
  EXPECT_EQ(out[13], 0.0f);
  // A 1-D tensor is one vector; a scalar (no dimensions) is one vector of one value.
  EXPECT_EQ(decode_embedding(encode_embedding({-3.0f}, {}, EmbeddingDType::I8), nullptr, "s"),
            std::vector<float>{-3.0f});
  EXPECT_TRUE(
      decode_embedding(encode_embedding({}, {3, 0}, EmbeddingDType::I8), nullptr, "z").empty());
  // Non-finite values have no int8 code.
  expect_error([&] { encode_embedding({1.0f, NAN}, {2}, EmbeddingDType::I8); }, {"finite"});
  expect_error([&] { encode_embedding({INFINITY, 1.0f}, {2}, EmbeddingDType::I8); }, {"finite"});
}

TEST(EmbeddingBlob, Int8RandomRoundTripAndSizes) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  const int64_t n = 8, H = 64;
  std::vector<float> in(size_t(n * H));
  for (auto& v : in) v = dist(rng);
  const std::string blob = encode_embedding(in, {n, H}, EmbeddingDType::I8);
  EXPECT_EQ(blob.size(), 7 + 16 + embedding_payload_bytes(n, H, EmbeddingDType::I8));
  const auto out = decode_embedding(blob, nullptr, "t");
  for (int64_t r = 0; r < n; ++r) {
    float amax = 0;
    for (int64_t i = 0; i < H; ++i) amax = std::max(amax, std::abs(in[size_t(r * H + i)]));
    const float scale = amax / 127.0f;
    for (int64_t i = 0; i < H; ++i) {
      const size_t k = size_t(r * H + i);
      EXPECT_LE(std::abs(out[k] - in[k]), scale / 2 * (1 + std::ldexp(1.0f, -20)));
    }
  }
  // Payload sizes: values (+ one fp32 scale per vector for int8).
  EXPECT_EQ(embedding_payload_bytes(8, 2048, EmbeddingDType::F16), 8u * 2048 * 2);
  EXPECT_EQ(embedding_payload_bytes(8, 2048, EmbeddingDType::BF16), 8u * 2048 * 2);
  EXPECT_EQ(embedding_payload_bytes(8, 2048, EmbeddingDType::F32), 8u * 2048 * 4);
  EXPECT_EQ(embedding_payload_bytes(8, 2048, EmbeddingDType::I8), 8u * (2048 + 4));
  for (auto dt : {EmbeddingDType::F16, EmbeddingDType::BF16, EmbeddingDType::F32}) {
    EXPECT_EQ(encode_embedding(in, {n, H}, dt).size(), 7 + 16 + embedding_payload_bytes(n, H, dt));
  }
}

TEST(EmbeddingBlob, Int8HostileBlobsAreErrorsNamingWhat) {
  const std::string good = encode_embedding({1, -2, 3, 4, 0, 0}, {2, 3}, EmbeddingDType::I8);
  const size_t header = 7 + 16;
  ASSERT_EQ(decode_embedding(good, nullptr, "x").size(), 6u);
  expect_error([&] { decode_embedding(good.substr(0, good.size() - 1), nullptr, "passage 3"); },
               {"passage 3", "shape"});
  expect_error([&] { decode_embedding(good + "z", nullptr, "passage 4"); }, {"passage 4", "shape"});
  // The same bytes read as 6 values with no scales are the wrong size.
  std::string bad =
      encode_embedding({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, {14}, EmbeddingDType::I8);
  bad[7] = 6;  // claims 6 values but holds 4 + 14 bytes
  expect_error([&] { decode_embedding(bad, nullptr, "blobS"); }, {"blobS", "shape"});
  auto put_scale = [&](std::string b, float f) {
    std::memcpy(&b[header], &f, 4);  // little-endian host (x86/arm64)
    return b;
  };
  expect_error([&] { decode_embedding(put_scale(good, NAN), nullptr, "blobN"); },
               {"blobN", "scale"});
  expect_error([&] { decode_embedding(put_scale(good, -1.0f), nullptr, "blobM"); },
               {"blobM", "scale"});
  expect_error([&] { decode_embedding(put_scale(good, INFINITY), nullptr, "blobI"); },
               {"blobI", "scale"});
  bad = good;
  bad[header + 4] = static_cast<char>(0x80);  // -128: never written by the encoder
  expect_error([&] { decode_embedding(bad, nullptr, "blobQ"); }, {"blobQ", "-128"});
  bad = good;
  bad[5] = 4;
  expect_error([&] { decode_embedding(bad, nullptr, "blobD"); }, {"blobD", "dtype"});
}

TEST(Store, Int8StoreRoundTripsAndRefusesOtherDtypes) {
  TempDir t;
  std::vector<uint64_t> ids;
  {
    auto store = Store::open(t.db, test_manifest(EmbeddingDType::I8));
    ids = store->put_document(make_doc("a", "/a", "A"), {make_passage("one two", 0, 5)});
  }
  auto store = Store::open(t.db, test_manifest(EmbeddingDType::I8));
  EXPECT_EQ(store->manifest().embedding_dtype, EmbeddingDType::I8);
  const auto want = emb_values(5);  // 2 vectors of 4
  const auto got = *store->get_embeddings(ids[0]);
  ASSERT_EQ(got.size(), want.size());
  for (size_t r = 0; r < 2; ++r) {
    float amax = 0;
    for (size_t i = 4 * r; i < 4 * r + 4; ++i) amax = std::max(amax, std::abs(want[i]));
    for (size_t i = 4 * r; i < 4 * r + 4; ++i) {
      EXPECT_LE(std::abs(got[i] - want[i]), amax / 127 / 2 * (1 + std::ldexp(1.0f, -20)));
    }
  }
  store.reset();
  for (auto other : {EmbeddingDType::F16, EmbeddingDType::BF16, EmbeddingDType::F32}) {
    expect_error([&] { Store::open(t.db, test_manifest(other)); },
                 {"embedding dtype int8, not " + std::string(embedding_dtype_name(other)), t.db});
  }
  // An fp16 store refuses int8 writers.
  TempDir t2;
  { Store::open(t2.db, test_manifest(EmbeddingDType::F16)); }
  expect_error([&] { Store::open(t2.db, test_manifest(EmbeddingDType::I8)); },
               {"embedding dtype fp16, not int8"});
}

TEST(Hostile, DamagedInt8EmbeddingRecordNamesThePassage) {
  TempDir t;
  uint64_t id = 0;
  {
    auto s = Store::open(t.db, test_manifest(EmbeddingDType::I8));
    id = s->put_document(make_doc("a", "/a", "A"), {make_passage("x y", 0, 3)})[0];
  }
  {
    // Truncate the stored blob by one byte, behind the store's back.
    rocksdb::Options opt;
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(opt, t.db, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(opt, t.db, descs, &handles, &db).ok());
    rocksdb::ColumnFamilyHandle* emb = nullptr;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "embeddings") emb = handles[i];
    }
    ASSERT_NE(emb, nullptr);
    std::string key(8, '\0');
    for (int i = 0; i < 8; ++i) key[size_t(7 - i)] = static_cast<char>((id >> (8 * i)) & 0xff);
    std::string v;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), emb, key, &v).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), emb, key, v.substr(0, v.size() - 1)).ok());
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    delete db;
  }
  auto s = Store::open(t.db, test_manifest(EmbeddingDType::I8));
  expect_error([&] { s->get_embeddings(id); },
               {t.db, "passage " + std::to_string(id), "embeddings", "does not match"});
}

TEST(StorageEstimate, HandComputed) {
  // 1 GB of text at 4 bytes/token in 128-token passages: ceil(1e9 / 512) = 1,953,125 passages;
  // x4 -> 32 vectors of 4096 bf16 values = 262,144 bytes each; 512,000,000,000 bytes.
  StorageEstimate e = estimate_embedding_storage(1000000000ull, 128, 4, 4096, EmbeddingDType::BF16);
  EXPECT_EQ(e.passages, 1953125);
  EXPECT_EQ(e.vectors_per_passage, 32);
  EXPECT_EQ(e.bytes_per_passage, 262144u);
  EXPECT_EQ(e.total_bytes, 512000000000ull);
  EXPECT_EQ(human_bytes(e.total_bytes), "512.0 GB");
  // KILT Wikipedia (24,853,658 passages) at x4 in bf16: the issue's "6 TB" (6.5e12 bytes).
  EXPECT_EQ(human_bytes(24853658ull * e.bytes_per_passage), "6.5 TB");
  // int8 at x16 with TinyLlama's width: 8 vectors of (2048 + 4) bytes; 1001 bytes round up.
  e = estimate_embedding_storage(1001, 128, 16, 2048, EmbeddingDType::I8);
  EXPECT_EQ(e.passages, 2);
  EXPECT_EQ(e.bytes_per_passage, 8u * 2052);
  EXPECT_EQ(e.total_bytes, 2u * 8 * 2052);
  // ceil(128 / 3) = 43 vectors.
  EXPECT_EQ(estimate_embedding_storage(0, 128, 3, 10, EmbeddingDType::F32).vectors_per_passage, 43);
  EXPECT_EQ(estimate_embedding_storage(0, 128, 3, 10, EmbeddingDType::F32).total_bytes, 0u);
  // Every document makes at least one passage: 1001 small files are 1001 passages.
  EXPECT_EQ(estimate_embedding_storage(40000, 128, 4, 64, EmbeddingDType::F16, 1001).passages,
            1001);
  EXPECT_EQ(estimate_embedding_storage(40000, 128, 4, 64, EmbeddingDType::F16, 10).passages, 79);
  EXPECT_EQ(human_bytes(999), "999 B");
  EXPECT_EQ(human_bytes(1500), "1.5 KB");
  expect_error([] { estimate_embedding_storage(1, 128, 0, 10, EmbeddingDType::F16); },
               {"positive"});
}

// ---------------------------------------------------------------------------------------
// store

TEST(Store, RoundTrips) {
  TempDir t;
  for (auto dt : {EmbeddingDType::F16, EmbeddingDType::BF16, EmbeddingDType::F32}) {
    const std::string path = t.db + embedding_dtype_name(dt);
    auto store = Store::open(path, test_manifest(dt));
    EXPECT_EQ(store->path(), path);
    DocumentRecord d = make_doc("doc/1", "/src/a.txt", "Title");
    d.meta_json = std::string("{\"bin\":\"\xFF\x00\"}", 12);  // any bytes survive
    std::vector<NewPassage> ps = {make_passage("First passage text", 0, 1),
                                  make_passage("Second, longer passage text here", 1, 2)};
    ps[1].embeddings = {1.0f, -2.5f, 61440.0f, 0.0f, 0.125f, -7.0f, 3.0f, 1024.0f};
    auto ids = store->put_document(d, ps);
    ASSERT_EQ(ids, (std::vector<uint64_t>{0, 1}));
    auto got = store->get_document("doc/1");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->id, d.id);
    EXPECT_EQ(got->source, d.source);
    EXPECT_EQ(got->title, d.title);
    EXPECT_EQ(got->content_hash, d.content_hash);
    EXPECT_EQ(got->meta_json, d.meta_json);
    EXPECT_EQ(got->passage_ids, ids);
    for (size_t i = 0; i < 2; ++i) {
      auto p = store->get_passage(ids[i]);
      ASSERT_TRUE(p);
      EXPECT_EQ(p->id, ids[i]);
      EXPECT_EQ(p->doc_id, "doc/1");
      EXPECT_EQ(p->index, ps[i].record.index);
      EXPECT_EQ(p->text, ps[i].record.text);
      EXPECT_EQ(p->char_begin, ps[i].record.char_begin);
      EXPECT_EQ(p->char_end, ps[i].record.char_end);
      auto e = store->get_embeddings(ids[i]);
      ASSERT_TRUE(e);
      ASSERT_EQ(e->size(), 8u);
      for (size_t j = 0; j < 8; ++j) EXPECT_EQ((*e)[j], ps[i].embeddings[j]) << j;  // exact
      EXPECT_EQ(store->get_retriever_vector(ids[i]), ps[i].retriever_vector);
    }
    EXPECT_FALSE(store->get_passage(99));
    EXPECT_FALSE(store->get_embeddings(99));
    EXPECT_FALSE(store->get_retriever_vector(99));
    EXPECT_FALSE(store->get_document("nope"));
    std::vector<uint64_t> seen;
    store->for_each_retriever_vector([&](uint64_t id, const std::vector<float>& v) {
      seen.push_back(id);
      EXPECT_EQ(v.size(), 3u);
    });
    EXPECT_EQ(seen, ids);
    StoreStats s = store->stats();
    EXPECT_EQ(s.documents, 1);
    EXPECT_EQ(s.passages, 2);
    EXPECT_EQ(s.embeddings, 2);
    EXPECT_EQ(s.bm25_documents, 2);
    EXPECT_EQ(s.total_terms, 3 + 5);
    EXPECT_EQ(s.next_passage_id, 2u);
    EXPECT_EQ(store->sequence(), 1u);
    EXPECT_EQ(store->manifest().embedding_dtype, dt);
  }
}

TEST(Store, ReplaceRemoveAndSources) {
  TempDir t;
  auto store = Store::open(t.db, test_manifest(EmbeddingDType::F16));
  auto v1 = store->put_document(make_doc("a", "/s/x", "v1"),
                                {make_passage("alpha oldword", 0, 1), make_passage("beta", 1, 2)});
  auto b = store->put_document(make_doc("b", "/s/x", "b"), {make_passage("gamma", 0, 3)});
  store->put_document(make_doc("c", "/s/xy", "c"), {make_passage("delta", 0, 4)});
  EXPECT_EQ(postings_of(*store, "oldword").size(), 1u);
  const uint64_t seq = store->sequence();
  auto v2 = store->put_document(make_doc("a", "/s/z", "v2"), {make_passage("alpha newword", 0, 5)});
  EXPECT_EQ(store->sequence(), seq + 1);
  ASSERT_EQ(v2.size(), 1u);
  for (uint64_t old : v1) {
    EXPECT_GT(v2[0], old);  // ids never reused
    EXPECT_FALSE(store->get_passage(old));
    EXPECT_FALSE(store->get_embeddings(old));
    EXPECT_FALSE(store->get_retriever_vector(old));
  }
  EXPECT_TRUE(postings_of(*store, "oldword").empty());
  EXPECT_TRUE(postings_of(*store, "beta").empty());
  EXPECT_EQ(postings_of(*store, "alpha"), v2);
  EXPECT_EQ(store->get_document("a")->title, "v2");
  EXPECT_EQ(store->get_document("a")->passage_ids, v2);
  // Sources: the replaced document moved from /s/x to /s/z; /s/x is not a prefix match of /s/xy.
  auto by_x = store->documents_by_source("/s/x");
  ASSERT_EQ(by_x.size(), 1u);
  EXPECT_EQ(by_x[0].id, "b");
  EXPECT_EQ(store->documents_by_source("/s/z").size(), 1u);
  EXPECT_EQ(store->documents_by_source("/s/xy").size(), 1u);
  EXPECT_TRUE(store->documents_by_source("/s").empty());
  // Remove.
  auto removed = store->remove_document("b");
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, b);
  EXPECT_FALSE(store->get_document("b"));
  EXPECT_FALSE(store->get_passage(b[0]));
  EXPECT_TRUE(postings_of(*store, "gamma").empty());
  EXPECT_TRUE(store->documents_by_source("/s/x").empty());
  EXPECT_FALSE(store->remove_document("b"));
  EXPECT_EQ(store->sequence(), seq + 2);
  // A document with no passages, and one whose passages have no terms/embeddings.
  EXPECT_TRUE(store->put_document(make_doc("empty", "/s/e", "e"), {}).empty());
  NewPassage bare;
  bare.record.text = "...";
  auto bare_ids = store->put_document(make_doc("bare", "/s/e", "bare"), {bare});
  EXPECT_FALSE(store->get_embeddings(bare_ids[0]));
  EXPECT_TRUE(store->get_passage(bare_ids[0]));
  StoreStats s = store->stats();
  EXPECT_EQ(s.documents, 4);
  EXPECT_EQ(s.passages, 3);
  EXPECT_EQ(s.embeddings, 2);
  EXPECT_EQ(s.bm25_documents, 2);
  store.reset();
  Scan scan = raw_scan(t.db);
  EXPECT_EQ(scan.documents, 4);
  EXPECT_EQ(scan.passages, 3);
  EXPECT_EQ(scan.embeddings, 2);
  EXPECT_EQ(scan.retriever, 2);
  EXPECT_EQ(scan.lengths, 2);
  EXPECT_EQ(scan.postings, 3);  // alpha newword delta
}

TEST(Store, BadPutsAreRejected) {
  TempDir t;
  auto store = Store::open(t.db, test_manifest());
  NewPassage p = make_passage("x y", 0, 1);
  p.embeddings.resize(5);
  expect_error([&] { store->put_document(make_doc("d", "s", "t"), {p}); },
               {"document 'd'", "5 embedding values", "2 x 4"});
  p = make_passage("x y", 0, 1);
  p.retriever_vector.resize(7);
  expect_error([&] { store->put_document(make_doc("d", "s", "t"), {p}); }, {"retriever"});
  p = make_passage("x y", 0, 1);
  p.terms.push_back(std::string("a\0b", 3));
  expect_error([&] { store->put_document(make_doc("d", "s", "t"), {p}); }, {"NUL"});
  expect_error([&] { store->put_document(make_doc("", "s", "t"), {}); }, {"id"});
  EXPECT_FALSE(store->get_document("d"));
  EXPECT_EQ(store->stats().documents, 0);
  EXPECT_EQ(store->sequence(), 0u);
}

TEST(Store, ManifestMismatchesAreErrors) {
  TempDir t;
  { Store::open(t.db, test_manifest(EmbeddingDType::BF16)); }
  struct Case {
    std::function<void(Manifest&)> change;
    std::vector<std::string> parts;
  };
  std::vector<Case> cases = {
      {[](Manifest& m) { m.compressor_fingerprint = "cmp-B"; },
       {"compressor cmp-A, not cmp-B", "incompatible", "--db"}},
      {[](Manifest& m) { m.compr_rate = 4; }, {"compression rate 16, not 4"}},
      {[](Manifest& m) { m.embeddings_per_passage = 3; }, {"embeddings per passage 2, not 3"}},
      {[](Manifest& m) { m.embedding_dim = 5; }, {"embedding dim 4, not 5"}},
      {[](Manifest& m) { m.embedding_dtype = EmbeddingDType::F16; },
       {"embedding dtype bf16, not fp16"}},
      {[](Manifest& m) { m.retriever_fingerprint = "ret-B"; }, {"retriever ret-A, not ret-B"}},
      {[](Manifest& m) { m.retriever_dim = 9; }, {"retriever dim 3, not 9"}},
      {[](Manifest& m) { m.schema_version = 2; }, {"schema version"}},
  };
  for (const auto& c : cases) {
    Manifest m = test_manifest(EmbeddingDType::BF16);
    c.change(m);
    std::vector<std::string> parts = c.parts;
    parts.push_back(t.db);
    expect_error([&] { Store::open(t.db, m); }, parts);
  }
  // Empty/zero fields are not checked and take the stored values.
  Manifest loose;
  loose.index_factory = "";
  auto store = Store::open(t.db, loose);
  EXPECT_EQ(store->manifest().compressor_fingerprint, "cmp-A");
  EXPECT_EQ(store->manifest().embedding_dim, 4);
  EXPECT_EQ(store->manifest().embedding_dtype, EmbeddingDType::BF16);
  EXPECT_EQ(store->manifest().retriever_dim, 3);
  store.reset();
  EXPECT_EQ(Store::open_existing(t.db)->manifest().retriever_fingerprint, "ret-A");
  EXPECT_NO_THROW(Store::open(t.db, test_manifest(EmbeddingDType::BF16)));
}

TEST(Store, ReopenPersistsEverything) {
  TempDir t;
  std::vector<uint64_t> ids;
  {
    auto store = Store::open(t.db, test_manifest(EmbeddingDType::F16));
    ids = store->put_document(make_doc("a", "/a", "A"), {make_passage("one two", 0, 1)});
    store->put_document(make_doc("b", "/b", "B"), {make_passage("three", 0, 2)});
    store->remove_document("b");
  }
  auto store = Store::open(t.db, test_manifest(EmbeddingDType::F16));
  EXPECT_EQ(store->sequence(), 3u);
  EXPECT_EQ(store->stats().next_passage_id, 2u);
  EXPECT_EQ(store->stats().documents, 1);
  EXPECT_EQ(store->get_document("a")->passage_ids, ids);
  EXPECT_EQ(store->get_passage(ids[0])->text, "one two");
  EXPECT_EQ(*store->get_embeddings(ids[0]), emb_values(1));
  EXPECT_EQ(postings_of(*store, "two").size(), 1u);
  auto more = store->put_document(make_doc("c", "/c", "C"), {make_passage("four", 0, 3)});
  EXPECT_EQ(more[0], 2u);  // continues after the removed passage's id
}

TEST(Store, StatsMatchFullScanAfterRandomOperations) {
  TempDir t;
  std::mt19937 rng(12345);
  {
    auto store = Store::open(t.db, test_manifest(EmbeddingDType::F16));
    const char* words[] = {"red", "green", "blue", "cat", "dog", "sun", "moon", "tree"};
    std::map<std::string, std::vector<uint64_t>> model;
    uint64_t expected_next = 0;
    for (int op = 0; op < 200; ++op) {
      const std::string id = "doc" + std::to_string(rng() % 25);
      if (rng() % 4 == 0) {
        auto r = store->remove_document(id);
        EXPECT_EQ(r.has_value(), model.count(id) == 1);
        model.erase(id);
      } else {
        std::vector<NewPassage> ps;
        const int np = static_cast<int>(rng() % 4);
        for (int i = 0; i < np; ++i) {
          std::string text;
          const int nw = static_cast<int>(rng() % 6);
          for (int w = 0; w < nw; ++w) text += std::string(words[rng() % 8]) + " ";
          ps.push_back(make_passage(text, i, rng()));
          if (rng() % 5 == 0) ps.back().embeddings.clear();
          if (rng() % 5 == 0) ps.back().retriever_vector.clear();
        }
        model[id] = store->put_document(make_doc(id, "/src/" + std::to_string(rng() % 5), "t"), ps);
        for (uint64_t pid : model[id]) EXPECT_EQ(pid, expected_next++);
      }
    }
    EXPECT_EQ(store->sequence() > 0, true);
    EXPECT_EQ(store->stats().documents, static_cast<int64_t>(model.size()));
  }
  Scan before = raw_scan(t.db);
  expect_stats_match_scan(t.db);
  // The same after a reopen through open() (counters persisted, not recomputed).
  { Store::open(t.db, test_manifest(EmbeddingDType::F16)); }
  expect_stats_match_scan(t.db);
  EXPECT_EQ(raw_scan(t.db).postings, before.postings);
}

// A long document written in parts: invisible (no document lists the staged passages) until
// committed; dropped by abort or, after a crash, by the next open; a retired old version
// is deleted in bounded batches. The counters always match a full scan.
TEST(Store, StagedDocumentsAreWholeOrAbsent) {
  TempDir t;
  auto parts = [](int n, int from, const std::string& word) {
    std::vector<NewPassage> ps;
    for (int i = 0; i < n; ++i)
      ps.push_back(make_passage(word + " part", from + i, uint64_t(from + i)));
    return ps;
  };
  {
    auto store = Store::open(t.db, test_manifest());
    store->begin_staging("long");
    EXPECT_THROW(store->begin_staging("other"), Error);
    const auto a = store->stage_passages(parts(3, 0, "quokka"));
    EXPECT_THROW(store->put_document(make_doc("x", "/x", "x"), parts(1, 0, "x")), Error);
    const auto b = store->stage_passages(parts(2, 3, "quokka"));
    EXPECT_EQ(a, (std::vector<uint64_t>{0, 1, 2}));
    EXPECT_EQ(b, (std::vector<uint64_t>{3, 4}));
    EXPECT_FALSE(store->get_document("long"));  // not visible yet
    EXPECT_EQ(store->stats().documents, 0);
    const auto ids = store->commit_staging(make_doc("long", "/long", "v1"));
    EXPECT_EQ(ids, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
    auto d = store->get_document("long");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->passage_ids, ids);
    EXPECT_EQ(store->stats().passages, 5);

    // A new version aborted: the old one stays, the parts are deleted.
    store->begin_staging("long");
    store->stage_passages(parts(4, 0, "wombat"));
    store->abort_staging();
    EXPECT_EQ(store->get_document("long")->passage_ids, ids);
    EXPECT_EQ(store->stats().passages, 5);
    EXPECT_TRUE(postings_of(*store, "wombat").empty());
    EXPECT_EQ(store->collect_garbage(), 0);

    // A crash in the middle of a new version (the store closed without commit or abort).
    store->begin_staging("long");
    store->stage_passages(parts(2, 0, "wombat"));
    EXPECT_EQ(store->stats().passages, 7);  // the counters include staged passages
  }
  { Store::open(t.db, test_manifest()); }  // recovers: the staged passages are deleted
  expect_stats_match_scan(t.db);
  {
    auto store = Store::open(t.db, test_manifest());
    EXPECT_EQ(store->stats().passages, 5);
    EXPECT_TRUE(postings_of(*store, "wombat").empty());
    EXPECT_EQ(store->get_document("long")->passage_ids.size(), 5u);
    // A staging can start again; with 300 passages the old version is retired on replace.
    store->begin_staging("long");
    store->stage_passages(parts(150, 0, "wombat"));
    store->stage_passages(parts(150, 150, "wombat"));
    const auto v2 = store->commit_staging(make_doc("long", "/long", "v2"));
    EXPECT_EQ(v2.size(), 300u);
    EXPECT_EQ(store->stats().passages, 300);
    EXPECT_TRUE(postings_of(*store, "quokka").empty());
    // Replaced by a short version: the 300 are retired, then deleted in batches.
    store->put_document(make_doc("long", "/long", "v3"), parts(1, 0, "numbat"));
    EXPECT_EQ(store->stats().passages, 1);
    EXPECT_EQ(store->stats().documents, 1);
  }
  expect_stats_match_scan(t.db);
}

// ---------------------------------------------------------------------------------------
// postings (what BM25 reads; the scoring is index/bm25, tested in test_index)

struct PostingRow {
  uint64_t id;
  uint32_t tf, length;
  bool operator==(const PostingRow& o) const {
    return id == o.id && tf == o.tf && length == o.length;
  }
};
std::ostream& operator<<(std::ostream& os, const PostingRow& r) {
  return os << "{" << r.id << ", tf " << r.tf << ", len " << r.length << "}";
}
std::vector<PostingRow> rows(const TermPostings& t) {
  std::vector<PostingRow> out;
  for (const Posting& p : t.postings) out.push_back({p.passage_id, p.tf, p.length});
  return out;
}

TEST(Postings, DfTfLengthsAndTotals) {
  TempDir t;
  auto store = Store::open(t.db, test_manifest());
  // Lengths 3, 5 and 3 (11 terms); a passage without terms has no postings and no length.
  const uint64_t a =
      store->put_document(make_doc("A", "/A", "A"), {make_passage("the cat sat", 0, 1)})[0];
  const uint64_t b = store->put_document(
      make_doc("B", "/B", "B"),
      {make_passage("The cat, cat ran away", 0, 2), make_passage(" ,. ", 1, 3)})[0];
  const uint64_t c =
      store->put_document(make_doc("C", "/C", "C"), {make_passage("a dog ran", 0, 4)})[0];
  const PostingsSnapshot snap =
      store->read_postings({"cat", "zebra", "", std::string("c\0t", 3), "ran", "cat"});
  EXPECT_EQ(snap.stats.documents, 3);
  EXPECT_EQ(snap.stats.passages, 4);
  EXPECT_EQ(snap.stats.bm25_documents, 3);
  EXPECT_EQ(snap.stats.total_terms, 11);
  EXPECT_EQ(snap.stats.next_passage_id, 4u);
  ASSERT_EQ(snap.terms.size(), 6u);  // one entry per term asked, in that order
  const std::vector<PostingRow> cat = {{a, 1, 3}, {b, 2, 5}};
  EXPECT_EQ(snap.terms[0].term, "cat");
  EXPECT_EQ(snap.terms[0].df, 2);
  EXPECT_EQ(rows(snap.terms[0]), cat);
  for (size_t i : {1, 2, 3}) {  // absent, empty, NUL byte
    EXPECT_EQ(snap.terms[i].df, 0) << i;
    EXPECT_TRUE(snap.terms[i].postings.empty()) << i;
  }
  EXPECT_EQ(snap.terms[4].df, 2);
  EXPECT_EQ(rows(snap.terms[4]), (std::vector<PostingRow>{{b, 1, 5}, {c, 1, 3}}));
  EXPECT_EQ(rows(snap.terms[5]), cat);
  // No terms: the counters alone.
  const PostingsSnapshot none = store->read_postings({});
  EXPECT_TRUE(none.terms.empty());
  EXPECT_EQ(none.stats.total_terms, 11);
  // Replaced and removed passages leave the postings.
  store->put_document(make_doc("B", "/B", "B"), {make_passage("cat", 0, 5)});
  store->remove_document("A");
  const PostingsSnapshot after = store->read_postings({"cat", "ran"});
  EXPECT_EQ(after.stats.bm25_documents, 2);
  EXPECT_EQ(after.stats.total_terms, 4);
  EXPECT_EQ(rows(after.terms[0]), (std::vector<PostingRow>{{4, 1, 1}}));
  EXPECT_EQ(rows(after.terms[1]), (std::vector<PostingRow>{{c, 1, 3}}));

  TempDir empty;
  auto fresh = Store::open(empty.db, test_manifest());
  const PostingsSnapshot nothing = fresh->read_postings({"anything"});
  EXPECT_EQ(nothing.stats.bm25_documents, 0);
  ASSERT_EQ(nothing.terms.size(), 1u);
  EXPECT_TRUE(nothing.terms[0].postings.empty());
}

// The counters and the postings come from one snapshot: while a writer replaces and removes
// documents whose every passage holds "common", each read finds df = N and the lengths
// summing to total_terms.
TEST(Postings, OneSnapshotWhileWriting) {
  TempDir t;
  auto store = Store::open(t.db, test_manifest());
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 400; ++i) {
      std::vector<NewPassage> ps;
      for (int p = 0; p <= i % 3; ++p) {
        std::string text = "common";
        for (int w = 0; w < (i + p) % 5; ++w) text += " w" + std::to_string(w);
        ps.push_back(make_passage(text, p, uint64_t(i)));
      }
      store->put_document(make_doc("d" + std::to_string(i % 7), "/d", "t"), std::move(ps));
      if (i % 11 == 10) store->remove_document("d" + std::to_string(i % 5));
    }
    done = true;
  });
  int64_t reads = 0, bad = 0;
  while (!done && bad == 0) {
    const PostingsSnapshot snap = store->read_postings({"common"});
    int64_t lengths = 0;
    for (const Posting& p : snap.terms.at(0).postings) lengths += p.length;
    if (snap.terms[0].df != snap.stats.bm25_documents || lengths != snap.stats.total_terms) {
      ADD_FAILURE() << "read " << reads << ": df " << snap.terms[0].df << ", N "
                    << snap.stats.bm25_documents << ", lengths " << lengths << ", total_terms "
                    << snap.stats.total_terms;
      ++bad;
    }
    ++reads;
  }
  writer.join();
  EXPECT_GT(reads, 0);
}

// ---------------------------------------------------------------------------------------
// hostile

TEST(Hostile, PathIsARegularFile) {
  TempDir t;
  const std::string file = t.dir + "/file";
  test::write_bytes(file, "not a store");
  expect_error([&] { Store::open(file, test_manifest()); }, {file, "not a directory"});
  expect_error([&] { Store::open_existing(file); }, {file, "not a directory"});
}

TEST(Hostile, NonStoreDirectoriesAndMissingStores) {
  TempDir t;
  expect_error([&] { Store::open_existing(t.dir + "/missing"); }, {"no cocom store"});
  test::write_bytes(t.dir + "/notes.txt", "hello");
  expect_error([&] { Store::open(t.dir, test_manifest()); }, {t.dir, "not empty"});
  // Nested directories are created.
  EXPECT_NO_THROW(Store::open(t.dir + "/x/y/db", test_manifest()));
}

TEST(Hostile, SecondOpenIsRefusedWhileLocked) {
  TempDir t;
  auto first = Store::open(t.db, test_manifest());
  expect_error([&] { Store::open(t.db, test_manifest()); }, {t.db, "another cocom process"});
  expect_error([&] { Store::open_existing(t.db); }, {"another cocom process"});
  first.reset();
  EXPECT_NO_THROW(Store::open(t.db, test_manifest()));
}

TEST(Hostile, CorruptedFilesAreClearErrors) {
  TempDir t;
  {
    auto s = Store::open(t.db, test_manifest());
    s->put_document(make_doc("a", "/a", "A"), {make_passage("x", 0, 1)});
  }
  // Garbage in CURRENT: RocksDB cannot find its MANIFEST.
  test::write_bytes(t.db + "/CURRENT", "MANIFEST-999999\n");
  try {
    Store::open(t.db, test_manifest());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(t.db), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("damaged"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------
// crash safety: a child process (this binary re-executed, so that it starts without the
// parent's RocksDB threads) applies a deterministic sequence of puts/removes and reports
// each completed operation on a pipe; it is SIGKILLed after a random short delay.

constexpr const char* kChildDirEnv = "COCOM_STORAGE_CRASH_DIR";
constexpr const char* kChildFdEnv = "COCOM_STORAGE_CRASH_FD";
constexpr const char* kChildStartEnv = "COCOM_STORAGE_CRASH_START";

bool crash_is_remove(uint64_t op) { return op % 5 == 4; }
// A remove targets the document that the previous op (a put) wrote, so every op changes the
// store (and its sequence).
std::string crash_doc(uint64_t op) {
  return "d" + std::to_string((crash_is_remove(op) ? op - 1 : op) % 6);
}
int crash_passages(uint64_t op) { return 1 + static_cast<int>(op % 3); }
std::string crash_text(uint64_t op, int p) {
  return "version " + std::to_string(op) + " uniq" + std::to_string(op) + "x" + std::to_string(p) +
         " common words";
}

void crash_apply(Store& store, uint64_t op) {
  if (crash_is_remove(op)) {
    store.remove_document(crash_doc(op));
    return;
  }
  std::vector<NewPassage> ps;
  for (int p = 0; p < crash_passages(op); ++p) ps.push_back(make_passage(crash_text(op, p), p, op));
  store.put_document(make_doc(crash_doc(op), "/crash", "v" + std::to_string(op)), ps);
}

// doc id -> op that last wrote it, after ops [0, n).
std::map<std::string, uint64_t> crash_expected(uint64_t n) {
  std::map<std::string, uint64_t> m;
  for (uint64_t op = 0; op < n; ++op) {
    if (crash_is_remove(op)) {
      m.erase(crash_doc(op));
    } else {
      m[crash_doc(op)] = op;
    }
  }
  return m;
}

// The crash test's child process: this same binary started with kChildDirEnv set and this
// test selected. tests/CMakeLists.txt keeps it out of ctest's list.
TEST(StorageCrashChild, Writer) {
  const char* dir = std::getenv(kChildDirEnv);
  ASSERT_NE(dir, nullptr) << "only runs as the child of Crash.SigkillLosesNothing";
  const int fd = std::atoi(std::getenv(kChildFdEnv));
  uint64_t op = std::strtoull(std::getenv(kChildStartEnv), nullptr, 10);
  auto store = Store::open(dir, test_manifest(EmbeddingDType::F16));
  for (int i = 0; i < 200000; ++i, ++op) {
    crash_apply(*store, op);
    const uint64_t done = op + 1;
    if (write(fd, &done, sizeof done) != sizeof done) _exit(3);
  }
  _exit(0);
}

// Reads what is available (after the child died: everything) and returns the last value.
uint64_t drain(int fd, uint64_t last, bool block_for_one) {
  uint64_t v;
  for (;;) {
    if (block_for_one) {
      pollfd pfd{fd, POLLIN, 0};
      if (poll(&pfd, 1, 20000) <= 0) return last;
    }
    const ssize_t n = read(fd, &v, sizeof v);
    if (n != sizeof v) return last;
    last = v;
    if (block_for_one) return last;
  }
}

void check_crash_state(const std::string& path, const std::map<std::string, uint64_t>& want) {
  auto store = Store::open(path, test_manifest(EmbeddingDType::F16));
  std::map<std::string, std::string> titles;
  store->for_each_document([&](const DocumentRecord& d) { titles[d.id] = d.title; });
  ASSERT_EQ(titles.size(), want.size());
  for (const auto& [id, op] : want) {
    auto d = store->get_document(id);
    ASSERT_TRUE(d) << id;
    EXPECT_EQ(d->title, "v" + std::to_string(op));
    ASSERT_EQ(static_cast<int>(d->passage_ids.size()), crash_passages(op));
    for (int p = 0; p < crash_passages(op); ++p) {
      const uint64_t pid = d->passage_ids[p];
      auto rec = store->get_passage(pid);
      ASSERT_TRUE(rec);
      EXPECT_EQ(rec->text, crash_text(op, p));
      EXPECT_EQ(store->get_embeddings(pid), emb_values(op));
      EXPECT_TRUE(store->get_retriever_vector(pid));
      EXPECT_EQ(postings_of(*store, "uniq" + std::to_string(op) + "x" + std::to_string(p)),
                std::vector<uint64_t>{pid});
    }
  }
  EXPECT_EQ(store->stats().documents, static_cast<int64_t>(want.size()));
}

TEST(Crash, SigkillLosesNothing) {
  TempDir t;
  { Store::open(t.db, test_manifest(EmbeddingDType::F16)); }
  std::mt19937 rng(99);
  uint64_t applied = 0;  // ops [0, applied) are in the store
  uint64_t total_reported = 0;
  for (int round = 0; round < 5; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    // Everything the child needs is prepared before fork().
    std::string exe = fs::read_symlink("/proc/self/exe").string();
    std::vector<std::string> args = {exe, "--gtest_filter=StorageCrashChild.Writer"};
    std::vector<std::string> env_strs;
    for (char** e = environ; *e; ++e) env_strs.emplace_back(*e);
    env_strs.push_back(std::string(kChildDirEnv) + "=" + t.db);
    env_strs.push_back(std::string(kChildFdEnv) + "=" + std::to_string(fds[1]));
    env_strs.push_back(std::string(kChildStartEnv) + "=" + std::to_string(applied));
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_strs) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int devnull = open("/dev/null", O_WRONLY);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      dup2(devnull, 1);
      execve(exe.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    close(devnull);
    close(fds[1]);
    // Wait for the first completed operation, then kill after a random 1..40 ms.
    uint64_t reported = drain(fds[0], applied, true);
    ASSERT_GT(reported, applied) << "the child reported nothing (round " << round << ")";
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + rng() % 40));
    kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    reported = drain(fds[0], reported, false);
    close(fds[0]);
    total_reported += reported - applied;
    // Every operation that returned is there; the one in flight may or may not be.
    auto base = crash_expected(reported);
    auto next = crash_expected(reported + 1);
    std::map<std::string, std::string> titles;
    {
      auto store = Store::open_existing(t.db);
      store->for_each_document([&](const DocumentRecord& d) { titles[d.id] = d.title; });
      EXPECT_GE(store->sequence(), reported);
    }
    auto as_titles = [](const std::map<std::string, uint64_t>& m) {
      std::map<std::string, std::string> r;
      for (const auto& [id, op] : m) r[id] = "v" + std::to_string(op);
      return r;
    };
    if (titles == as_titles(base)) {
      applied = reported;
    } else {
      ASSERT_EQ(titles, as_titles(next)) << "round " << round << ": state is neither after op "
                                         << reported << " nor after the next one";
      applied = reported + 1;
    }
    check_crash_state(t.db, crash_expected(applied));
    expect_stats_match_scan(t.db);
    {
      auto store = Store::open_existing(t.db);
      EXPECT_EQ(store->sequence(), applied);  // every op changes the sequence here
    }
  }
  EXPECT_GT(total_reported, 5u);
  std::printf("crash test: %llu operations reported over 5 kills\n",
              static_cast<unsigned long long>(total_reported));
}

}  // namespace
}  // namespace cocom::storage
