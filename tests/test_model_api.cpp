// The public Model (include/cocom/cocom.h): opened once, shared by Engines (one copy of the
// weights), and usable without a store (Compress, Generate); the library's own logger.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cocom/cocom.h"
#include "common/json_util.h"
#include "compress/compressor.h"
#include "engine/api_internal.h"
#include "engine/knowledge_store.h"
#include "generate/cocom_generate.h"
#include "model/fingerprint.h"
#include "storage/store.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

std::string fx() { return cocom::test::fixtures_dir(); }

bool has(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

std::shared_ptr<cocom::Model> open_model(const std::string& dir) {
  cocom::ModelOptions mo;
  mo.model_dir = dir;
  mo.threads = 2;
  std::shared_ptr<cocom::Model> m;
  cocom::Status s = cocom::Model::Open(mo, &m);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return m;
}

const std::vector<std::string> kPassages = {
    "The GNU General Public License guarantees users the freedom to run and share software.",
    "RocksDB is an embeddable key value store for fast storage, written in C++.",
    "Context embeddings replace the text of a passage in the decoder's prompt.",
};

}  // namespace

TEST(ModelApi, OpenDescribesTheCheckpoint) {
  auto m = open_model(fx() + "/cocom");
  ASSERT_TRUE(m);
  const cocom::ModelInfo& i = m->Info();
  EXPECT_EQ(i.model_dir, fx() + "/cocom");
  EXPECT_EQ(i.compression_rate, 4);  // config.json
  EXPECT_EQ(i.embedding_dim, 64);    // base_decoder/config.json hidden_size
  EXPECT_EQ(i.max_positions, 256);
  EXPECT_EQ(i.generation_top_k, 5);
  EXPECT_EQ(i.compressor, "decoder");
  EXPECT_EQ(i.fingerprint, cocom::model::checkpoint_fingerprint(fx() + "/cocom"));

  auto light = open_model(fx() + "/cocom-light");
  ASSERT_TRUE(light);
  EXPECT_EQ(light->Info().compressor, "bert");

  std::shared_ptr<cocom::Model> none;
  cocom::ModelOptions mo;
  mo.model_dir = fx() + "/no-such-model";
  cocom::Status s = cocom::Model::Open(mo, &none);
  EXPECT_EQ(s.code(), cocom::Status::Code::kNotFound) << s.ToString();
  EXPECT_TRUE(has(s.message(), "no-such-model")) << s.ToString();
  EXPECT_FALSE(none);
  // One parser for the format names (the command line's flags use it).
  EXPECT_EQ(cocom::ParseWeightFormat("int8g"), cocom::WeightFormat::kInt8g);
  EXPECT_EQ(cocom::ParseWeightFormat("bfloat16"), cocom::WeightFormat::kBf16);
  EXPECT_FALSE(cocom::ParseWeightFormat("int4"));
  EXPECT_STREQ(cocom::WeightFormatName(cocom::WeightFormat::kInt8), "int8");
  EXPECT_EQ(cocom::ParseEmbeddingDType("float16"), cocom::EmbeddingDType::kFp16);
  EXPECT_EQ(cocom::ParseEmbeddingDType("int8"), cocom::EmbeddingDType::kInt8);
  EXPECT_FALSE(cocom::ParseEmbeddingDType("fp8"));
  EXPECT_STREQ(cocom::EmbeddingDTypeName(cocom::EmbeddingDType::kBf16), "bf16");
  EXPECT_EQ(i.weights, cocom::WeightFormat::kFp32);
  EXPECT_EQ(cocom::Model::Open(mo, nullptr).code(), cocom::Status::Code::kInvalidArgument);
}

TEST(ModelApi, CompressIsTheCompressorsOutputPassageByPassage) {
  auto m = open_model(fx() + "/cocom");
  ASSERT_TRUE(m);
  auto e = m->Compress(kPassages);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->count, 3);
  EXPECT_EQ(e->vectors, 32);  // ceil(128 / 4)
  EXPECT_EQ(e->dim, 64);
  ASSERT_EQ(e->data.size(), size_t(3 * 32 * 64));
  // The same numbers as the compressor itself, and a passage alone gives its own rows.
  const auto& cm = *cocom::InternalAccess::cocom_model(*m);
  at::Tensor ref = cocom::compress::compress_passages(cm, kPassages, 128, 8);
  EXPECT_TRUE(at::equal(ref, at::from_blob(e->data.data(), {3, 32, 64}, at::kFloat)));
  auto one = m->Compress({kPassages[1]}, {128, 1});
  ASSERT_TRUE(one.ok());
  cocom::ContextEmbeddings mid = e->Slice(1, 1);
  ASSERT_EQ(one->data.size(), mid.data.size());
  double diff = 0;
  for (size_t j = 0; j < mid.data.size(); ++j) {
    diff = std::max(diff, double(std::fabs(one->data[j] - mid.data[j])));
  }
  EXPECT_LT(diff, 1e-5);

  // Bad arguments are named.
  auto bad = m->Compress({});
  EXPECT_EQ(bad.status().code(), cocom::Status::Code::kInvalidArgument);
  bad = m->Compress(kPassages, {4, 8});
  EXPECT_TRUE(has(bad.status().message(), "CompressOptions::context_max_length 4"))
      << bad.status().ToString();
  bad = m->Compress(kPassages, {128, 0});
  EXPECT_TRUE(has(bad.status().message(), "CompressOptions::batch_size 0"))
      << bad.status().ToString();
}

TEST(ModelApi, GenerateWithoutAStoreIsTheAnswerLoop) {
  auto m = open_model(fx() + "/cocom");
  ASSERT_TRUE(m);
  auto e = m->Compress(kPassages);
  ASSERT_TRUE(e.ok());
  cocom::GenerationOptions g;
  g.max_new_tokens = 10;
  const std::string q = "What does the GPL guarantee?";
  auto a = m->Generate(q, *e, g);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  // The internal answer loop on the same tensor gives the same text and prompt length.
  const auto& cm = *cocom::InternalAccess::cocom_model(*m);
  cocom::model::SamplingOptions so;
  so.max_new_tokens = 10;
  cocom::generate::AnswerResult ref = cocom::generate::answer(
      cm, q, at::from_blob(e->data.data(), {3, 32, 64}, at::kFloat).clone(), so);
  EXPECT_EQ(a->text, ref.text);
  EXPECT_EQ(a->timings.prompt_tokens, ref.generation.prompt_tokens);
  EXPECT_EQ(a->timings.generated_tokens, ref.generation.tokens.size(1));
  EXPECT_FALSE(a->cancelled);

  // Streaming: the pieces add up to the text; stopping after the first piece cancels.
  std::string streamed;
  auto s = m->Generate(q, *e, g, [&](const std::string& p) {
    streamed += p;
    return true;
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(streamed, s->text);
  EXPECT_EQ(s->text, a->text);
  int pieces = 0;
  auto c = m->Generate(q, *e, g, [&](const std::string&) { return ++pieces < 1; });
  ASSERT_TRUE(c.ok());
  if (!a->text.empty()) {
    EXPECT_TRUE(c->cancelled);
  }

  // The baseline reads the text; with no passages it answers closed-book.
  auto t = m->GenerateFromText(q, kPassages, g);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_GT(t->timings.prompt_tokens, a->timings.prompt_tokens);
  auto closed = m->GenerateFromText(q, {}, g);
  ASSERT_TRUE(closed.ok());
  EXPECT_LT(closed->timings.prompt_tokens, a->timings.prompt_tokens);

  // Embeddings that do not fit this model are refused with the reason.
  cocom::ContextEmbeddings wrong = *e;
  wrong.dim = 32;
  wrong.vectors = 64;
  auto r = m->Generate(q, wrong, g);
  EXPECT_EQ(r.status().code(), cocom::Status::Code::kInvalidArgument);
  EXPECT_TRUE(has(r.status().message(), "width 32")) << r.status().ToString();
  wrong = *e;
  wrong.data.pop_back();
  r = m->Generate(q, wrong, g);
  EXPECT_TRUE(has(r.status().message(), "values")) << r.status().ToString();
  wrong = *e;
  wrong.data[100] = std::numeric_limits<float>::quiet_NaN();
  r = m->Generate(q, wrong, g);
  EXPECT_TRUE(has(r.status().message(), "value 100 (passage 0) is not finite"))
      << r.status().ToString();
  auto ten = cocom::ContextEmbeddings::Concat({*e, *e, *e});
  ASSERT_TRUE(ten.ok());
  EXPECT_EQ(ten->count, 9);
  r = m->Generate(q, *ten, g);  // 9 x 33 slots > 256 positions
  EXPECT_TRUE(has(r.status().message(), "prompt positions")) << r.status().ToString();
  EXPECT_EQ(m->Generate(" ", *e, g).status().code(), cocom::Status::Code::kInvalidArgument);
  g.max_new_tokens = 0;
  EXPECT_TRUE(has(m->Generate(q, *e, g).status().message(), "max_new_tokens"));
  cocom::ContextEmbeddings other;
  other.count = 1;
  other.vectors = 2;
  other.dim = 3;
  other.data.assign(6, 0.f);
  EXPECT_FALSE(cocom::ContextEmbeddings::Concat({*e, other}).ok());
}

// Continuous batching (ModelOptions::max_batch): answers asked at once from several threads
// are decoded together and are the answers each gets alone; one cancelled answer stops alone.
TEST(ModelApi, ConcurrentAnswersAreBatchedAndUnchanged) {
  auto plain = open_model(fx() + "/cocom");
  ASSERT_TRUE(plain);
  cocom::ModelOptions mo;
  mo.model_dir = fx() + "/cocom";
  mo.threads = 2;
  mo.max_batch = 4;
  std::shared_ptr<cocom::Model> batched;
  ASSERT_TRUE(cocom::Model::Open(mo, &batched).ok());
  auto e = plain->Compress(kPassages);
  ASSERT_TRUE(e.ok());
  const std::vector<std::string> questions = {"What does the GPL guarantee?", "What is RocksDB?",
                                              "What replaces the text?",      "Who wrote RocksDB?",
                                              "Why compress passages?",       "Is the GPL free?"};
  cocom::GenerationOptions g;
  g.max_new_tokens = 12;
  std::vector<std::string> expected;
  for (size_t i = 0; i < questions.size(); ++i) {
    // Different passages (and so prompt lengths) per question.
    auto part = e->Slice(0, int64_t(1 + i % 3));
    auto a = plain->Generate(questions[i], part, g);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    expected.push_back(a->text);
  }
  // The first answer holds the scheduler at its first piece until every other question has
  // been asked, so the rest is decoded in batches.
  std::vector<std::string> got(questions.size());
  std::vector<bool> cancelled(questions.size());
  std::atomic<int> asked{0};
  std::vector<std::thread> threads;
  for (size_t i = 0; i < questions.size(); ++i) {
    threads.emplace_back([&, i] {
      auto part = e->Slice(0, int64_t(1 + i % 3));
      bool held = false;
      cocom::TokenCallback cb = [&](const std::string&) {
        if (i == 0 && !held) {
          held = true;
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
          while (asked.load() < int(questions.size()) && std::chrono::steady_clock::now() < until) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(200));  // their prompts queued
        }
        return i != 5;  // the last one stops at its first piece
      };
      asked.fetch_add(1);
      auto a = batched->Generate(questions[i], part, g, cb);
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      got[i] = a->text;
      cancelled[i] = a->cancelled;
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i + 1 < questions.size(); ++i) {
    EXPECT_EQ(got[i], expected[i]) << "question " << i;
    EXPECT_FALSE(cancelled[i]);
  }
  if (!expected[5].empty()) {
    EXPECT_TRUE(cancelled[5]);
    EXPECT_EQ(expected[5].rfind(got[5], 0), 0u) << "a cancelled answer is a prefix of the full one";
  }
  const cocom::ModelStats st = batched->Stats();
  EXPECT_EQ(st.max_batch, 4);
  EXPECT_EQ(st.answers, int64_t(questions.size()));
  ASSERT_EQ(st.steps_by_batch.size(), 5u);
  int64_t multi = 0, seqs = 0;
  for (size_t b = 1; b < st.steps_by_batch.size(); ++b) {
    seqs += st.steps_by_batch[b] * int64_t(b);
    if (b > 1) multi += st.steps_by_batch[b];
  }
  EXPECT_GT(multi, 0) << "no decoder step advanced two answers at once";
  EXPECT_EQ(seqs, st.sequences_stepped);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(plain->Stats().max_batch, 0);  // no scheduler without max_batch
}

TEST(ModelApi, TwoEnginesOnOneModelShareItsWeights) {
  const std::string dir = cocom::test::make_temp_dir("model-api");
  auto m = open_model(fx() + "/cocom");
  ASSERT_TRUE(m);
  std::vector<std::unique_ptr<cocom::Engine>> engines(2);
  for (int i = 0; i < 2; ++i) {
    cocom::Options o;
    o.db_path = dir + "/db" + std::to_string(i);
    o.generation.max_new_tokens = 8;
    cocom::Status s = cocom::Engine::Open(o, m, &engines[size_t(i)]);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto st = engines[size_t(i)]->IngestDocuments(
        {{"doc" + std::to_string(i), "Title", kPassages[size_t(i)], "mem"}});
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(st->added, 1);
  }
  for (auto& e : engines) {
    auto a =
        e->Ask("Which software does the store keep?", {1, cocom::SearchMode::kBm25, {}, {}, {}});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
  }
  // One copy of the weights: both engines answer with the Model's own CocomModel.
  auto shared = cocom::InternalAccess::cocom_model(*m);
  EXPECT_EQ(cocom::InternalAccess::cocom_model(*engines[0]).get(), shared.get());
  EXPECT_EQ(cocom::InternalAccess::cocom_model(*engines[1]).get(), shared.get());
  EXPECT_EQ(engines[0]->GetModel()->get(), m.get());
  // The stores remember the model: reopened alone, each loads it itself (a second copy).
  engines.clear();
  cocom::Options o;
  o.db_path = dir + "/db0";
  o.create_if_missing = false;
  std::unique_ptr<cocom::Engine> alone;
  ASSERT_TRUE(cocom::Engine::Open(o, &alone).ok());
  EXPECT_EQ(cocom::InternalAccess::cocom_model(*alone), nullptr);  // not loaded until needed
  auto own = alone->GetModel();
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  EXPECT_NE(cocom::InternalAccess::cocom_model(*alone).get(), shared.get());
  EXPECT_EQ((*own)->Info().fingerprint, m->Info().fingerprint);
  alone.reset();

  // A store built with one model refuses another, naming both.
  auto light = open_model(fx() + "/cocom-light");
  ASSERT_TRUE(light);
  cocom::Status s = cocom::Engine::Open(o, light, &alone);
  EXPECT_EQ(s.code(), cocom::Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(has(s.message(), m->Info().fingerprint)) << s.ToString();
  EXPECT_TRUE(has(s.message(), light->Info().fingerprint)) << s.ToString();
  // Options::model_dir must name the Model's directory, or be empty.
  o.model_dir = fx() + "/cocom-light";
  s = cocom::Engine::Open(o, m, &alone);
  EXPECT_EQ(s.code(), cocom::Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_TRUE(has(s.message(), "Options::model_dir")) << s.ToString();
  fs::remove_all(dir);
}

TEST(ModelApi, LoggingGoesToTheCallbackAndLeavesSpdlogAlone) {
  const std::string dir = cocom::test::make_temp_dir("model-log");
  spdlog::set_level(spdlog::level::critical);  // the host's choice
  std::mutex mu;
  std::vector<std::string> lines;
  cocom::Options o;
  o.db_path = dir + "/db";
  o.model_dir = "";  // the default model: creating the store says which at info level
  o.log_level = cocom::LogLevel::kInfo;
  o.log_callback = [&](cocom::LogLevel l, const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu);
    lines.push_back(std::to_string(int(l)) + " " + msg);
  };
  std::unique_ptr<cocom::Engine> e;
  ASSERT_FALSE(cocom::DefaultModelDir().empty());
  cocom::Status s = cocom::Engine::Open(o, &e);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(spdlog::get_level(), spdlog::level::critical);
  bool seen = false;
  for (const auto& l : lines)
    seen = seen || has(l, "1 creating " + dir + "/db with the default model");
  EXPECT_TRUE(seen) << (lines.empty() ? std::string("no lines") : lines[0]);
  // Back to the default (stderr, warnings) for the tests that follow in this process.
  e.reset();
  o.log_level = cocom::LogLevel::kWarn;
  o.log_callback = nullptr;
  ASSERT_TRUE(cocom::Engine::Open(o, &e).ok());
  const size_t before = lines.size();
  e.reset();
  ASSERT_TRUE(cocom::Engine::Open(o, &e).ok());
  EXPECT_EQ(lines.size(), before);
  fs::remove_all(dir);
}

// A store's settings live in its manifest: unset options take them, conflicting ones are
// refused with both values named, cocom-db.json is only a view.
TEST(StoreSettings, KeptInTheManifestAndConflictsRefused) {
  const std::string dir = cocom::test::make_temp_dir("store-settings");
  cocom::Options o;
  o.db_path = dir + "/db";
  o.model_dir = fx() + "/cocom";
  o.embedding_dtype = cocom::EmbeddingDType::kBf16;
  o.context_max_length = 64;
  o.chunk_overlap_tokens = 8;
  o.query_prefix = "query: ";
  std::unique_ptr<cocom::Engine> e;
  ASSERT_TRUE(cocom::Engine::Open(o, &e).ok());
  ASSERT_TRUE(e->IngestDocuments({{"d", "T", kPassages[0] + " " + kPassages[1], ""}}).ok());
  e.reset();

  // Nothing set: the stored values.
  cocom::Options plain;
  plain.db_path = dir + "/db";
  plain.create_if_missing = false;
  ASSERT_TRUE(cocom::Engine::Open(plain, &e).ok());
  auto st = e->Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->embedding_dtype, cocom::EmbeddingDType::kBf16);
  EXPECT_EQ(st->embeddings_per_passage, 16);  // ceil(64 / 4)
  cocom::Json j = cocom::parse_json_text(st->json, "stats");
  EXPECT_EQ(j.at("context_max_length").get<int64_t>(), 64);
  e.reset();

  // The view says the same, and editing it changes nothing.
  const std::string view = dir + "/db/cocom-db.json";
  cocom::Json v = cocom::read_json_file(view);
  EXPECT_EQ(v.at("context_max_length").get<int64_t>(), 64);
  EXPECT_EQ(v.at("chunk_overlap_tokens").get<int64_t>(), 8);
  EXPECT_EQ(v.at("query_prefix").get<std::string>(), "query: ");
  EXPECT_EQ(v.at("ingest_weights").get<std::string>(), "fp32");
  v["context_max_length"] = 999;
  cocom::write_json_file(view, v);
  ASSERT_TRUE(cocom::Engine::Open(plain, &e).ok());
  EXPECT_EQ(e->Stats()->embeddings_per_passage, 16);
  e.reset();

  // Asking for other values: refused, both named, nothing changed.
  struct Case {
    const char* field;
    std::function<void(cocom::Options&)> set;
    const char* requested;
    const char* stored;
  };
  const std::vector<Case> cases = {
      {"embedding_dtype",
       [](cocom::Options& x) { x.embedding_dtype = cocom::EmbeddingDType::kFp16; }, "'fp16'",
       "'bf16'"},
      {"context_max_length", [](cocom::Options& x) { x.context_max_length = 128; }, "128", "64"},
      {"chunk_overlap_tokens", [](cocom::Options& x) { x.chunk_overlap_tokens = 0; }, "0", "8"},
      {"query_prefix", [](cocom::Options& x) { x.query_prefix = ""; }, "''", "'query: '"},
      {"index_factory", [](cocom::Options& x) { x.index_factory = "HNSW32"; }, "'HNSW32'",
       "'Flat'"},
  };
  for (const auto& c : cases) {
    cocom::Options x = plain;
    c.set(x);
    cocom::Status s = cocom::Engine::Open(x, &e);
    EXPECT_EQ(s.code(), cocom::Status::Code::kInvalidArgument) << c.field << ": " << s.ToString();
    EXPECT_TRUE(has(s.message(), std::string("Options::") + c.field)) << s.ToString();
    EXPECT_TRUE(has(s.message(), std::string(c.requested) + " conflicts")) << s.ToString();
    EXPECT_TRUE(has(s.message(), std::string("keeps ") + c.stored)) << s.ToString();
  }
  // The same values as stored are fine.
  cocom::Options same = o;
  same.create_if_missing = false;
  ASSERT_TRUE(cocom::Engine::Open(same, &e).ok());
  e.reset();

  // Another weight format answers, but does not ingest (its embeddings would differ).
  cocom::Options q = plain;
  q.weights = cocom::WeightFormat::kInt8;
  ASSERT_TRUE(cocom::Engine::Open(q, &e).ok());
  auto a = e->Ask("What does the GPL guarantee?", {1, cocom::SearchMode::kBm25, {}, {}, {}});
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  auto in = e->IngestDocuments({{"d2", "", kPassages[2], ""}});
  EXPECT_EQ(in.status().code(), cocom::Status::Code::kInvalidArgument) << in.status().ToString();
  EXPECT_TRUE(has(in.status().message(), "made with fp32 decoder weights; ingesting with int8"))
      << in.status().ToString();
  EXPECT_EQ(e->Stats()->documents, 1);
  e.reset();
  fs::remove_all(dir);
}

// A store made before the manifest kept its settings: they are read once from cocom-db.json
// and written into the manifest.
TEST(StoreSettings, OlderStoresAreUpgradedFromTheirJsonFile) {
  const std::string dir = cocom::test::make_temp_dir("store-upgrade");
  const std::string db = dir + "/db";
  {
    cocom::storage::Manifest m;  // the identity an older engine wrote, no settings
    m.compressor_fingerprint = cocom::model::checkpoint_fingerprint(fx() + "/cocom");
    m.compr_rate = 4;
    m.embeddings_per_passage = 8;  // context length 32
    m.embedding_dim = 64;
    auto store = cocom::storage::Store::open(db, m);
    EXPECT_EQ(store->manifest().context_max_length, 0);
  }
  cocom::write_json_file(db + "/cocom-db.json", {{"model", fx() + "/cocom"},
                                                 {"index_factory", "Flat"},
                                                 {"embedding_dtype", "fp16"},
                                                 {"context_max_length", 32}});
  cocom::Options o;
  o.db_path = db;
  o.create_if_missing = false;
  o.load_model_eagerly = true;
  std::unique_ptr<cocom::Engine> e;
  cocom::Status s = cocom::Engine::Open(o, &e);
  ASSERT_TRUE(s.ok()) << s.ToString();
  e.reset();
  auto store = cocom::storage::Store::open(db, cocom::storage::Manifest{});
  const cocom::storage::Manifest m = store->manifest();
  EXPECT_EQ(m.context_max_length, 32);
  EXPECT_EQ(m.chunk_overlap_tokens, 0);
  EXPECT_TRUE(m.has_prefixes);
  EXPECT_EQ(m.model_dir, fs::absolute(fx() + "/cocom").lexically_normal().string());
  store.reset();
  fs::remove_all(dir);
}
