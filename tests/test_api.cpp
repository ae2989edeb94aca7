// The public C++ API (include/cocom/cocom.h) end to end on the tiny fixture checkpoint:
// option errors, ingestion (paths and in-memory documents), search, removal, answers checked
// against the internal pipeline, streaming and cancellation, the uncompressed baseline,
// statistics, concurrent readers during ingestion, and `cocom ask`.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "cocom/cocom.h"
#include "common/json_util.h"
#include "common/utf8.h"
#include "engine/knowledge_store.h"
#include "generate/cocom_generate.h"
#include "generate/stream_decoder.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using cocom::Json;
using cocom::parse_json_text;
using cocom::read_json_file;
using cocom::write_json_file;

namespace {

std::string fx() { return cocom::test::fixtures_dir(); }
std::string model_dir() { return fx() + "/cocom"; }

bool has(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// A small corpus with distinctive words per document.
std::string make_corpus(const std::string& dir) {
  std::string c = dir + "/corpus";
  fs::create_directories(c + "/notes");
  cocom::test::write_bytes(
      c + "/gpl.txt",
      "The GNU General Public License is a free software license. It guarantees "
      "end users the freedom to run, study, share and modify the software.");
  cocom::test::write_bytes(c + "/notes/apache.md",
                           "# Apache License\n\nThe Apache License requires preservation of the "
                           "copyright notice and disclaimer. It is a permissive license.\n");
  cocom::test::write_bytes(
      c + "/faq.jsonl",
      "{\"id\": \"faq-1\", \"title\": \"Warranty\", \"text\": \"The program is "
      "distributed without any warranty.\"}\n"
      "{\"id\": \"faq-2\", \"title\": \"Patents\", \"text\": \"Each contributor "
      "grants a patent license to every recipient.\"}\n");
  return c;
}

// A tiny random sentence-transformers retriever, written by `cocom model init`.
std::string make_retriever(const std::string& dir) {
  std::string r = dir + "/retriever";
  cocom::test::write_bytes(dir + "/bert.json",
                           R"({"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64,
                               "num_hidden_layers": 1, "num_attention_heads": 4,
                               "max_position_embeddings": 256})");
  std::string out;
  int rc =
      cocom::test::run_command(cocom::test::cocom_binary() + " model init --arch bert --config " +
                                   dir + "/bert.json --out " + r + " --dtype fp32",
                               &out);
  EXPECT_EQ(rc, 0) << out;
  for (const char* f : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
    fs::copy_file(fx() + "/bert/tokenizer/" + f, r + "/" + f);
  }
  return r;  // no modules.json: CLS pooling and normalisation
}

cocom::Options base_options(const std::string& db) {
  cocom::Options o;
  o.db_path = db;
  o.model_dir = model_dir();
  o.threads = 2;
  o.generation.max_new_tokens = 12;
  return o;
}

std::unique_ptr<cocom::Engine> open_ok(const cocom::Options& o) {
  std::unique_ptr<cocom::Engine> e;
  cocom::Status s = cocom::Engine::Open(o, &e);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return e;
}

cocom::Status open_status(const cocom::Options& o) {
  std::unique_ptr<cocom::Engine> e;
  cocom::Status s = cocom::Engine::Open(o, &e);
  EXPECT_EQ(e == nullptr, !s.ok());
  return s;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t j = 1; j < n; ++j) {
      if ((static_cast<unsigned char>(s[i + j]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

std::vector<uint64_t> ids_of(const std::vector<cocom::Passage>& ps) {
  std::vector<uint64_t> ids;
  for (const auto& p : ps) ids.push_back(p.id);
  return ids;
}

}  // namespace

TEST(ApiStatus, ToStringVersionAndBadResultAccess) {
  EXPECT_EQ(cocom::Status::OK().ToString(), "OK");
  EXPECT_EQ(cocom::Status::NotFound("model directory /m has no config.json").ToString(),
            "NotFound: model directory /m has no config.json");
  EXPECT_EQ(cocom::Status::InvalidArgument("x").ToString(), "InvalidArgument: x");
  EXPECT_EQ(cocom::Status::FailedPrecondition("y").ToString(), "FailedPrecondition: y");
  EXPECT_STREQ(cocom::Version(), "0.1.0");
  cocom::Result<int> good(7);
  EXPECT_TRUE(good.ok());
  EXPECT_EQ(*good, 7);
  cocom::Result<int> from_ok_status{cocom::Status::OK()};
  EXPECT_FALSE(from_ok_status.ok());
  EXPECT_EQ(from_ok_status.status().code(), cocom::Status::Code::kInternal);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        cocom::Result<int> bad(cocom::Status::NotFound("no such passage"));
        (void)bad.value();
      },
      "NotFound: no such passage");
}

TEST(ApiStream, PiecesAreWholeCharactersAndAddUpToTheDecoding) {
  EXPECT_EQ(cocom::utf8::complete_prefix_length("abc"), 3u);
  EXPECT_EQ(cocom::utf8::complete_prefix_length("ab\xC3"), 2u);
  EXPECT_EQ(cocom::utf8::complete_prefix_length("ab\xC3\xA9"), 4u);
  EXPECT_EQ(cocom::utf8::complete_prefix_length("\xE6\x97"), 0u);
  EXPECT_EQ(cocom::utf8::complete_prefix_length("x\xF0\x9F\x98"), 1u);
  EXPECT_EQ(cocom::utf8::complete_prefix_length("x\xF0\x9F\x98\x80"), 5u);

  // The fixture tokenizer spells these characters with byte-fallback tokens (<0xE6> <0x97>
  // <0xA5>), so most ids alone decode to an incomplete character.
  auto tok = cocom::model::load_tokenizer(model_dir() + "/base_decoder");
  const std::string text = "Caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xE2\x80\x9Cx\xE2\x80\x9D done";
  std::vector<int64_t> ids = tok->encode(text, false);
  ids.push_back(tok->eos_id());  // special tokens are skipped
  const std::string full = tok->decode(ids, true);
  EXPECT_EQ(full, text);
  cocom::generate::StreamDecoder sd(*tok);
  std::string joined;
  size_t pieces = 0;
  for (int64_t id : ids) {
    std::string p = sd.push(id);
    if (p.empty()) continue;
    ++pieces;
    EXPECT_TRUE(valid_utf8(p)) << p;
    EXPECT_EQ(p.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD in piece " << pieces;
    joined += p;
    EXPECT_EQ(full.rfind(joined, 0), 0u) << joined;
  }
  joined += sd.finish(full);
  EXPECT_EQ(joined, full);
  EXPECT_GE(pieces, 5u);
  EXPECT_LT(pieces, ids.size());  // the byte tokens of one character come out as one piece
}

TEST(ApiOpen, EmptyModelDirUsesTheDefaultModel) {
  std::string dir = cocom::test::make_temp_dir("api-default");
  cocom::test::ScopedEnv env("COCOM_DEFAULT_MODEL", model_dir().c_str());
  EXPECT_EQ(cocom::DefaultModelDir(), model_dir());
  cocom::Options o = base_options(dir + "/db");
  o.model_dir.clear();
  auto e = open_ok(o);
  ASSERT_TRUE(e);
  auto st = e->Stats();
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(fs::path(st.value().model_dir).lexically_normal(),
            fs::absolute(model_dir()).lexically_normal());
  // A default that is not a checkpoint is not used.
  cocom::test::ScopedEnv bad("COCOM_DEFAULT_MODEL", dir.c_str());
  EXPECT_EQ(cocom::DefaultModelDir(), "");
}

TEST(ApiOpen, BadOptionsAreNamed) {
  std::string dir = cocom::test::make_temp_dir("api-open");
  const std::string db = dir + "/db";
  struct Case {
    const char* name;
    std::function<void(cocom::Options&)> set;
    cocom::Status::Code code;
  };
  const std::vector<Case> cases = {
      {"db_path", [](cocom::Options& o) { o.db_path.clear(); },
       cocom::Status::Code::kInvalidArgument},
      {"top_k", [](cocom::Options& o) { o.top_k = 0; }, cocom::Status::Code::kInvalidArgument},
      {"device", [](cocom::Options& o) { o.device = "tpu"; },
       cocom::Status::Code::kInvalidArgument},
      {"threads", [](cocom::Options& o) { o.threads = -2; }, cocom::Status::Code::kInvalidArgument},
      {"context_max_length", [](cocom::Options& o) { o.context_max_length = 0; },
       cocom::Status::Code::kInvalidArgument},
      {"chunk_overlap_tokens", [](cocom::Options& o) { o.chunk_overlap_tokens = -1; },
       cocom::Status::Code::kInvalidArgument},
      {"index_factory", [](cocom::Options& o) { o.index_factory = ""; },
       cocom::Status::Code::kInvalidArgument},
      {"max_new_tokens", [](cocom::Options& o) { o.generation.max_new_tokens = 0; },
       cocom::Status::Code::kInvalidArgument},
      {"temperature", [](cocom::Options& o) { o.generation.temperature = -1; },
       cocom::Status::Code::kInvalidArgument},
      {"top_p", [](cocom::Options& o) { o.generation.top_p = 1.5; },
       cocom::Status::Code::kInvalidArgument},
      {"model_dir", [](cocom::Options& o) { o.model_dir.clear(); },
       cocom::Status::Code::kInvalidArgument},
      {"model_dir", [&](cocom::Options& o) { o.model_dir = dir + "/no-such-model"; },
       cocom::Status::Code::kNotFound},
      {"retriever_dir", [&](cocom::Options& o) { o.retriever_dir = dir + "/no-such-retriever"; },
       cocom::Status::Code::kNotFound},
      {"create_if_missing", [](cocom::Options& o) { o.create_if_missing = false; },
       cocom::Status::Code::kNotFound},
  };
  // No default model either (models/default exists in a checkout): the empty model_dir is an
  // error naming it.
  cocom::test::ScopedEnv no_default("COCOM_DEFAULT_MODEL", (dir + "/no-default-model").c_str());
  for (const auto& c : cases) {
    cocom::Options o = base_options(db);
    c.set(o);
    cocom::Status s = open_status(o);
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.ToString();
    EXPECT_TRUE(has(s.message(), c.name)) << c.name << ": " << s.ToString();
  }
  // None of the failures created a store.
  EXPECT_FALSE(fs::exists(db + "/cocom-db.json"));

  // A store without a dense retriever cannot be opened for dense search.
  {
    auto e = open_ok(base_options(db));
    ASSERT_TRUE(e);
  }
  cocom::Options o = base_options(db);
  o.search_mode = cocom::SearchMode::kDense;
  cocom::Status s = open_status(o);
  EXPECT_EQ(s.code(), cocom::Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(has(s.message(), "retriever")) << s.ToString();
  // A store that exists opens with create_if_missing = false and without naming the model.
  o = base_options(db);
  o.create_if_missing = false;
  o.model_dir.clear();
  EXPECT_TRUE(open_status(o).ok());
  fs::remove_all(dir);
}

// A store at DIR/db made with a copy of the fixture model placed at `model`, holding the
// corpus of make_corpus(DIR) (DIR/corpus). Returns the options that opened it.
cocom::Options store_with_model_copy(const std::string& dir, const std::string& model) {
  fs::create_directories(fs::path(model).parent_path());
  fs::copy(model_dir(), model, fs::copy_options::recursive);
  const std::string corpus = make_corpus(dir);
  cocom::Options o = base_options(dir + "/db");
  o.model_dir = model;
  auto e = open_ok(o);
  EXPECT_TRUE(e);
  if (!e) return o;
  auto st = e->Ingest({corpus});
  EXPECT_TRUE(st.ok()) << st.status().ToString();
  if (st.ok()) {
    EXPECT_EQ(st->added, 4);
  }
  return o;
}

TEST(ApiOpen, StoreWhoseModelMovedSearchesButCannotAnswer) {
  std::string dir = cocom::test::make_temp_dir("api-moved");
  const std::string model = dir + "/model";
  cocom::Options o = store_with_model_copy(dir, model);
  fs::rename(model, dir + "/model-moved");
  o.model_dir.clear();  // the store remembers the old place
  auto e = open_ok(o);
  ASSERT_TRUE(e);
  auto hits = e->Search("warranty");
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  EXPECT_FALSE(hits->empty());
  auto a = e->Ask("What about the warranty?");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), cocom::Status::Code::kNotFound) << a.status().ToString();
  EXPECT_TRUE(has(a.status().message(), model)) << a.status().ToString();
  auto stats = e->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_FALSE(stats->model_loaded);

  // Another checkpoint than the one the store was built with is refused.
  e.reset();
  const std::string other = dir + "/other";
  fs::copy(dir + "/model-moved", other, fs::copy_options::recursive);
  Json cfg = read_json_file(other + "/config.json");
  cfg["generation_top_k"] = 3;  // a different config.json: a different fingerprint
  write_json_file(other + "/config.json", cfg);
  o.model_dir = other;
  cocom::Status s = open_status(o);
  EXPECT_EQ(s.code(), cocom::Status::Code::kFailedPrecondition) << s.ToString();
  fs::remove_all(dir);
}

// One store shared by the tests below (ingesting is the slow part).
class ApiStore : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = cocom::test::make_temp_dir("api");
    corpus_ = make_corpus(dir_);
    db_ = dir_ + "/db";
    auto e = open_ok(base_options(db_));
    ASSERT_TRUE(e);
    auto st = e->Ingest({corpus_});
    ASSERT_TRUE(st.ok()) << st.status().ToString();
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string dir_, corpus_, db_;
};
std::string ApiStore::dir_, ApiStore::corpus_, ApiStore::db_;

TEST_F(ApiStore, IngestSearchRemoveAndStats) {
  auto e = open_ok(base_options(db_));
  ASSERT_TRUE(e);
  // Re-ingesting the same files changes nothing; a missing path is NotFound.
  auto st = e->Ingest({corpus_});
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->unchanged, 4);
  EXPECT_EQ(st->added, 0);
  auto missing = e->Ingest({dir_ + "/nope"});
  EXPECT_EQ(missing.status().code(), cocom::Status::Code::kNotFound) << missing.status().ToString();

  auto hits = e->Search("preservation of the copyright notice");
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  ASSERT_FALSE(hits->empty());
  EXPECT_TRUE(has((*hits)[0].source, "apache.md")) << (*hits)[0].source;
  EXPECT_EQ((*hits)[0].title, "Apache License");
  EXPECT_TRUE(has((*hits)[0].text, "preservation")) << (*hits)[0].text;
  auto k1 = e->Search("license", {1, std::nullopt});
  ASSERT_TRUE(k1.ok());
  EXPECT_EQ(k1->size(), 1u);
  auto dense = e->Search("license", {0, cocom::SearchMode::kDense});
  EXPECT_EQ(dense.status().code(), cocom::Status::Code::kFailedPrecondition);
  EXPECT_EQ(e->Search("   ").status().code(), cocom::Status::Code::kInvalidArgument);

  // In-memory documents, with a progress callback that stops after the first one.
  std::vector<cocom::Document> docs = {
      {"mem-1", "Quokka", "The quokka is a small marsupial that lives on Rottnest Island.",
       "https://example.org/quokka"},
      {"mem-2", "Axolotl", "The axolotl is a salamander that keeps its larval features.", ""},
      {"mem-3", "Narwhal", "The narwhal is a whale with a long spiral tusk.", "notes://narwhal"},
  };
  std::vector<size_t> seen;
  cocom::IngestOptions stop_early;
  stop_early.progress = [&](const cocom::IngestProgress& p) {
    seen.push_back(p.documents_done);
    EXPECT_EQ(p.documents_total, 3u);
    return false;
  };
  auto ms = e->IngestDocuments(docs, stop_early);
  ASSERT_TRUE(ms.ok()) << ms.status().ToString();
  EXPECT_TRUE(ms->stopped_early);
  EXPECT_EQ(ms->added, 1);
  EXPECT_EQ(seen, std::vector<size_t>({1}));
  ms = e->IngestDocuments(docs);
  ASSERT_TRUE(ms.ok()) << ms.status().ToString();
  EXPECT_FALSE(ms->stopped_early);
  EXPECT_EQ(ms->added, 2);
  EXPECT_EQ(ms->unchanged, 1);
  EXPECT_GE(ms->passages, 2);

  hits = e->Search("quokka marsupial");
  ASSERT_TRUE(hits.ok());
  ASSERT_FALSE(hits->empty());
  EXPECT_EQ((*hits)[0].document_id, "mem-1");
  EXPECT_EQ((*hits)[0].source, "https://example.org/quokka");
  EXPECT_EQ((*hits)[0].text.rfind("Quokka. ", 0), 0u) << (*hits)[0].text;

  // Bad input: an empty id names the document.
  auto bad = e->IngestDocuments({{"", "t", "text", ""}});
  EXPECT_EQ(bad.status().code(), cocom::Status::Code::kInvalidArgument);
  EXPECT_TRUE(has(bad.status().message(), "documents[0].id")) << bad.status().ToString();
  // Invalid UTF-8 is repaired and reported.
  auto repaired = e->IngestDocuments({{"mem-bad", "Broken", "caf\xC3 ocelot", ""}});
  ASSERT_TRUE(repaired.ok());
  EXPECT_EQ(repaired->added, 1);
  EXPECT_FALSE(repaired->warnings.empty());

  auto stats = e->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->documents, 4 + 3 + 1);
  EXPECT_EQ(stats->compression_rate, 4);
  EXPECT_EQ(stats->embeddings_per_passage, 32);  // 128 / 4
  EXPECT_EQ(stats->embedding_dim, 64);
  EXPECT_EQ(stats->embedding_dtype, cocom::EmbeddingDType::kFp16);
  EXPECT_EQ(stats->embedding_bytes, stats->passages * 32 * 64 * 2);
  EXPECT_FALSE(stats->has_dense_retriever);
  EXPECT_TRUE(stats->model_loaded);
  Json sj = parse_json_text(stats->json, "stats");
  EXPECT_EQ(sj["documents"], stats->documents);
  EXPECT_EQ(sj["passages"], stats->passages);

  // Remove by id, by stored source (a URL), by path; unknown: 0.
  auto n = e->Remove("mem-1");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  n = e->Remove("notes://narwhal");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  n = e->Remove(corpus_ + "/gpl.txt");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  n = e->Remove("never-stored");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  hits = e->Search("quokka narwhal");
  ASSERT_TRUE(hits.ok());
  for (const auto& h : *hits) {
    EXPECT_NE(h.document_id, "mem-1");
    EXPECT_NE(h.document_id, "mem-3");
  }
  stats = e->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->documents, 5);
  // Put the shared store back the way the other tests expect it.
  ASSERT_TRUE(e->Remove("mem-2").ok());
  ASSERT_TRUE(e->Remove("mem-bad").ok());
  ASSERT_TRUE(e->Ingest({corpus_}).ok());
  EXPECT_EQ(e->Stats()->documents, 4);
}

TEST_F(ApiStore, AskMatchesTheInternalPipelineStreamsAndCancels) {
  const std::string q = "What does the license require about the copyright notice?";
  const size_t k = 3;
  cocom::Answer answer, streamed_answer, cancelled_answer, baseline;
  std::vector<cocom::Passage> top;
  std::vector<std::string> pieces, first_piece;
  {
    cocom::Options o = base_options(db_);
    o.top_k = k;
    o.generation.max_new_tokens = 16;
    auto e = open_ok(o);
    ASSERT_TRUE(e);
    auto hits = e->Search(q);
    ASSERT_TRUE(hits.ok());
    top = *hits;
    ASSERT_EQ(top.size(), k);

    auto a = e->Ask(q);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    answer = *a;
    EXPECT_TRUE(answer.compressed);
    EXPECT_FALSE(answer.cancelled);
    EXPECT_EQ(ids_of(answer.sources), ids_of(top));
    EXPECT_FALSE(answer.text.empty());
    EXPECT_EQ(answer.timings.generated_tokens, 16);
    EXPECT_GT(answer.timings.prefill_ms, 0);
    EXPECT_GT(answer.timings.decode_ms, 0);
    EXPECT_GT(answer.timings.decode_tokens_per_second, 0);
    EXPECT_GE(answer.timings.total_ms, answer.timings.prefill_ms + answer.timings.decode_ms);

    // Streaming: the pieces are whole UTF-8 and add up to the same answer.
    auto s = e->AskStreaming(q, [&](const std::string& piece) {
      pieces.push_back(piece);
      return true;
    });
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    streamed_answer = *s;
    std::string joined;
    for (const auto& p : pieces) {
      EXPECT_FALSE(p.empty());
      EXPECT_TRUE(valid_utf8(p)) << p;
      joined += p;
    }
    EXPECT_EQ(joined, answer.text);
    EXPECT_EQ(streamed_answer.text, answer.text);
    EXPECT_GE(pieces.size(), 2u);

    // Cancelling after the first piece: a prefix of the answer, flagged.
    auto c = e->AskStreaming(q, [&](const std::string& piece) {
      first_piece.push_back(piece);
      return false;
    });
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    cancelled_answer = *c;
    EXPECT_TRUE(cancelled_answer.cancelled);
    ASSERT_EQ(first_piece.size(), 1u);
    EXPECT_EQ(first_piece[0], pieces[0]);
    EXPECT_EQ(answer.text.rfind(cancelled_answer.text, 0), 0u) << cancelled_answer.text;
    EXPECT_LT(cancelled_answer.timings.generated_tokens, answer.timings.generated_tokens);

    // The uncompressed baseline: the same passages, read as text.
    cocom::AskOptions ao;
    ao.no_compress = true;
    auto b = e->Ask(q, ao);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    baseline = *b;
    EXPECT_FALSE(baseline.compressed);
    EXPECT_EQ(ids_of(baseline.sources), ids_of(top));

    auto bad =
        e->Ask(q, {0, std::nullopt, std::nullopt, cocom::GenerationOptions{0, 0, 0, 1, 0}, {}});
    EXPECT_EQ(bad.status().code(), cocom::Status::Code::kInvalidArgument);
    EXPECT_TRUE(has(bad.status().message(), "max_new_tokens")) << bad.status().ToString();
    EXPECT_EQ(e->Ask(" ").status().code(), cocom::Status::Code::kInvalidArgument);
    EXPECT_EQ(e->Stats()->questions_answered, 4);
  }

  // The same answer through the internal pipeline, from the stored embeddings of the same
  // passages (the engine is closed: RocksDB allows one opener).
  cocom::engine::KnowledgeStoreOptions ko;
  ko.db = db_;
  ko.need_model = true;
  auto ks = cocom::engine::KnowledgeStore::open(ko);
  const cocom::model::CocomModel& m = ks->loaded_model();
  std::vector<at::Tensor> rows;
  for (const auto& p : top) {
    std::vector<float> v = ks->passage_embeddings(p.id);
    rows.push_back(at::tensor(v).view({32, 64}));
  }
  cocom::model::SamplingOptions so;
  so.max_new_tokens = 16;
  cocom::generate::AnswerResult ref = cocom::generate::answer(m, q, at::stack(rows), so);
  std::vector<int64_t> ids;
  for (int64_t t = 0; t < ref.generation.tokens.size(1); ++t) {
    ids.push_back(ref.generation.tokens[0][t].item<int64_t>());
  }
  EXPECT_EQ(answer.text, m.decoder_tokenizer().decode(ids, true));
  EXPECT_EQ(answer.timings.prompt_tokens, ref.generation.prompt_tokens);

  // Prompt lengths: every passage is ceil(128 / 4) = 32 context embeddings plus <SEP> in the
  // compressed prompt, against its whole text in the baseline.
  const auto& tok = m.decoder_tokenizer();
  const int64_t question_part =
      static_cast<int64_t>(tok.encode("[INST]" + q + "\n[/INST]\n", false).size());
  EXPECT_NEAR(double(answer.timings.prompt_tokens), double(1 + int64_t(k) * 33 + question_part),
              2.0);
  int64_t passage_tokens = 0;
  for (const auto& p : top)
    passage_tokens += static_cast<int64_t>(tok.encode(p.text, false).size());
  EXPECT_GE(baseline.timings.prompt_tokens, passage_tokens + question_part);
  EXPECT_NE(baseline.timings.prompt_tokens, answer.timings.prompt_tokens);
}

// BM25 with Snowball stemming, the default for new stores: a question finds a passage in
// other word forms ("warranties" / "Warranty", "disclaim" / "Disclaimer"), accents fold, stop
// words alone match nothing, title words weigh more. The language is the store's: fixed once
// it holds documents, "words" keeps exact words, an unknown language is named.
TEST(ApiBm25, StemmedLanguageIsTheStoresAndFixed) {
  const std::string dir = cocom::test::make_temp_dir("api-bm25");
  const std::vector<cocom::Document> docs = {
      {"notes", "Notes", "Liability is limited by the contract.", ""},
      {"gpl-15", "Disclaimer of Warranty",
       "There is none for the program, to the extent permitted by applicable law.", ""},
      {"gpl-16", "Liability", "In no event will any copyright holder pay damages.", ""},
      {"cafe", "Menu", "Our caf\xC3\xA9 serves coffee and pastries every morning.", ""}};
  auto search = [](cocom::Engine& e, const std::string& q) {
    std::vector<std::string> ids;
    auto hits = e.Search(q, {4, cocom::SearchMode::kBm25});
    EXPECT_TRUE(hits.ok()) << hits.status().ToString();
    if (hits.ok()) {
      for (const auto& h : *hits) ids.push_back(h.document_id);
    }
    return ids;
  };
  auto stemmed = open_ok(base_options(dir + "/stemmed"));
  ASSERT_TRUE(stemmed);
  ASSERT_TRUE(stemmed->IngestDocuments(docs).ok());
  EXPECT_EQ(stemmed->Stats()->bm25_analyzer, "snowball:english");
  EXPECT_EQ(search(*stemmed, "What warranties does the licence disclaim?"),
            std::vector<std::string>{"gpl-15"});
  EXPECT_EQ(search(*stemmed, "CAFE"), std::vector<std::string>{"cafe"});
  EXPECT_TRUE(search(*stemmed, "the of and is").empty());
  // "liability": "notes" (ingested first: the smaller id, which wins ties) has it once in its
  // text, "gpl-16" in its title, which counts twice.
  EXPECT_EQ(search(*stemmed, "liability"), (std::vector<std::string>{"gpl-16", "notes"}));

  cocom::Options wo = base_options(dir + "/words");
  wo.bm25_language = "words";
  auto words = open_ok(wo);
  ASSERT_TRUE(words);
  ASSERT_TRUE(words->IngestDocuments(docs).ok());
  EXPECT_EQ(words->Stats()->bm25_analyzer, "words");
  EXPECT_TRUE(search(*words, "warranties disclaim").empty());
  EXPECT_EQ(search(*words, "warranty"), std::vector<std::string>{"gpl-15"});
  words.reset();
  wo.bm25_language = "german";
  cocom::Status s = open_status(wo);
  EXPECT_EQ(s.code(), cocom::Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_TRUE(has(s.ToString(), "snowball:german") && has(s.ToString(), "words")) << s.ToString();
  wo.bm25_language.reset();  // unset: the store's own
  words = open_ok(wo);
  ASSERT_TRUE(words);
  EXPECT_EQ(words->Stats()->bm25_analyzer, "words");

  cocom::Options bad = base_options(dir + "/bad");
  bad.bm25_language = "klingon";
  s = open_status(bad);
  EXPECT_TRUE(has(s.ToString(), "klingon") && has(s.ToString(), "english")) << s.ToString();
  EXPECT_FALSE(fs::exists(dir + "/bad/CURRENT"));
  fs::remove_all(dir);
}

TEST(ApiConcurrency, ReadersDuringIngestion) {
  std::string dir = cocom::test::make_temp_dir("api-conc");
  std::string corpus = make_corpus(dir);
  cocom::Options o = base_options(dir + "/db");
  o.retriever_dir = make_retriever(dir);
  o.top_k = 3;
  o.generation.max_new_tokens = 3;
  auto e = open_ok(o);
  ASSERT_TRUE(e);
  auto st = e->Ingest({corpus});
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  const int64_t initial_passages = e->Stats()->passages;

  std::set<std::string> known = {corpus + "/gpl.txt", corpus + "/notes/apache.md", "faq-1",
                                 "faq-2"};
  std::vector<cocom::Document> more;
  for (int i = 0; i < 8; ++i) {
    std::string text;
    for (int s = 0; s < 10; ++s) {
      text += "Report " + std::to_string(i) + " line " + std::to_string(s) + " mentions pangolin" +
              std::to_string(i) + " and the license terms. ";
    }
    more.push_back({"more-" + std::to_string(i), "Report " + std::to_string(i), text, ""});
    known.insert(more.back().id);
  }

  std::atomic<bool> done{false};
  std::atomic<int> answers{0}, searches{0}, failures{0};
  std::mutex mu;
  std::vector<std::string> problems;
  auto problem = [&](const std::string& p) {
    std::lock_guard<std::mutex> lock(mu);
    problems.push_back(p);
    ++failures;
  };
  auto reader = [&](int id) {
    int round = 0;
    while (!done.load() || round < 2) {
      const std::string q =
          "What do the license terms say about pangolin" + std::to_string(round % 8) + "?";
      if ((round + id) % 2 == 0) {
        auto a = e->Ask(q);
        if (!a.ok()) {
          problem(a.status().ToString());
        } else {
          ++answers;
          if (a->sources.empty()) problem("an answer without sources");
          for (const auto& p : a->sources) {
            if (!known.count(p.document_id)) problem("unknown source " + p.document_id);
            if (p.text.empty()) problem("empty passage text");
          }
        }
      } else {
        auto h = e->Search(q);
        if (!h.ok()) {
          problem(h.status().ToString());
        } else {
          ++searches;
          for (const auto& p : *h) {
            if (!known.count(p.document_id)) problem("unknown hit " + p.document_id);
          }
        }
      }
      ++round;
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(reader, i);
  // Start writing once the readers are busy, so that the two really overlap.
  for (int spin = 0; spin < 3000 && answers.load() + searches.load() < 4; ++spin) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const int before = answers.load() + searches.load();
  int64_t added = 0, passages = 0;
  for (const auto& d : more) {  // one writer, a document at a time
    auto r = e->IngestDocuments({d});
    if (!r.ok()) {
      problem(r.status().ToString());
      continue;
    }
    added += r->added;
    passages += r->passages;
  }
  auto removed = e->Remove("faq-2");
  const int during = answers.load() + searches.load() - before;
  done.store(true);
  for (auto& t : threads) t.join();
  for (const auto& p : problems) ADD_FAILURE() << p;
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(answers.load(), 4);
  EXPECT_GE(searches.load(), 4);
  std::printf("readers: %d searches and %d answers, %d of them while the writer ran\n",
              searches.load(), answers.load(), during);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 1);
  EXPECT_EQ(added, 8);

  auto stats = e->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->documents, 4 + 8 - 1);
  EXPECT_EQ(stats->passages, initial_passages + passages - 1);  // faq-2 is one passage
  Json sj = parse_json_text(stats->json, "stats");
  EXPECT_EQ(sj["index_vectors"], stats->passages);
  EXPECT_EQ(sj["bm25_documents"], stats->passages);
  // Every new document is findable afterwards.
  auto h = e->Search("pangolin5", {1, cocom::SearchMode::kBm25});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 1u);
  EXPECT_EQ((*h)[0].document_id, "more-5");
  e.reset();
  fs::remove_all(dir);
}

// Searches that never stop (four threads, back to back) must not starve a writer: a
// one-document ingestion finishes while they go on. The bound is the test's own timeout.
TEST(ApiConcurrency, IngestionFinishesUnderSustainedSearches) {
  std::string dir = cocom::test::make_temp_dir("api-starve");
  std::string corpus = make_corpus(dir);
  cocom::Options o = base_options(dir + "/db");
  o.search_mode = cocom::SearchMode::kBm25;
  auto e = open_ok(o);
  ASSERT_TRUE(e);
  ASSERT_TRUE(e->Ingest({corpus}).ok());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> searches{0}, failures{0};
  auto reader = [&] {
    while (!stop.load()) {
      auto h = e->Search("license terms software");
      if (h.ok()) {
        ++searches;
      } else {
        ++failures;
      }
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 4; ++i) readers.emplace_back(reader);
  while (searches.load() < 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int64_t before = searches.load();
  auto writer = std::async(std::launch::async, [&] {
    return e->IngestDocuments({{"pangolin-note", "Note", "Pangolins eat ants at night.", ""}});
  });
  const bool finished = writer.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  const int64_t during = searches.load() - before;
  stop = true;
  for (auto& t : readers) t.join();
  auto r = writer.get();
  EXPECT_TRUE(finished) << "the ingestion was still blocked after 60 s of searches";
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->added, 1);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(during, 0);
  auto h = e->Search("pangolins ants", {1, cocom::SearchMode::kBm25});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 1u);
  EXPECT_EQ((*h)[0].document_id, "pangolin-note");
  e.reset();
  fs::remove_all(dir);
}

TEST_F(ApiStore, QuantisedDecoderAnswersFromTheSameSources) {
  const std::string q = "What does the license require about the copyright notice?";
  std::vector<uint64_t> fp32_sources;
  for (const char* w : {"fp32", "int8", "bf16"}) {
    cocom::Options o = base_options(db_);
    o.weights = *cocom::ParseWeightFormat(w);
    o.generation.max_new_tokens = 8;
    auto e = open_ok(o);
    ASSERT_TRUE(e) << w;
    auto a = e->Ask(q);
    ASSERT_TRUE(a.ok()) << w << ": " << a.status().ToString();
    // Retrieval does not involve the decoder: the same passages, whatever its format.
    if (fp32_sources.empty()) fp32_sources = ids_of(a->sources);
    EXPECT_EQ(ids_of(a->sources), fp32_sources) << w;
    EXPECT_EQ(a->timings.generated_tokens, 8) << w;
  }
}

TEST_F(ApiStore, CliAskJsonAndMissingStore) {
  std::string out;
  const std::string bin = cocom::test::cocom_binary();
  // stdout only (run_command adds 2>&1 after the command; the subshell keeps stderr out).
  int rc = cocom::test::run_command(
      "(" + bin + " --threads 2 ask --json --db " + db_ +
          " --k 3 --max-new-tokens 5 'What is the license warranty?' 2>/dev/null)",
      &out);
  ASSERT_EQ(rc, 0) << out;
  Json j = parse_json_text(out, "cocom ask --json");
  EXPECT_TRUE(j["answer"].is_string());
  EXPECT_EQ(j["compressed"], true);
  ASSERT_EQ(j["sources"].size(), 3u);
  // faq-1 is the only passage with "warranty" (three times, its title counted twice); the
  // others share "license" ("is", "the", "what" are stop words and match nothing).
  EXPECT_EQ(j["sources"][0]["document_id"], "faq-1");
  for (const char* f : {"title", "source", "text", "score", "passage_id"}) {
    EXPECT_TRUE(j["sources"][0].contains(f)) << f;
  }
  for (const char* f : {"retrieve_ms", "load_embeddings_ms", "prefill_ms", "decode_ms",
                        "decode_tokens_per_second", "prompt_tokens", "generated_tokens"}) {
    EXPECT_TRUE(j["timings"].contains(f)) << f;
  }
  EXPECT_EQ(j["timings"]["generated_tokens"], 5);

  // Plain output (stdout is a pipe: the answer is printed whole), sources, a timing line.
  rc = cocom::test::run_command(
      bin + " ask --db " + db_ +
          " --k 2 --max-new-tokens 4 --no-compress 'What is the license warranty?'",
      &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(has(out, "[1] Warranty")) << out;
  EXPECT_TRUE(has(out, "[2] ")) << out;
  EXPECT_FALSE(has(out, "[3] ")) << out;
  EXPECT_TRUE(has(out, "tokens/s")) << out;

  const std::string missing = dir_ + "/no-store-here";
  rc = cocom::test::run_command(bin + " ask --db " + missing + " 'anything?'", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "NotFound")) << out;
  EXPECT_TRUE(has(out, missing)) << out;
  EXPECT_FALSE(fs::exists(missing));
}

// The prompt budget: the question and k passages' embeddings must fit the decoder's positions
// (256 in the fixture model) and the prompt memory budget. Over it, Ask refuses before
// retrieving, naming the sizes and the largest k that fits.
int64_t passages_that_fit(const std::string& message) {
  const std::string key = "at most ";
  const size_t at = message.rfind(key);
  if (at == std::string::npos) return -1;
  return std::stoll(message.substr(at + key.size()));
}

TEST_F(ApiStore, PromptBudgetRefusesLongQuestionsAndLargeK) {
  auto e = open_ok(base_options(db_));  // 12 new tokens
  ASSERT_TRUE(e);
  std::string big;
  while (big.size() < 100000) big += "What does the warranty say about the software? ";
  auto a = e->Ask(big);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), cocom::Status::Code::kInvalidArgument) << a.status().ToString();
  EXPECT_TRUE(has(a.status().message(), "Options::top_k 5")) << a.status().ToString();
  EXPECT_TRUE(has(a.status().message(), "256 positions")) << a.status().ToString();
  EXPECT_TRUE(has(a.status().message(), "the question alone is too long")) << a.status().ToString();

  const std::string q = "What about the warranty?";
  cocom::AskOptions ao;
  ao.k = 1000;
  a = e->Ask(q, ao);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), cocom::Status::Code::kInvalidArgument) << a.status().ToString();
  EXPECT_TRUE(has(a.status().message(), "AskOptions::k 1000")) << a.status().ToString();
  const int64_t fits = passages_that_fit(a.status().message());
  // By hand: <s>, then 32 slots + <SEP> per passage (128 tokens / r = 4), then the question
  // in [INST] (under 40 tokens), within 256 positions.
  EXPECT_LE(fits, (256 - 1) / 33) << a.status().ToString();
  EXPECT_GE(fits, (256 - 1 - 40) / 33) << a.status().ToString();
  // That many passages are read; one more is refused.
  ao.k = static_cast<size_t>(fits);
  a = e->Ask(q, ao);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  ao.k = static_cast<size_t>(fits + 1);
  a = e->Ask(q, ao);
  EXPECT_EQ(a.status().code(), cocom::Status::Code::kInvalidArgument) << a.status().ToString();
  // A huge k costs nothing before it is refused (no buffers sized by it) and searches clamp it.
  ao.k = size_t{1} << 40;
  a = e->Ask(q, ao);
  EXPECT_EQ(a.status().code(), cocom::Status::Code::kInvalidArgument) << a.status().ToString();
  cocom::SearchOptions so;
  so.k = size_t{1} << 40;
  auto hits = e->Search("warranty license", so);
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  EXPECT_LE(hits->size(), 5u);

  // A memory budget of 1 MB: 4 heads' fp32 scores and probabilities over 200 tokens alone take
  // 2 x 4 x 200^2 x 4 bytes = 1.3 MB, so fewer passages fit than the positions allow.
  e.reset();
  cocom::Options small = base_options(db_);
  small.prompt_memory_mb = 1;
  e = open_ok(small);
  ASSERT_TRUE(e);
  ao.k = static_cast<size_t>(fits);
  a = e->Ask(q, ao);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), cocom::Status::Code::kInvalidArgument) << a.status().ToString();
  EXPECT_TRUE(has(a.status().message(), "budget is 1 MB")) << a.status().ToString();
  const int64_t fits_small = passages_that_fit(a.status().message());
  EXPECT_GE(fits_small, 1);
  EXPECT_LT(fits_small, fits);
  ao.k = static_cast<size_t>(fits_small);
  EXPECT_TRUE(e->Ask(q, ao).ok());

  small.prompt_memory_mb = 0;
  e.reset();
  cocom::Status s = open_status(small);
  EXPECT_EQ(s.code(), cocom::Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_TRUE(has(s.message(), "prompt_memory_mb")) << s.ToString();
}

// The command line says the same in its own terms: flags, not API names.
TEST_F(ApiStore, CliRefusesOverBudgetInItsOwnTerms) {
  std::string out;
  const std::string bin = cocom::test::cocom_binary();
  int rc = cocom::test::run_command(
      bin + " --threads 2 ask --db " + db_ + " --k 1000 'What about the warranty?'", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "--k 1000")) << out;
  EXPECT_TRUE(has(out, "passages fit")) << out;
  EXPECT_TRUE(has(out, "--prompt-memory-mb")) << out;
  EXPECT_FALSE(has(out, "Options::")) << out;

  rc = cocom::test::run_command(bin + " --version", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(has(out, "cocom 0.")) << out;

  // A mistyped store is named without the library's option names, and not created.
  const std::string missing = dir_ + "/no-store";
  for (const auto& [cmd, arg] : std::vector<std::pair<std::string, std::string>>{
           {" search --db ", " warranty"}, {" rm --db ", " faq-1"}, {" info --db ", ""}}) {
    rc = cocom::test::run_command(bin + cmd + missing + arg, &out);
    EXPECT_EQ(rc, 1) << cmd << out;
    EXPECT_FALSE(has(out, "Options::")) << cmd << out;
    EXPECT_FALSE(fs::exists(missing)) << cmd;
  }
}

// Store identity is the checkpoint's content: a renamed byte-identical copy is the same model,
// a copy with the same directory name but damaged weights is another, and a model that makes
// non-finite embeddings stores nothing.
void poison_weights(const std::string& safetensors) {
  std::string bytes = cocom::read_text_file(safetensors);
  ASSERT_GT(bytes.size(), 8u);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i)
    header = (header << 8) | static_cast<unsigned char>(bytes[size_t(i)]);
  ASSERT_LT(8 + header, bytes.size());
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(8 + header), bytes.end(), '\xff');  // NaN
  cocom::test::write_bytes(safetensors, bytes);
}

TEST(ApiIdentity, ContentNotDirectoryNameDecidesTheModel) {
  const std::string dir = cocom::test::make_temp_dir("api-identity");
  cocom::test::ScopedEnv cache("COCOM_CACHE_DIR", (dir + "/cache").c_str());
  const std::string model = dir + "/a/model";
  cocom::Options o = store_with_model_copy(dir, model);
  const std::string corpus = dir + "/corpus";
  // Moved and renamed: found by --model without complaint, and it answers.
  fs::rename(model, dir + "/renamed");
  o.model_dir = dir + "/renamed";
  {
    auto e = open_ok(o);
    ASSERT_TRUE(e);
    auto a = e->Ask("What about the warranty?");
    EXPECT_TRUE(a.ok()) << a.status().ToString();
  }
  // The same directory name with NaN weights: another model, refused before loading.
  const std::string damaged = dir + "/b/model";
  fs::create_directories(dir + "/b");
  fs::copy(dir + "/renamed", damaged, fs::copy_options::recursive);
  poison_weights(damaged + "/model.safetensors");
  o.model_dir = damaged;
  {
    std::unique_ptr<cocom::Engine> e;
    cocom::Status s = cocom::Engine::Open(o, &e);
    if (s.ok()) s = e->Ask("What about the warranty?").status();
    EXPECT_EQ(s.code(), cocom::Status::Code::kFailedPrecondition) << s.ToString();
    EXPECT_TRUE(has(s.message(), damaged)) << s.ToString();
  }

  // A new store ingesting with the damaged model: an error naming it, nothing stored.
  cocom::Options fresh = base_options(dir + "/db2");
  fresh.model_dir = damaged;
  {
    auto e = open_ok(fresh);
    ASSERT_TRUE(e);
    auto st = e->Ingest({corpus});
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.status().code(), cocom::Status::Code::kFailedPrecondition)
        << st.status().ToString();
    EXPECT_TRUE(has(st.status().message(), "non-finite")) << st.status().ToString();
    EXPECT_TRUE(has(st.status().message(), damaged)) << st.status().ToString();
    auto stats = e->Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->documents, 0);
    EXPECT_EQ(stats->passages, 0);
  }
  // The store holds nothing, so it may still take the good model (and another dtype).
  fresh.model_dir = dir + "/renamed";
  fresh.embedding_dtype = cocom::EmbeddingDType::kFp32;
  {
    auto e = open_ok(fresh);
    ASSERT_TRUE(e);
    auto st = e->Ingest({corpus});
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(st->added, 4);
    auto a = e->Ask("What about the warranty?");
    EXPECT_TRUE(a.ok()) << a.status().ToString();
  }
  // Once it holds documents, it is bound: the damaged model is refused.
  fresh.model_dir = damaged;
  fresh.embedding_dtype.reset();
  {
    std::unique_ptr<cocom::Engine> e;
    cocom::Status s = cocom::Engine::Open(fresh, &e);
    if (s.ok()) s = e->Ingest({corpus}).status();
    EXPECT_EQ(s.code(), cocom::Status::Code::kFailedPrecondition) << s.ToString();
  }
  fs::remove_all(dir);
}

// `cocom ingest` with a mistyped document path creates no store; the corrected command
// (with another --model) then works.
TEST(ApiIdentity, CliIngestChecksInputsBeforeCreatingTheStore) {
  const std::string dir = cocom::test::make_temp_dir("api-ingest-cli");
  const std::string corpus = make_corpus(dir);
  const std::string bin = cocom::test::cocom_binary();
  std::string out;
  int rc = cocom::test::run_command(
      bin + " --threads 2 ingest --db " + dir + "/db " + dir + "/no-such-corpus", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, dir + "/no-such-corpus")) << out;
  EXPECT_FALSE(fs::exists(dir + "/db")) << out;

  // Every input skipped (an unsupported file only): exit 1, said so.
  cocom::test::write_bytes(dir + "/blob.bin", std::string("\x00\x01\x02\x03", 4));
  rc = cocom::test::run_command(bin + " --threads 2 ingest --db " + dir + "/db --model " +
                                    model_dir() + " " + dir + "/blob.bin",
                                &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "every input was skipped")) << out;
  EXPECT_FALSE(has(out, "[warning]")) << out;  // no raw log lines

  // A file over --max-file-mb is skipped before it is read, the reason naming the limit.
  cocom::test::write_bytes(dir + "/big.txt", std::string(size_t{3} << 20, 'a'));
  rc = cocom::test::run_command(bin + " --threads 2 ingest --db " + dir + "/db --model " +
                                    model_dir() + " --max-file-mb 2 " + dir + "/big.txt",
                                &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(has(out, "file too large")) << out;
  EXPECT_TRUE(has(out, "max_file_bytes")) << out;

  rc = cocom::test::run_command(
      bin + " --threads 2 ingest --db " + dir + "/db --model " + model_dir() + " " + corpus, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(has(out, "4 added")) << out;
  fs::remove_all(dir);
}

// `cocom ingest` on a directory laid out like /usr/share/doc: files without an extension and
// compressed ones are read, a binary is skipped with its type, the store inside the directory
// is not walked into, a hidden file is left out; the summary says what was read per format.
TEST(ApiIngest, CliReadsFilesByContentAndSaysWhatItRead) {
  const std::string dir = cocom::test::make_temp_dir("api-ingest-formats");
  const std::string docs = dir + "/doc/pkg";
  fs::create_directories(docs);
  cocom::test::write_bytes(docs + "/copyright",
                           "Format: https://www.debian.org/doc/packaging-manuals/copyright\n"
                           "License: GPL-3+\n This program is free software.\n");
  cocom::test::write_bytes(docs + "/changelog.Debian", "pkg (1.0-1) unstable; urgency=low\n");
  std::string out;
  ASSERT_EQ(cocom::test::run_command("gzip -9 " + docs + "/changelog.Debian", &out), 0) << out;
  cocom::test::write_bytes(docs + "/logo.png",
                           std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01"
                                       "\x08\x06\0\0\0\x1f\x15\xc4\x89",
                                       33));
  cocom::test::write_bytes(docs + "/.hidden", "not for the store");
  const std::string bin = cocom::test::cocom_binary();
  const std::string cmd = bin + " --threads 2 ingest --db " + dir + "/doc/store --model " +
                          model_dir() + " " + dir + "/doc";
  int rc = cocom::test::run_command(cmd, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(has(out, "2 added, 0 unchanged, 0 replaced, 2 skipped")) << out;
  EXPECT_TRUE(has(out, "\n  read: 1 text, 1 text (gzip)\n")) << out;
  EXPECT_TRUE(has(out, "skipped " + docs + "/logo.png: binary file (image/png)")) << out;
  EXPECT_TRUE(has(out, "skipped " + dir + "/doc/store: a cocom store (not read)")) << out;
  EXPECT_FALSE(has(out, ".hidden")) << out;
  // Again: everything unchanged, the store still not read; --json carries the same.
  rc = cocom::test::run_command(cmd + " --json 2>/dev/null", &out);
  EXPECT_EQ(rc, 0) << out;
  const Json j = parse_json_text(out, "cocom ingest --json");
  EXPECT_EQ(j["unchanged"], 2);
  EXPECT_EQ(j["formats"], Json({{"text", 1}, {"text (gzip)", 1}}));
  EXPECT_EQ(j["skipped"].size(), 2u);
  fs::remove_all(dir);
}

// A long document is compressed and written in parts of Options::passages_per_batch, with
// progress after each part; stopping between parts drops it whole.
TEST(ApiIngest, LongDocumentsInPartsAreWholeOrAbsent) {
  const std::string dir = cocom::test::make_temp_dir("api-long");
  std::string text;
  for (int i = 0; i < 60; ++i) {
    text += "Sentence " + std::to_string(i) + " of the long record mentions the quokka. ";
  }
  cocom::test::write_bytes(dir + "/long.txt", text);
  cocom::Options o = base_options(dir + "/db");
  o.passages_per_batch = 2;
  auto e = open_ok(o);
  ASSERT_TRUE(e);
  std::vector<int64_t> seen;
  cocom::IngestOptions io;
  io.progress = [&](const cocom::IngestProgress& p) {
    seen.push_back(p.passages_done);
    return seen.size() < 2;  // stop after the second part
  };
  auto st = e->Ingest({dir + "/long.txt"}, io);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_TRUE(st->stopped_early);
  EXPECT_EQ(st->added, 0);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], 2);  // one part of 2 passages, then two
  EXPECT_EQ(seen[1], 4);
  auto stats = e->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->documents, 0);
  EXPECT_EQ(stats->passages, 0);
  auto hits = e->Search("quokka");
  ASSERT_TRUE(hits.ok()) << hits.status().ToString();
  EXPECT_TRUE(hits->empty());

  seen.clear();
  io.progress = [&](const cocom::IngestProgress& p) {
    seen.push_back(p.passages_done);
    return true;
  };
  st = e->Ingest({dir + "/long.txt"}, io);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->added, 1);
  EXPECT_GT(st->passages, 4);
  // One call per part but the last, then one for the document.
  EXPECT_EQ(static_cast<int64_t>(seen.size()), (st->passages + 1) / 2);
  EXPECT_EQ(seen.back(), st->passages);
  hits = e->Search("quokka");
  ASSERT_TRUE(hits.ok());
  EXPECT_FALSE(hits->empty());
  stats = e->Stats();
  EXPECT_EQ(stats->passages, st->passages);
  fs::remove_all(dir);
}
