// Retrieval: the FAISS dense index (exact ranking, removal, persistence, training buffer,
// HNSW recall), reciprocal-rank fusion, BM25 (the analyzer, Okapi scores over a store's
// postings), and the sentence-transformers retriever on tiny random BERT models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "common/error.h"
#include "common/json_util.h"
#include "index/bm25.h"
#include "index/dense_index.h"
#include "index/retriever.h"
#include "model/bert.h"
#include "model/checkpoint_io.h"
#include "model/tokenizer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;
using namespace cocom::index;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Expects `fn` to throw cocom::Error whose message contains every piece of `needles`.
template <typename F>
void expect_error(F fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    for (const auto& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message '" << e.what() << "' lacks '" << n << "'";
    }
  }
}

// ids 10, 20, 30, 40 in 4 dimensions; for query q = (1, 0.2, 0, 0) the inner products are
// 1.0, 0.6, 0.2, -1.0.
std::unique_ptr<DenseIndex> small_flat() {
  auto idx = DenseIndex::create("Flat", 4);
  idx->add({10, 20, 30, 40}, {1, 0, 0, 0, 0.5f, 0.5f, 0, 0, 0, 1, 0, 0, -1, 0, 0, 0});
  return idx;
}
const std::vector<float> kQuery = {1.0f, 0.2f, 0, 0};

std::vector<uint64_t> ids_of(const std::vector<std::pair<uint64_t, float>>& r) {
  std::vector<uint64_t> out;
  for (auto& p : r) out.push_back(p.first);
  return out;
}

std::vector<float> random_unit_vectors(size_t n, int64_t dim, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n * static_cast<size_t>(dim));
  for (size_t i = 0; i < n; ++i) {
    double norm = 0;
    for (int64_t j = 0; j < dim; ++j) {
      float x = nd(gen);
      v[i * dim + j] = x;
      norm += double(x) * x;
    }
    for (int64_t j = 0; j < dim; ++j) v[i * dim + j] /= static_cast<float>(std::sqrt(norm));
  }
  return v;
}

std::vector<float> row(const std::vector<float>& v, size_t i, int64_t dim) {
  return std::vector<float>(v.begin() + i * dim, v.begin() + (i + 1) * dim);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DenseIndex

TEST(DenseIndex, FlatExactRankingAndScores) {
  auto idx = small_flat();
  EXPECT_EQ(idx->size(), 4);
  EXPECT_EQ(idx->dim(), 4);
  EXPECT_EQ(idx->factory(), "Flat");
  EXPECT_EQ(idx->min_training_vectors(), 0);
  EXPECT_EQ(idx->saved_sequence(), 0u);
  auto r = idx->search(kQuery, 3);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(ids_of(r), (std::vector<uint64_t>{10, 20, 30}));
  EXPECT_NEAR(r[0].second, 1.0f, 1e-6);
  EXPECT_NEAR(r[1].second, 0.6f, 1e-6);
  EXPECT_NEAR(r[2].second, 0.2f, 1e-6);
  // Fewer results than k, never -1 ids.
  auto all = idx->search(kQuery, 10);
  EXPECT_EQ(ids_of(all), (std::vector<uint64_t>{10, 20, 30, 40}));
  EXPECT_NEAR(all[3].second, -1.0f, 1e-6);
  EXPECT_TRUE(idx->search(kQuery, 0).empty());
  auto empty = DenseIndex::create("Flat", 4);
  EXPECT_TRUE(empty->search(kQuery, 5).empty());
}

TEST(DenseIndex, Remove) {
  auto idx = small_flat();
  idx->remove({20, 999});
  EXPECT_EQ(idx->size(), 3);
  EXPECT_EQ(ids_of(idx->search(kQuery, 10)), (std::vector<uint64_t>{10, 30, 40}));
  // The id can be added again after removal.
  idx->add({20}, {0.5f, 0.5f, 0, 0});
  EXPECT_EQ(ids_of(idx->search(kQuery, 2)), (std::vector<uint64_t>{10, 20}));
  idx->remove({10, 20, 30, 40});
  EXPECT_EQ(idx->size(), 0);
  EXPECT_TRUE(idx->search(kQuery, 3).empty());
}

TEST(DenseIndex, BadArguments) {
  auto idx = small_flat();
  expect_error([&] { idx->add({1}, {1, 2, 3}); }, {"4"});
  expect_error([&] { idx->add({10}, {1, 0, 0, 0}); }, {"10", "already"});
  expect_error([&] { idx->add({5, 5}, {1, 0, 0, 0, 1, 0, 0, 0}); }, {"5", "twice"});
  expect_error([&] { idx->add({7}, {NAN, 0, 0, 0}); }, {"NaN"});
  expect_error([&] { idx->search({1, 0}, 3); }, {"query"});
  EXPECT_EQ(idx->size(), 4);
}

TEST(DenseIndex, BadFactoryString) {
  expect_error([] { DenseIndex::create("NoSuchIndex42", 8); }, {"NoSuchIndex42"});
  expect_error([] { DenseIndex::create("Flat", 0); }, {"dimension"});
}

TEST(DenseIndex, SaveLoadRoundTrip) {
  std::string dir = test::make_temp_dir("dense");
  std::string path = dir + "/dense.idx";
  auto idx = small_flat();
  idx->save(path, 42);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  auto back = DenseIndex::load(path, 4);
  EXPECT_EQ(back->saved_sequence(), 42u);
  EXPECT_EQ(back->size(), 4);
  EXPECT_EQ(back->factory(), "Flat");
  EXPECT_EQ(idx->search(kQuery, 10), back->search(kQuery, 10));
  // Loaded indexes keep working: remove and add.
  back->remove({10});
  back->add({50}, {0, 0, 1, 0});
  EXPECT_EQ(ids_of(back->search(kQuery, 2)), (std::vector<uint64_t>{20, 30}));
  // Overwriting an existing file; the stale sequence is what the caller compares.
  back->save(path, 7);
  auto again = DenseIndex::load(path, 4);
  EXPECT_EQ(again->saved_sequence(), 7u);
  EXPECT_NE(again->saved_sequence(), 9u);  // a store at sequence 9 would rebuild
  EXPECT_EQ(again->search(kQuery, 10), back->search(kQuery, 10));
  fs::remove_all(dir);
}

TEST(DenseIndex, LoadErrors) {
  std::string dir = test::make_temp_dir("dense-bad");
  std::string path = dir + "/dense.idx";
  small_flat()->save(path, 1);
  expect_error([&] { DenseIndex::load(path, 8); }, {path, "dimension", "8", "4"});
  expect_error([&] { DenseIndex::load(dir + "/missing.idx", 4); }, {"missing.idx"});
  std::string bytes = read_all(path);
  // Truncations at several points.
  for (size_t cut : {size_t{0}, size_t{5}, size_t{15}, bytes.size() / 2, bytes.size() - 1}) {
    test::write_bytes(path, bytes.substr(0, cut));
    expect_error([&] { DenseIndex::load(path, 4); }, {path});
  }
  std::string bad = bytes;
  bad[0] = 'X';
  test::write_bytes(path, bad);
  expect_error([&] { DenseIndex::load(path, 4); }, {path, "magic"});
  bad = bytes;
  bad[bytes.size() - 20] ^= 0x5a;
  test::write_bytes(path, bad);
  expect_error([&] { DenseIndex::load(path, 4); }, {path});
  test::write_bytes(path, bytes + "junk");
  expect_error([&] { DenseIndex::load(path, 4); }, {path});
  fs::remove_all(dir);
}

TEST(DenseIndex, HnswRecallAgainstFlat) {
  const int64_t dim = 32;
  const size_t n = 2000, nq = 100, k = 10;
  auto data = random_unit_vectors(n, dim, 1234);
  auto queries = random_unit_vectors(nq, dim, 99);
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = 1000 + i * 3;
  auto flat = DenseIndex::create("Flat", dim);
  auto hnsw = DenseIndex::create("HNSW32", dim);
  flat->add(ids, data);
  hnsw->add(ids, data);
  size_t hits = 0;
  for (size_t q = 0; q < nq; ++q) {
    auto truth = flat->search(row(queries, q, dim), k);
    auto got = hnsw->search(row(queries, q, dim), k);
    ASSERT_EQ(got.size(), k);
    std::set<uint64_t> t;
    for (auto& p : truth) t.insert(p.first);
    for (auto& p : got) hits += t.count(p.first);
  }
  double recall = double(hits) / double(nq * k);
  EXPECT_GE(recall, 0.9) << "recall@10 " << recall;

  // Removal (FAISS has no HNSW remove_ids: rebuilt from the stored vectors).
  std::vector<uint64_t> gone(ids.begin(), ids.begin() + 100);
  hnsw->remove(gone);
  EXPECT_EQ(hnsw->size(), int64_t(n - 100));
  for (size_t i = 0; i < 150; i += 7) {
    auto r = hnsw->search(row(data, i, dim), 5);
    ASSERT_FALSE(r.empty());
    for (auto& p : r) EXPECT_FALSE(p.first >= 1000 && p.first < 1000 + 300) << p.first;
    if (i >= 100) {
      EXPECT_EQ(r[0].first, ids[i]);
    }
  }
  // Persistence of an HNSW index.
  std::string dir = test::make_temp_dir("dense-hnsw");
  hnsw->save(dir + "/h.idx", 3);
  auto back = DenseIndex::load(dir + "/h.idx", dim);
  for (size_t q = 0; q < 10; ++q) {
    EXPECT_EQ(back->search(row(queries, q, dim), k), hnsw->search(row(queries, q, dim), k));
  }
  fs::remove_all(dir);
}

TEST(DenseIndex, IvfBuffersUntilTrained) {
  const int64_t dim = 16;
  auto ivf = DenseIndex::create("IVF16,Flat", dim);
  EXPECT_EQ(ivf->min_training_vectors(), 39 * 16);
  auto flat = DenseIndex::create("Flat", dim);
  const size_t n = 1200;
  auto data = random_unit_vectors(n, dim, 7);
  std::vector<uint64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = i * 2 + 1;
  auto slice_ids = [&](size_t a, size_t b) {
    return std::vector<uint64_t>(ids.begin() + a, ids.begin() + b);
  };
  auto slice_vecs = [&](size_t a, size_t b) {
    return std::vector<float>(data.begin() + a * dim, data.begin() + b * dim);
  };
  // Before training: exact answers, identical to Flat.
  ivf->add(slice_ids(0, 300), slice_vecs(0, 300));
  flat->add(slice_ids(0, 300), slice_vecs(0, 300));
  EXPECT_EQ(ivf->size(), 300);
  EXPECT_EQ(ivf->min_training_vectors(), 39 * 16);
  auto queries = random_unit_vectors(20, dim, 8);
  for (size_t q = 0; q < 20; ++q) {
    auto a = ivf->search(row(queries, q, dim), 10);
    auto b = flat->search(row(queries, q, dim), 10);
    ASSERT_EQ(ids_of(a), ids_of(b));
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i].second, b[i].second, 1e-5);
  }
  // Buffer removal and persistence of the buffer.
  ivf->remove({ids[0], ids[1]});
  EXPECT_EQ(ivf->size(), 298);
  EXPECT_NE(ivf->search(row(data, 0, dim), 1)[0].first, ids[0]);
  std::string dir = test::make_temp_dir("dense-ivf");
  ivf->save(dir + "/ivf.idx", 11);
  auto back = DenseIndex::load(dir + "/ivf.idx", dim);
  EXPECT_EQ(back->size(), 298);
  EXPECT_EQ(back->min_training_vectors(), 39 * 16);
  EXPECT_EQ(back->search(row(queries, 0, dim), 10), ivf->search(row(queries, 0, dim), 10));

  // Enough vectors: trained, and exact-match queries still find the stored vector first.
  back->add(slice_ids(300, n), slice_vecs(300, n));
  EXPECT_EQ(back->min_training_vectors(), 0);
  EXPECT_EQ(back->size(), int64_t(n - 2));
  for (size_t i = 2; i < n; i += 37) {
    auto r = back->search(row(data, i, dim), 5);
    ASSERT_FALSE(r.empty());
    EXPECT_EQ(r[0].first, ids[i]);
    EXPECT_NEAR(r[0].second, 1.0f, 1e-5);
  }
  // Removal from a trained IVF index keeps the id mapping right.
  std::vector<uint64_t> gone;
  for (size_t i = 2; i < 400; i += 2) gone.push_back(ids[i]);
  back->remove(gone);
  EXPECT_EQ(back->size(), int64_t(n - 2 - gone.size()));
  std::set<uint64_t> gone_set(gone.begin(), gone.end());
  for (size_t i = 3; i < n; i += 29) {
    auto r = back->search(row(data, i, dim), 5);
    for (auto& p : r) EXPECT_EQ(gone_set.count(p.first), 0u) << p.first;
    if (!gone_set.count(ids[i])) {
      ASSERT_FALSE(r.empty());
      EXPECT_EQ(r[0].first, ids[i]);
    }
  }
  // Trained index round trip.
  back->save(dir + "/ivf.idx", 12);
  auto again = DenseIndex::load(dir + "/ivf.idx", dim);
  EXPECT_EQ(again->saved_sequence(), 12u);
  EXPECT_EQ(again->search(row(data, 501, dim), 5), back->search(row(data, 501, dim), 5));
  fs::remove_all(dir);
}

TEST(DenseIndex, TrainingRule) {
  EXPECT_EQ(DenseIndex::create("HNSW32", 16)->min_training_vectors(), 0);
  EXPECT_EQ(DenseIndex::create("IVF64,Flat", 16)->min_training_vectors(), 39 * 64);
  EXPECT_EQ(DenseIndex::create("PQ4", 16)->min_training_vectors(), 39 * 256);
  EXPECT_EQ(DenseIndex::create("IVF512,PQ4", 16)->min_training_vectors(), 39 * 512);
  EXPECT_EQ(DenseIndex::create("PCA8,Flat", 16)->min_training_vectors(), 16);
}

// ---------------------------------------------------------------------------------------------
// Reciprocal-rank fusion

TEST(ReciprocalRankFusion, HandComputed) {
  auto r = reciprocal_rank_fusion({{1, 2, 3}, {3, 1, 4}}, 10);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].first, 1u);
  EXPECT_DOUBLE_EQ(r[0].second, 1.0 / 61 + 1.0 / 62);
  EXPECT_EQ(r[1].first, 3u);
  EXPECT_DOUBLE_EQ(r[1].second, 1.0 / 63 + 1.0 / 61);
  EXPECT_EQ(r[2].first, 2u);
  EXPECT_DOUBLE_EQ(r[2].second, 1.0 / 62);
  EXPECT_EQ(r[3].first, 4u);
  EXPECT_DOUBLE_EQ(r[3].second, 1.0 / 63);
  // Top-k cut.
  auto top2 = reciprocal_rank_fusion({{1, 2, 3}, {3, 1, 4}}, 2);
  ASSERT_EQ(top2.size(), 2u);
  EXPECT_EQ(top2[1].first, 3u);
}

TEST(ReciprocalRankFusion, TiesBySmallerId) {
  auto r = reciprocal_rank_fusion({{9, 5}, {5, 9}}, 5);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].first, 5u);
  EXPECT_EQ(r[1].first, 9u);
  EXPECT_EQ(r[0].second, r[1].second);
  // Three lists with permuted ranks: scores identical to the bit.
  auto t = reciprocal_rank_fusion({{8, 4, 6}, {4, 6, 8}, {6, 8, 4}}, 3);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].first, 4u);
  EXPECT_EQ(t[1].first, 6u);
  EXPECT_EQ(t[2].first, 8u);
  EXPECT_EQ(t[0].second, t[2].second);
}

TEST(ReciprocalRankFusion, EdgeCases) {
  EXPECT_TRUE(reciprocal_rank_fusion({}, 5).empty());
  EXPECT_TRUE(reciprocal_rank_fusion({{1, 2}}, 0).empty());
  auto r = reciprocal_rank_fusion({{7, 3}}, 5, 0.0);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_DOUBLE_EQ(r[0].second, 1.0);
  EXPECT_DOUBLE_EQ(r[1].second, 0.5);
  // A document listed twice in one list counts once, at its best rank.
  auto d = reciprocal_rank_fusion({{2, 2, 1}}, 5);
  EXPECT_DOUBLE_EQ(d[0].second, 1.0 / 61);
  EXPECT_DOUBLE_EQ(d[1].second, 1.0 / 63);
  expect_error([] { reciprocal_rank_fusion({{1}}, 1, -1.0); }, {"k0"});
}

// ---------------------------------------------------------------------------------------------
// BM25: the analyzer, and Okapi scoring over a store's postings

TEST(Analyze, NfkcCasefoldAndWordRuns) {
  EXPECT_EQ(analyze("Hello, WORLD! 42nd"), (std::vector<std::string>{"hello", "world", "42nd"}));
  EXPECT_EQ(analyze("\xEF\xAC\x81ne"), (std::vector<std::string>{"fine"}));  // U+FB01 ligature
  EXPECT_EQ(analyze("Stra\xC3\x9F"
                    "e"),
            (std::vector<std::string>{"strasse"}));                                      // ß
  EXPECT_EQ(analyze("\xEF\xBC\xA6\xEF\xBD\x95ll"), (std::vector<std::string>{"full"}));  // Ｆｕ
  EXPECT_EQ(analyze("caf\x65\xCC\x81 x"), (std::vector<std::string>{"caf\xC3\xA9", "x"}));
  EXPECT_EQ(analyze("a\xFF"
                    "b"),
            (std::vector<std::string>{"a", "b"}));  // invalid UTF-8
  EXPECT_TRUE(analyze("").empty());
  EXPECT_TRUE(analyze(" ,.;- \n").empty());
  EXPECT_EQ(analyze(std::string("a\0b", 3)), (std::vector<std::string>{"a", "b"}));
}

namespace {

struct TempStore {
  std::string dir = test::make_temp_dir("bm25");
  std::unique_ptr<storage::Store> store;
  TempStore() {
    storage::Manifest m;
    m.compressor_fingerprint = "cmp-A";
    m.compr_rate = 16;
    m.embeddings_per_passage = 1;
    m.embedding_dim = 2;
    m.embedding_dtype = storage::EmbeddingDType::F32;
    store = storage::Store::open(dir + "/db", m);
  }
  ~TempStore() {
    store.reset();
    std::error_code ec;
    if (!::testing::Test::HasFailure()) fs::remove_all(dir, ec);
  }
  // A one-passage document; its terms from the analyzer.
  uint64_t put(const std::string& id, const std::string& text) {
    storage::DocumentRecord d;
    d.id = id;
    d.source = "/" + id;
    d.title = id;
    storage::NewPassage p;
    p.record.text = text;
    p.embeddings = {0.5f, -0.5f};
    p.terms = analyze(text);
    return store->put_document(d, {p}).at(0);
  }
};

// One BM25 term, written as index/bm25.cpp computes it (same operations, same order), so that
// scores can be compared to the bit. The volatile keeps std::log a call at run time, as in the
// scorer: the compiler folds log of a constant with its own (correctly rounded) arithmetic.
double bm25_term(double n, double df, double tf, double len, double avgdl, double k1 = 0.9,
                 double b = 0.4) {
  volatile double at_run_time = n;
  const double idf = std::log(1.0 + (at_run_time - df + 0.5) / (df + 0.5));
  return idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / avgdl));
}

}  // namespace

// The Snowball analyzer: Porter2 stems (hand-checked against the algorithm's rules), English
// stop words, accents of Latin letters folded but the marks of other scripts kept.
TEST(Analyze, SnowballEnglish) {
  const std::string en = "snowball:english";
  EXPECT_EQ(analyze("Disclaimer of Warranty", en),
            (std::vector<std::string>{"disclaim", "warranti"}));
  EXPECT_EQ(analyze("the warranties it disclaimed", en),
            (std::vector<std::string>{"warranti", "disclaim"}));
  EXPECT_EQ(analyze("Running connections", en), (std::vector<std::string>{"run", "connect"}));
  EXPECT_EQ(analyze("Caf\xC3\xA9 CAFE caf\x65\xCC\x81", en),
            (std::vector<std::string>{"cafe", "cafe", "cafe"}));
  // Devanagari vowel signs and viramas stay in their word.
  const std::string hindi =
      "\xE0\xA4\xB9\xE0\xA4\xBF\xE0\xA4\xA8\xE0\xA5\x8D\xE0\xA4\xA6\xE0\xA5\x80";
  EXPECT_EQ(analyze(hindi, en), (std::vector<std::string>{hindi}));
  EXPECT_TRUE(analyze("the and of", en).empty());
  // German: no English stop words, its own stems.
  EXPECT_EQ(analyze("the H\xC3\xA4user", "snowball:german"),
            (std::vector<std::string>{"the", "haus"}));
  // "words" and "" are the unstemmed analyzer.
  EXPECT_EQ(analyze("Running caf\xC3\xA9", "words"),
            (std::vector<std::string>{"running", "caf\xC3\xA9"}));
  EXPECT_EQ(analyze("Running", ""), std::vector<std::string>{"running"});
  EXPECT_THROW(analyze("x", "porter"), Error);
  EXPECT_EQ(cocom::index::check_analyzer("english"), en);
  EXPECT_EQ(cocom::index::check_analyzer("snowball:german"), "snowball:german");
  EXPECT_EQ(cocom::index::check_analyzer("words"), "words");
  try {
    cocom::index::check_analyzer("klingon");
    ADD_FAILURE() << "klingon accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("english"), std::string::npos) << e.what();
  }
}

TEST(Bm25, HandComputedScores) {
  TempStore t;
  // Three one-passage documents: lengths 3, 5 and 3; N = 3, avgdl = 11 / 3.
  const uint64_t a = t.put("A", "the cat sat");
  const uint64_t b = t.put("B", "The cat, cat ran away");
  const uint64_t c = t.put("C", "a dog ran");
  const storage::Store& store = *t.store;
  const double avgdl = 11.0 / 3.0;
  auto term = [&](double df, double tf, double len) { return bm25_term(3.0, df, tf, len, avgdl); };
  // Explicit numbers, as a cross-check of the formula (k1 = 0.9, b = 0.4).
  const double idf_df2 = std::log(1.0 + (3.0 - 2.0 + 0.5) / (2.0 + 0.5));  // cat, ran, the
  EXPECT_NEAR(idf_df2, 0.47000362924573558, 1e-12);
  EXPECT_NEAR(term(2, 1, 3), 0.47000362924573558 * 1.9 / (1 + 0.9 * (0.6 + 0.4 * 9 / 11.0)), 1e-12);

  // Scores are exact: the same operations in the same order as the scorer.
  auto r = bm25_search(store, {"cat"}, 10);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].first, b);  // tf 2 beats tf 1 despite the longer passage
  EXPECT_EQ(r[0].second, term(2, 2, 5));
  EXPECT_EQ(r[1].first, a);
  EXPECT_EQ(r[1].second, term(2, 1, 3));

  r = bm25_search(store, {"ran", "dog", "cat"}, 10);
  ASSERT_EQ(r.size(), 3u);
  // Terms are summed in byte order: cat, dog, ran.
  const double sa = term(2, 1, 3);
  const double sb = term(2, 2, 5) + term(2, 1, 5);
  const double sc = term(1, 1, 3) + term(2, 1, 3);
  std::vector<std::pair<uint64_t, double>> want = {{a, sa}, {b, sb}, {c, sc}};
  std::sort(want.begin(), want.end(), [](auto& x, auto& y) { return x.second > y.second; });
  EXPECT_EQ(r, want);
  // Each distinct query term counts once.
  EXPECT_EQ(bm25_search(store, {"cat", "cat", "ran", "dog", "dog"}, 10), want);
  // k truncates.
  auto top1 = bm25_search(store, {"cat", "ran", "dog"}, 1);
  ASSERT_EQ(top1.size(), 1u);
  EXPECT_EQ(top1[0], want[0]);
  // Absent terms, empty queries, k = 0.
  EXPECT_TRUE(bm25_search(store, {"zebra"}, 10).empty());
  EXPECT_EQ(bm25_search(store, {"zebra", "dog"}, 10).size(), 1u);
  EXPECT_TRUE(bm25_search(store, {}, 10).empty());
  EXPECT_TRUE(bm25_search(store, analyze(" ,. "), 10).empty());
  EXPECT_TRUE(bm25_search(store, {"", std::string("c\0t", 3)}, 10).empty());
  EXPECT_TRUE(bm25_search(store, {"cat"}, 0).empty());
  // Other k1/b.
  auto r2 = bm25_search(store, {"sat"}, 10, 1.2, 0.75);
  ASSERT_EQ(r2.size(), 1u);
  const double idf_df1 = std::log(1.0 + (3.0 - 1.0 + 0.5) / (1.0 + 0.5));
  EXPECT_NEAR(r2[0].second, idf_df1 * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 3 / avgdl)), 1e-12);
  EXPECT_EQ(r2[0].second, bm25_term(3.0, 1, 1, 3, avgdl, 1.2, 0.75));
  // Ties go to the smaller id.
  const uint64_t d1 = t.put("D1", "twin");
  const uint64_t d2 = t.put("D2", "twin");
  auto tie = bm25_search(store, {"twin"}, 10);
  ASSERT_EQ(tie.size(), 2u);
  EXPECT_EQ(tie[0].first, std::min(d1, d2));
  EXPECT_EQ(tie[0].second, tie[1].second);
}

TEST(Bm25, EmptyStore) {
  TempStore t;
  EXPECT_TRUE(bm25_search(*t.store, {"anything"}, 10).empty());
}

// The scorer alone, on postings made by hand (no store): the counters give N and avgdl.
TEST(Bm25, RankOnHandMadePostings) {
  storage::PostingsSnapshot snap;
  snap.stats.bm25_documents = 4;
  snap.stats.total_terms = 20;  // avgdl 5
  storage::TermPostings x;
  x.term = "x";
  x.df = 2;
  x.postings = {{7, 1, 5}, {9, 3, 10}};
  storage::TermPostings y;
  y.term = "y";
  y.df = 1;
  y.postings = {{9, 1, 10}};
  snap.terms = {x, y, storage::TermPostings{}};
  const double s7 = bm25_term(4, 2, 1, 5, 5.0),
               s9 = bm25_term(4, 2, 3, 10, 5.0) + bm25_term(4, 1, 1, 10, 5.0);
  EXPECT_NEAR(bm25_term(4, 2, 1, 5, 5.0), std::log(1 + 2.5 / 2.5) * 1.9 / 1.9, 1e-15);
  auto r = bm25_rank(snap, 10);
  EXPECT_EQ(r, (std::vector<std::pair<uint64_t, double>>{{9, s9}, {7, s7}}));
  EXPECT_EQ(bm25_rank(snap, 1).size(), 1u);
  EXPECT_TRUE(bm25_rank(snap, 0).empty());
  snap.stats.bm25_documents = 0;  // nothing indexed: nothing scored
  EXPECT_TRUE(bm25_rank(snap, 10).empty());
}

// ---------------------------------------------------------------------------------------------
// Retriever

namespace {

model::BertConfig tiny_bert() {
  model::BertConfig c;
  c.vocab_size = 1000;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 64;
  return c;
}

enum class Layout { None, Cls, Mean, ClsNoNorm, MeanNoNorm };

// A sentence-transformers directory with a random tiny BERT.
std::string make_retriever(const std::string& parent, const std::string& name, Layout layout,
                           uint64_t seed = 5, model::DType dtype = model::DType::F32) {
  std::string dir = parent + "/" + name;
  fs::create_directories(parent);
  model::write_random_bert(tiny_bert(), dir, seed, dtype);
  std::string tokdir = test::fixtures_dir() + "/bert/tokenizer";
  for (const char* f : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
    fs::copy_file(tokdir + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
  }
  if (layout == Layout::None) return dir;
  bool cls = layout == Layout::Cls || layout == Layout::ClsNoNorm;
  bool norm = layout == Layout::Cls || layout == Layout::Mean;
  Json modules = Json::array();
  modules.push_back({{"idx", 0},
                     {"name", "0"},
                     {"path", ""},
                     {"type", "sentence_transformers.models.Transformer"}});
  modules.push_back({{"idx", 1},
                     {"name", "1"},
                     {"path", "1_Pooling"},
                     {"type", "sentence_transformers.models.Pooling"}});
  if (norm) {
    modules.push_back({{"idx", 2},
                       {"name", "2"},
                       {"path", "2_Normalize"},
                       {"type", "sentence_transformers.models.Normalize"}});
  }
  write_json_file(dir + "/modules.json", modules);
  fs::create_directories(dir + "/1_Pooling");
  write_json_file(dir + "/1_Pooling/config.json", {{"word_embedding_dimension", 32},
                                                   {"pooling_mode_cls_token", cls},
                                                   {"pooling_mode_mean_tokens", !cls},
                                                   {"pooling_mode_max_tokens", false},
                                                   {"pooling_mode_mean_sqrt_len_tokens", false}});
  return dir;
}

const std::vector<std::string> kTexts = {
    "the quick brown fox",
    "a",
    "retrieval augmented generation with compressed contexts is fast",
    "hello world",
    "",
    "the the the the the the the the the the the the the the the the the the the the",
};

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// The last hidden state of one text, unpadded: [T, H].
at::Tensor hidden_of(const std::string& dir, const std::string& text) {
  auto tok = model::load_tokenizer(dir);
  auto bert = model::BertModel::load(dir);
  std::vector<int64_t> ids = tok->encode(text, true);
  at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
  return bert->forward(t, at::ones_like(t)).last_hidden_state[0];
}

}  // namespace

TEST(Retriever, ShapesAndNorms) {
  std::string tmp = test::make_temp_dir("retr");
  auto r = Retriever::load(make_retriever(tmp, "cls", Layout::Cls));
  EXPECT_EQ(r->dim(), 32);
  EXPECT_EQ(r->pooling(), Pooling::Cls);
  EXPECT_TRUE(r->normalize());
  at::Tensor e = r->embed_passages(kTexts);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{int64_t(kTexts.size()), 32}));
  EXPECT_EQ(e.scalar_type(), at::kFloat);
  EXPECT_TRUE(e.device().is_cpu());
  EXPECT_LT(max_abs(e.norm(2, {1}), at::ones({int64_t(kTexts.size())})), 1e-5);
  EXPECT_EQ(r->embed_queries({}).sizes(), (std::vector<int64_t>{0, 32}));

  auto m = Retriever::load(make_retriever(tmp, "meannonorm", Layout::MeanNoNorm));
  EXPECT_EQ(m->pooling(), Pooling::Mean);
  EXPECT_FALSE(m->normalize());
  at::Tensor n = m->embed_passages(kTexts).norm(2, {1});
  EXPECT_GT(max_abs(n, at::ones_like(n)), 1e-3);

  // No modules.json: CLS + normalize.
  auto d = Retriever::load(make_retriever(tmp, "plain", Layout::None));
  EXPECT_EQ(d->pooling(), Pooling::Cls);
  EXPECT_TRUE(d->normalize());
  fs::remove_all(tmp);
}

TEST(Retriever, MeanPoolingMatchesHandComputed) {
  std::string tmp = test::make_temp_dir("retr-mean");
  std::string dir = make_retriever(tmp, "mean", Layout::MeanNoNorm);
  auto r = Retriever::load(dir);
  at::Tensor e = r->embed_passages(kTexts);  // one padded batch
  for (size_t i = 0; i < kTexts.size(); ++i) {
    at::Tensor h = hidden_of(dir, kTexts[i]);
    EXPECT_LT(max_abs(e[int64_t(i)], h.mean(0)), 1e-5) << kTexts[i];
  }
  // Normalised mean = normalised hand mean.
  auto rn = Retriever::load(make_retriever(tmp, "meannorm", Layout::Mean));
  at::Tensor h = hidden_of(tmp + "/meannorm", kTexts[2]).mean(0);
  EXPECT_LT(max_abs(rn->embed_passages({kTexts[2]})[0], h / h.norm()), 1e-5);
  fs::remove_all(tmp);
}

TEST(Retriever, ClsIsRowZero) {
  std::string tmp = test::make_temp_dir("retr-cls");
  std::string dir = make_retriever(tmp, "cls", Layout::ClsNoNorm);
  auto r = Retriever::load(dir);
  at::Tensor e = r->embed_passages(kTexts);
  for (size_t i = 0; i < kTexts.size(); ++i) {
    EXPECT_LT(max_abs(e[int64_t(i)], hidden_of(dir, kTexts[i])[0]), 1e-5) << kTexts[i];
  }
  fs::remove_all(tmp);
}

TEST(Retriever, PrefixesAndTruncation) {
  std::string tmp = test::make_temp_dir("retr-prefix");
  std::string dir = make_retriever(tmp, "m", Layout::Mean);
  RetrieverOptions opt;
  opt.query_prefix = "query: ";
  opt.passage_prefix = "passage: ";
  auto r = Retriever::load(dir, opt);
  at::Tensor q = r->embed_queries({"hello world"});
  at::Tensor p = r->embed_passages({"hello world"});
  EXPECT_GT(max_abs(q, p), 1e-4);
  auto plain = Retriever::load(dir);
  EXPECT_LT(max_abs(plain->embed_queries({"hello world"}), plain->embed_passages({"hello world"})),
            1e-6);
  EXPECT_LT(
      max_abs(r->embed_queries({"hello world"}), plain->embed_queries({"query: hello world"})),
      1e-6);
  // Truncation: long texts are cut to max_length (capped by max_position_embeddings = 64).
  std::string longtext;
  for (int i = 0; i < 200; ++i) longtext += "the ";
  EXPECT_EQ(plain->embed_passages({longtext}).size(0), 1);
  RetrieverOptions shortopt;
  shortopt.max_length = 6;
  auto s = Retriever::load(dir, shortopt);
  // "the" x 4 fits in 6 tokens with [CLS] and [SEP]; more "the" changes nothing after the cut.
  EXPECT_LT(max_abs(s->embed_passages({"the the the the"}), s->embed_passages({longtext})), 1e-6);
  fs::remove_all(tmp);
}

TEST(Retriever, BatchSizeDoesNotChangeResults) {
  std::string tmp = test::make_temp_dir("retr-batch");
  for (Layout l : {Layout::Cls, Layout::MeanNoNorm}) {
    auto r = Retriever::load(make_retriever(tmp, l == Layout::Cls ? "c" : "m", l));
    std::vector<std::string> texts;
    for (int i = 0; i < 20; ++i)
      texts.push_back(kTexts[i % kTexts.size()] + " x" + std::to_string(i));
    at::Tensor a = r->embed_passages(texts, 1);
    at::Tensor b = r->embed_passages(texts, 16);
    at::Tensor c = r->embed_passages(texts, 7);
    EXPECT_LT(max_abs(a, b), 1e-5);
    EXPECT_LT(max_abs(a, c), 1e-5);
    expect_error([&] { r->embed_passages(texts, 0); }, {"batch_size"});
  }
  fs::remove_all(tmp);
}

TEST(Retriever, ConfigErrorsNameTheFile) {
  std::string tmp = test::make_temp_dir("retr-bad");
  std::string dir = make_retriever(tmp, "m", Layout::Mean);
  test::write_bytes(dir + "/modules.json", "[{\"type\": ");
  expect_error([&] { Retriever::load(dir); }, {"modules.json"});
  test::write_bytes(dir + "/modules.json", "{\"type\": \"x\"}");
  expect_error([&] { Retriever::load(dir); }, {"modules.json"});
  write_json_file(
      dir + "/modules.json",
      Json::array(
          {{{"idx", 0}, {"path", "2_Dense"}, {"type", "sentence_transformers.models.Dense"}}}));
  expect_error([&] { Retriever::load(dir); }, {"modules.json", "Dense"});
  write_json_file(
      dir + "/modules.json",
      Json::array(
          {{{"idx", 0}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}}}));
  expect_error([&] { Retriever::load(dir); }, {"modules.json", "Pooling"});

  std::string dir2 = make_retriever(tmp, "m2", Layout::Mean);
  write_json_file(dir2 + "/1_Pooling/config.json", {{"pooling_mode_max_tokens", true}});
  expect_error([&] { Retriever::load(dir2); },
               {"1_Pooling/config.json", "pooling_mode_max_tokens"});
  write_json_file(dir2 + "/1_Pooling/config.json",
                  {{"pooling_mode_cls_token", true}, {"pooling_mode_mean_tokens", true}});
  expect_error([&] { Retriever::load(dir2); }, {"1_Pooling/config.json"});
  write_json_file(dir2 + "/1_Pooling/config.json", Json::object());
  expect_error([&] { Retriever::load(dir2); }, {"1_Pooling/config.json"});
  test::write_bytes(dir2 + "/1_Pooling/config.json", "{oops");
  expect_error([&] { Retriever::load(dir2); }, {"1_Pooling/config.json"});
  fs::remove(dir2 + "/1_Pooling/config.json");
  expect_error([&] { Retriever::load(dir2); }, {"1_Pooling/config.json"});

  std::string dir3 = make_retriever(tmp, "m3", Layout::Cls);
  fs::remove(dir3 + "/vocab.txt");
  expect_error([&] { Retriever::load(dir3); }, {dir3});
  expect_error([&] { Retriever::load(tmp + "/nope"); }, {"nope"});
  fs::remove_all(tmp);
}

TEST(Retriever, FingerprintChangesWithWeights) {
  std::string tmp = test::make_temp_dir("retr-fp");
  std::string dir = make_retriever(tmp + "/a", "bge-tiny", Layout::Cls, 5);
  auto r1 = Retriever::load(dir);
  EXPECT_EQ(r1->fingerprint().rfind("bge-tiny:", 0), 0u) << r1->fingerprint();
  EXPECT_EQ(Retriever::load(dir + "/")->fingerprint(), r1->fingerprint());
  // Same name and shapes, other weights.
  std::string other = make_retriever(tmp + "/b", "bge-tiny", Layout::Cls, 6);
  EXPECT_NE(Retriever::load(other)->fingerprint(), r1->fingerprint());
  // Other dtype (header changes).
  std::string half = make_retriever(tmp + "/c", "bge-tiny", Layout::Cls, 5, model::DType::F16);
  EXPECT_NE(Retriever::load(half)->fingerprint(), r1->fingerprint());
  // Pooling settings are part of it.
  std::string mean = make_retriever(tmp + "/d", "bge-tiny", Layout::Mean, 5);
  EXPECT_NE(Retriever::load(mean)->fingerprint(), r1->fingerprint());
  // Rewriting the weights in place changes it too.
  model::write_random_bert(tiny_bert(), dir, 77, model::DType::F32);
  EXPECT_NE(Retriever::load(dir)->fingerprint(), r1->fingerprint());
  fs::remove_all(tmp);
}
