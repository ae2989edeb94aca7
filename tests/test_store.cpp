// The knowledge store end to end through the `cocom` binary: ingest, re-ingest, replace,
// remove, search (BM25, dense, hybrid), fingerprint checks, and SIGKILL during ingestion.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/json_util.h"
#include "storage/store.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;

namespace {

std::string fx() { return test::fixtures_dir(); }

std::string run(const std::string& args, int* rc) {
  std::string out;
  *rc = test::run_command(test::cocom_binary() + " " + args, &out);
  return out;
}

// stdout only: run_command adds 2>&1 after the command, the subshell keeps stderr out.
Json run_json(const std::string& args) {
  std::string out;
  const int rc = test::run_command("(" + test::cocom_binary() + " " + args + " 2>/dev/null)", &out);
  EXPECT_EQ(rc, 0) << args << "\n" << out;
  return parse_json_text(out, args);
}

// A small corpus written by the test: topics with distinctive words.
std::string make_corpus(const std::string& dir, int extra_docs = 0) {
  std::string c = dir + "/corpus";
  fs::create_directories(c + "/notes");
  test::write_bytes(c + "/gpl.txt",
                    "The GNU General Public License is a free software license. It guarantees "
                    "end users the freedom to run, study, share and modify the software.");
  test::write_bytes(c + "/notes/apache.md",
                    "# Apache License\n\nThe Apache License requires preservation of the "
                    "copyright notice and disclaimer. It is a permissive license.\n");
  test::write_bytes(c + "/faq.jsonl",
                    "{\"id\": \"faq-1\", \"title\": \"Warranty\", \"text\": \"The program is "
                    "distributed without any warranty.\"}\n"
                    "{\"id\": \"faq-2\", \"title\": \"Patents\", \"text\": \"Each contributor "
                    "grants a patent license to every recipient.\"}\n");
  for (int i = 0; i < extra_docs; ++i) {
    std::string text;
    for (int s = 0; s < 12; ++s) {
      text += "Document " + std::to_string(i) + " sentence " + std::to_string(s) +
              " talks about zebra" + std::to_string(i) + " and the license terms. ";
    }
    test::write_bytes(c + "/bulk" + std::to_string(i) + ".txt", text);
  }
  return c;
}

void expect_parts_agree(const Json& info, bool dense) {
  EXPECT_EQ(info["passages"], info["embeddings"]) << info.dump();
  EXPECT_EQ(info["passages"], info["bm25_documents"]) << info.dump();
  if (dense) {
    EXPECT_EQ(info["passages"], info["index_vectors"]) << info.dump();
  }
}

// Runs `cocom ingest --progress-lines ARGS...` and SIGKILLs it after `kill_after` progress
// lines (one per finished document or part of a long one): the kill is timed by the child's
// own progress, not by the clock, since start-up time on a loaded CI machine varies more than
// the whole ingestion takes. `before_kill` runs first, while the child still ingests (it is
// stopped meanwhile, so it cannot finish). Returns the lines seen (fewer: the child ended).
int ingest_and_kill(const std::vector<std::string>& args, int kill_after,
                    const std::function<void()>& before_kill = nullptr) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  std::vector<std::string> argv_s = {test::cocom_binary(), "ingest", "--progress-lines"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(fds[1], 2);
    close(fds[0]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  int lines = 0;
  std::string pending;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (lines < kill_after && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fds[0], POLLIN, 0};
    if (poll(&pfd, 1, 100) <= 0) continue;
    char buf[512];
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;  // the child ended before that line
    pending.append(buf, size_t(n));
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1)) {
      if (pending.compare(0, 8, "ingest: ") == 0) ++lines;
    }
  }
  if (before_kill && lines >= kill_after) {
    // SIGSTOP holds the writer in the middle of its ingestion (lock held, WAL open) for as
    // long as the readers take, however slow the machine.
    kill(pid, SIGSTOP);
    before_kill();
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  close(fds[0]);
  return lines;
}

// A tiny random sentence-transformers retriever (mean pooling, normalised).
std::string make_retriever(const std::string& dir) {
  std::string r = dir + "/retriever";
  test::write_bytes(dir + "/bert.json",
                    R"({"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64,
                        "num_hidden_layers": 1, "num_attention_heads": 4,
                        "max_position_embeddings": 256})");
  int rc = 0;
  std::string out = run(
      "model init --arch bert --config " + dir + "/bert.json --out " + r + " --dtype fp32", &rc);
  EXPECT_EQ(rc, 0) << out;
  for (const char* f : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
    fs::copy_file(fx() + "/bert/tokenizer/" + f, r + "/" + f);
  }
  test::write_bytes(
      r + "/modules.json",
      R"([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])");
  fs::create_directories(r + "/1_Pooling");
  test::write_bytes(r + "/1_Pooling/config.json",
                    R"({"word_embedding_dimension": 32, "pooling_mode_cls_token": false,
                        "pooling_mode_mean_tokens": true})");
  return r;
}

}  // namespace

TEST(Store, IngestReingestReplaceRemoveAndSearch) {
  std::string dir = test::make_temp_dir("store");
  std::string corpus = make_corpus(dir);
  std::string db = dir + "/db";
  Json s = run_json("ingest --json --db " + db + " --model " + fx() + "/cocom " + corpus);
  EXPECT_EQ(s["added"], 4);
  EXPECT_EQ(s["unchanged"], 0);
  Json info = run_json("info --json --db " + db);
  EXPECT_EQ(info["documents"], 4);
  expect_parts_agree(info, false);
  EXPECT_EQ(info["embedding_shape"], Json({32, 64}));  // 128 tokens / x4, decoder width 64

  // Re-ingesting unchanged documents is a no-op; the model is remembered by the store.
  s = run_json("ingest --json --db " + db + " " + corpus);
  EXPECT_EQ(s["unchanged"], 4);
  EXPECT_EQ(s["added"], 0);

  // BM25 finds the passage with the distinctive words.
  Json hits =
      run_json("search --json --db " + db + " --mode bm25 'preservation of the copyright notice'");
  ASSERT_FALSE(hits["hits"].empty());
  EXPECT_NE(hits["hits"][0]["source"].get<std::string>().find("apache.md"), std::string::npos);
  EXPECT_EQ(hits["hits"][0]["title"], "Apache License");

  // A changed document replaces its passages.
  test::write_bytes(corpus + "/gpl.txt", "The GPL was changed: zanzibar appears now.");
  s = run_json("ingest --json --db " + db + " " + corpus);
  EXPECT_EQ(s["replaced"], 1);
  EXPECT_EQ(s["unchanged"], 3);
  hits = run_json("search --json --db " + db + " --mode bm25 zanzibar");
  ASSERT_EQ(hits["hits"].size(), 1u);
  hits = run_json("search --json --db " + db + " --mode bm25 'guarantees freedom'");
  for (const auto& h : hits["hits"])
    EXPECT_EQ(h["source"].get<std::string>().find("gpl.txt"), std::string::npos);
  expect_parts_agree(run_json("info --json --db " + db), false);

  // Remove by id and by source path.
  int rc = 0;
  std::string out = run("rm --db " + db + " faq-1 " + corpus + "/gpl.txt", &rc);
  EXPECT_EQ(rc, 0) << out;
  info = run_json("info --json --db " + db);
  EXPECT_EQ(info["documents"], 2);
  expect_parts_agree(info, false);
  out = run("rm --db " + db + " no-such-doc", &rc);
  EXPECT_EQ(rc, 1);
  // Dense search without a retriever is a clear error.
  out = run("search --db " + db + " --mode dense license", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("no dense retriever"), std::string::npos) << out;
}

// --weights on ingest: the decoder-compressor held in int8 (what a 7B checkpoint needs on a
// 24 GB machine) ingests the same documents; an unknown format is refused before any work.
TEST(Store, IngestWithInt8CompressorWeights) {
  std::string dir = test::make_temp_dir("store-int8");
  std::string corpus = make_corpus(dir);
  std::string db = dir + "/db";
  int rc = 0;
  std::string out =
      run("ingest --db " + db + " --weights q4 --model " + fx() + "/cocom " + corpus, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--weights"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(db)) << "a refused ingest must not create the store";
  Json s =
      run_json("ingest --json --weights int8 --db " + db + " --model " + fx() + "/cocom " + corpus);
  EXPECT_EQ(s["added"], 4);
  Json info = run_json("info --json --db " + db);
  EXPECT_EQ(info["documents"], 4);
  EXPECT_EQ(info["embedding_shape"], Json({32, 64}));
  Json hits =
      run_json("search --json --db " + db + " --mode bm25 'preservation of the copyright notice'");
  ASSERT_FALSE(hits["hits"].empty());
  EXPECT_EQ(hits["hits"][0]["title"], "Apache License");
}

TEST(Store, AnotherModelIsRefused) {
  std::string dir = test::make_temp_dir("store-fp");
  std::string corpus = make_corpus(dir);
  std::string db = dir + "/db";
  run_json("ingest --json --db " + db + " --model " + fx() + "/cocom " + corpus + "/gpl.txt");
  int rc = 0;
  std::string out = run("ingest --db " + db + " --model " + fx() + "/cocom-light " + corpus, &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("compressor"), std::string::npos) << out;
  Json info = run_json("info --json --db " + db);
  EXPECT_EQ(info["documents"], 1);  // nothing lost
}

TEST(Store, DenseAndHybridRetrieval) {
  std::string dir = test::make_temp_dir("store-dense");
  std::string corpus = make_corpus(dir);
  std::string r = make_retriever(dir);
  std::string db = dir + "/db";
  Json s = run_json("ingest --json --db " + db + " --model " + fx() + "/cocom --retriever " + r +
                    " --index HNSW32 " + corpus);
  EXPECT_EQ(s["added"], 4);
  Json info = run_json("info --json --db " + db);
  expect_parts_agree(info, true);
  EXPECT_EQ(info["index_factory"], "HNSW32");
  // A passage's own text is its nearest neighbour under the same encoder.
  Json hits = run_json("search --json --db " + db +
                       " --mode dense --k 3 'The program is distributed without any warranty.'");
  ASSERT_FALSE(hits["hits"].empty());
  EXPECT_EQ(hits["hits"][0]["document_id"], "faq-1");  // the same name as ask --json
  hits = run_json("search --json --db " + db + " --k 2 'patent license contributor'");
  EXPECT_EQ(hits["mode"], "hybrid");
  EXPECT_EQ(hits["hits"].size(), 2u);
  // The FAISS file is rebuilt when missing.
  fs::remove(db + "/dense.faiss");
  info = run_json("info --json --db " + db);
  expect_parts_agree(info, true);
}

TEST(Store, SigkillDuringIngestionLosesNothing) {
  std::string dir = test::make_temp_dir("store-crash");
  const int bulk = 80;
  std::string corpus = make_corpus(dir, bulk);
  std::string r = make_retriever(dir);
  std::string db = dir + "/db";
  std::mt19937 rng(1234);
  // CI runs 10 rounds; scripts/crash-loop.sh runs many more.
  const char* env_rounds = std::getenv("COCOM_CRASH_ROUNDS");
  const int rounds = env_rounds ? std::max(1, std::atoi(env_rounds)) : 10;
  const int total = bulk + 4;
  int partial = 0;
  for (int round = 0; round < rounds; ++round) {
    // The kill is timed by the child's own progress (one stderr line per finished document),
    // not by the clock: start-up time on a loaded CI machine varies more than the whole
    // ingestion takes.
    std::uniform_int_distribution<int> after(1, total - 2);
    const int kill_after = after(rng);
    const int lines = ingest_and_kill(
        {"--db", db, "--model", fx() + "/cocom", "--retriever", r, corpus}, kill_after);
    ASSERT_GE(lines, kill_after) << "round " << round << ": the ingestion stopped early";
    // After each kill the store opens, and its parts agree.
    Json info = run_json("info --json --db " + db);
    expect_parts_agree(info, true);
    if (info["documents"] > 0 && info["documents"] < total) ++partial;
  }
  std::printf("%d of %d kills landed in the middle of the ingestion\n", partial, rounds);
  // The first round kills a fresh store after at most total-2 of its documents.
  EXPECT_GE(partial, 1);
  // Re-running the ingestion finishes the job.
  Json s = run_json("ingest --json --db " + db + " " + corpus);
  Json info = run_json("info --json --db " + db);
  EXPECT_EQ(info["documents"], bulk + 4);
  expect_parts_agree(info, true);
  EXPECT_EQ(s["added"].get<int64_t>() + s["unchanged"].get<int64_t>(), bulk + 4);
}

// Another process reads a store while an ingestion holds it: search, info and ask fall back
// to a read-only view of what was committed; rm (a writer) is refused, naming the lock.
TEST(Store, ReadersInOtherProcessesDuringAnIngestion) {
  std::string dir = test::make_temp_dir("store-readers");
  std::string corpus = make_corpus(dir, 40);
  std::string r = make_retriever(dir);
  const std::string db = dir + "/db";
  bool checked = false;
  const int lines =
      ingest_and_kill({"--db", db, "--model", fx() + "/cocom", "--retriever", r, corpus}, 8, [&] {
        int rc = 0;
        std::string out = run("info --json --db " + db, &rc);
        ASSERT_EQ(rc, 0) << out;
        EXPECT_NE(out.find("being written by another process"), std::string::npos) << out;
        Json info = run_json("info --json --db " + db);
        EXPECT_GE(info["documents"].get<int64_t>(), 8) << info.dump();  // committed before
        EXPECT_LT(info["documents"].get<int64_t>(), 44) << info.dump();
        expect_parts_agree(info, true);
        out = run("search --k 3 --db " + db + " license", &rc);
        EXPECT_EQ(rc, 0) << out;
        Json hits = run_json("search --json --k 3 --db " + db + " license");
        EXPECT_FALSE(hits["hits"].empty()) << hits.dump();
        out = run("ask --db " + db + " --k 2 --max-new-tokens 3 'What is the license?'", &rc);
        EXPECT_EQ(rc, 0) << out;
        out = run("rm --db " + db + " faq-1", &rc);
        EXPECT_EQ(rc, 1) << out;
        EXPECT_NE(out.find("locked"), std::string::npos) << out;
        checked = true;
      });
  EXPECT_EQ(lines, 8);
  EXPECT_TRUE(checked);
  // The writer gone, the store opens for writing again, whole.
  Json info = run_json("info --json --db " + db);
  expect_parts_agree(info, true);
  int rc = 0;
  std::string out = run("rm --db " + db + " " + corpus + "/bulk0.txt", &rc);
  EXPECT_EQ(rc, 0) << out;
  fs::remove_all(dir);
}

// A long document is written in parts (here 4 passages each): a SIGKILL in the middle leaves
// no part of it visible, neither of a new document nor of a new version of one (the old
// version stays whole), and the next open deletes the orphaned parts.
std::string long_text(const std::string& word, int sentences) {
  std::string t;
  for (int i = 0; i < sentences; ++i) {
    t += "Sentence " + std::to_string(i) + " of the long record mentions " + word +
         " and the archive. ";
  }
  return t;
}

int64_t hits_for(const std::string& db, const std::string& word) {
  Json j = run_json("search --json --mode bm25 --k 50 --db " + db + " " + word);
  return static_cast<int64_t>(j["hits"].size());
}

TEST(Store, SigkillDuringALongDocumentLeavesNoPartOfIt) {
  std::string dir = test::make_temp_dir("store-long");
  std::string r = make_retriever(dir);
  const std::string db = dir + "/db", doc = dir + "/long.txt";
  const std::vector<std::string> args = {
      "--db", db, "--model", fx() + "/cocom", "--retriever", r, "--passages-per-batch", "4", doc};
  test::write_bytes(doc, long_text("quokka", 300));
  // CI kills twice per phase; scripts/crash-loop.sh many more times.
  const char* env_rounds = std::getenv("COCOM_CRASH_ROUNDS");
  const int rounds = env_rounds ? std::max(1, std::atoi(env_rounds)) : 2;
  std::mt19937 rng(4321);
  std::uniform_int_distribution<int> after_parts(1, 8);  // of about 12
  // Killed after some parts of a new document: nothing of it stays.
  for (int round = 0; round < rounds; ++round) {
    const int parts = after_parts(rng);
    ASSERT_EQ(ingest_and_kill(args, parts), parts);
    Json info = run_json("info --json --db " + db);
    EXPECT_EQ(info["documents"], 0) << info.dump();
    EXPECT_EQ(info["passages"], 0) << info.dump();  // the parts were deleted at open
    expect_parts_agree(info, true);
    EXPECT_EQ(hits_for(db, "quokka"), 0);
  }
  // Complete: one document of many passages, found.
  Json s = run_json("ingest --json --db " + db + " --passages-per-batch 4 " + doc);
  EXPECT_EQ(s["added"], 1);
  const int64_t v1 = s["passages"].get<int64_t>();
  EXPECT_GT(v1, 12);  // several parts
  // Closed cleanly, the store leaves no write-ahead log behind (memtables were flushed).
  for (const auto& f : fs::directory_iterator(db)) {
    if (f.path().extension() == ".log") {
      EXPECT_EQ(f.file_size(), 0u) << f.path();
    }
  }
  EXPECT_GT(hits_for(db, "quokka"), 0);
  // A new version killed in the middle: the old one stays whole, the new one invisible.
  test::write_bytes(doc, long_text("wombat", 300));
  for (int round = 0; round < rounds; ++round) {
    const int parts = after_parts(rng);
    ASSERT_EQ(ingest_and_kill(args, parts), parts);
    Json info = run_json("info --json --db " + db);
    EXPECT_EQ(info["documents"], 1) << info.dump();
    EXPECT_EQ(info["passages"], v1) << info.dump();
    expect_parts_agree(info, true);
    EXPECT_GT(hits_for(db, "quokka"), 0);
    EXPECT_EQ(hits_for(db, "wombat"), 0);
  }
  // Completed, the new version replaces the old at once; the old passages are deleted.
  s = run_json("ingest --json --db " + db + " --passages-per-batch 4 " + doc);
  EXPECT_EQ(s["replaced"], 1);
  Json info = run_json("info --json --db " + db);
  EXPECT_EQ(info["passages"], s["passages"]) << info.dump();
  expect_parts_agree(info, true);
  EXPECT_EQ(hits_for(db, "quokka"), 0);
  EXPECT_GT(hits_for(db, "wombat"), 0);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Sharded bulk ingestion (cocom ingest --shard I/N --export-sst DIR, cocom store import)

namespace {

// Every document, its passages (text, provenance), their context embeddings and retriever
// vectors, read straight from RocksDB; passage ids are left out (a shard numbers its own).
struct StoreRows {
  std::map<std::string, std::string> docs;  // id -> title|source|hash|passage count
  std::map<std::string, std::vector<float>> embeddings, vectors;  // "doc#index" -> values
  std::map<std::string, std::string> passages;                    // "doc#index" -> text|span
};

StoreRows read_rows(const std::string& db) {
  StoreRows r;
  auto s = storage::Store::open_existing(db);
  s->for_each_document([&](const storage::DocumentRecord& d) {
    r.docs[d.id] = d.title + "|" + d.source + "|" + d.content_hash + "|" +
                   std::to_string(d.passage_ids.size());
    for (uint64_t id : d.passage_ids) {
      auto p = s->get_passage(id);
      ASSERT_TRUE(p.has_value()) << db << " passage " << id;
      const std::string key = d.id + "#" + std::to_string(p->index);
      r.passages[key] = p->text + "|" + std::to_string(p->char_begin) + "-" +
                        std::to_string(p->char_end) + "|" + p->doc_id;
      r.embeddings[key] = s->get_embeddings(id).value_or(std::vector<float>{});
      r.vectors[key] = s->get_retriever_vector(id).value_or(std::vector<float>{});
    }
  });
  return r;
}

// Hits as (document, passage index, score), in rank order; ties (same score) sorted by
// document and index, since the two stores number their passages differently.
std::vector<std::string> ranked(const std::string& db, const std::string& mode,
                                const std::string& query) {
  Json j = run_json("search --json --k 100 --mode " + mode + " --db " + db + " '" + query + "'");
  std::vector<std::pair<double, std::string>> hits;
  for (const auto& h : j["hits"]) {
    hits.emplace_back(h["score"].get<double>(), h["document_id"].get<std::string>() + "#" +
                                                    std::to_string(h["index"].get<int64_t>()));
  }
  std::stable_sort(hits.begin(), hits.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<std::string> out;
  char buf[64];
  for (const auto& [score, key] : hits) {
    std::snprintf(buf, sizeof buf, "%.9g ", score);
    out.push_back(buf + key);
  }
  return out;
}

std::string shard_cmd(const std::string& corpus, const std::string& r, int i, int n,
                      const std::string& out, const std::string& extra = "") {
  return "ingest --json --shard " + std::to_string(i) + "/" + std::to_string(n) + " --export-sst " +
         out + " --model " + fx() + "/cocom --retriever " + r + " " + extra + " " + corpus;
}

// What a store holds, for "unchanged" checks: counts and every row.
std::string fingerprint_of(const std::string& db) {
  Json info = run_json("info --json --db " + db);
  StoreRows rows = read_rows(db);
  std::string s = info["documents"].dump() + info["passages"].dump() + info["embeddings"].dump() +
                  info["bm25_documents"].dump() + info["index_vectors"].dump();
  for (const auto& [k, v] : rows.docs) s += k + v;
  for (const auto& [k, v] : rows.passages) s += k + v;
  return s;
}

}  // namespace

// Three workers, each in its own process, ingest a third of a corpus into shards; imported
// into an empty store they give what one plain ingestion gives: the same documents,
// passages, embeddings and vectors (bit for bit), BM25 and dense results. Importing again
// changes nothing.
TEST(Shards, ThreeShardsImportedEqualOnePlainIngestion) {
  std::string dir = test::make_temp_dir("shards");
  std::string corpus = make_corpus(dir, 12);
  std::string r = make_retriever(dir);
  const std::string plain = dir + "/plain", merged = dir + "/merged";
  Json s = run_json("ingest --json --db " + plain + " --model " + fx() + "/cocom --retriever " + r +
                    " " + corpus);
  ASSERT_EQ(s["added"], 16) << s.dump();
  int64_t shard_docs = 0;
  for (int i = 0; i < 3; ++i) {
    const std::string out = dir + "/shard" + std::to_string(i);
    Json w = run_json(shard_cmd(corpus, r, i, 3, out));
    shard_docs += w["added"].get<int64_t>();
    EXPECT_TRUE(fs::exists(out + "/shard.json"));
    EXPECT_FALSE(fs::exists(out + "/work")) << "the worker's own store is removed";
    // Each worker took a part, not all: the hash spreads 16 documents over 3 shards.
    EXPECT_LT(w["added"].get<int64_t>(), 16) << w.dump();
  }
  EXPECT_EQ(shard_docs, 16);
  Json imp = run_json("store import --json --db " + merged + " " + dir + "/shard0 " + dir +
                      "/shard1 " + dir + "/shard2");
  EXPECT_EQ(imp["imported"].size(), 3u) << imp.dump();
  EXPECT_EQ(imp["documents"], 16) << imp.dump();
  Json a = run_json("info --json --db " + plain);
  Json b = run_json("info --json --db " + merged);
  for (const char* k : {"documents", "passages", "embeddings", "bm25_documents", "index_vectors",
                        "compressor_fingerprint", "embedding_dtype", "retriever_fingerprint"}) {
    EXPECT_EQ(a[k], b[k]) << k << "\n" << a.dump() << "\n" << b.dump();
  }
  expect_parts_agree(b, true);
  const StoreRows ra = read_rows(plain), rb = read_rows(merged);
  EXPECT_EQ(ra.docs, rb.docs);
  EXPECT_EQ(ra.passages, rb.passages);
  ASSERT_EQ(ra.embeddings.size(), rb.embeddings.size());
  for (const auto& [key, e] : ra.embeddings) {
    ASSERT_TRUE(rb.embeddings.count(key)) << key;
    const auto& f = rb.embeddings.at(key);
    ASSERT_EQ(e.size(), f.size()) << key;
    EXPECT_FALSE(e.empty()) << key;
    EXPECT_EQ(0, std::memcmp(e.data(), f.data(), e.size() * sizeof(float))) << key;
  }
  EXPECT_EQ(ra.vectors, rb.vectors);
  for (const char* q : {"license", "zebra3 license terms", "warranty patent recipient"}) {
    EXPECT_EQ(ranked(plain, "bm25", q), ranked(merged, "bm25", q)) << q;
    EXPECT_EQ(ranked(plain, "dense", q), ranked(merged, "dense", q)) << q;
    EXPECT_FALSE(ranked(merged, "bm25", q).empty()) << q;
  }
  // The same shards again: skipped, nothing changes.
  const std::string before = fingerprint_of(merged);
  imp = run_json("store import --json --db " + merged + " " + dir + "/shard0 " + dir + "/shard2 " +
                 dir + "/shard1");
  EXPECT_EQ(imp["imported"].size(), 0u) << imp.dump();
  EXPECT_EQ(imp["already_imported"].size(), 3u) << imp.dump();
  EXPECT_EQ(fingerprint_of(merged), before);
  // The merged store takes ordinary writes afterwards: a removal and a re-ingestion.
  int rc = 0;
  std::string out = run("rm --db " + merged + " faq-1", &rc);
  EXPECT_EQ(rc, 0) << out;
  s = run_json("ingest --json --db " + merged + " " + corpus);
  EXPECT_EQ(s["added"], 1) << s.dump();  // faq-1 back; the others unchanged
  EXPECT_EQ(s["unchanged"], 15) << s.dump();
  expect_parts_agree(run_json("info --json --db " + merged), true);
  fs::remove_all(dir);
}

// A shard made with another model or dtype, one holding documents the store has, and
// damaged or hostile shard directories are refused, naming what is wrong, and the store is
// left as it was.
TEST(Shards, MismatchedDamagedAndHostileShardsAreRefused) {
  std::string dir = test::make_temp_dir("shards-bad");
  std::string corpus = make_corpus(dir, 3);
  std::string r = make_retriever(dir);
  const std::string db = dir + "/db";
  run_json(shard_cmd(corpus, r, 0, 2, dir + "/s0"));
  run_json(shard_cmd(corpus, r, 1, 2, dir + "/s1"));
  Json imp = run_json("store import --json --db " + db + " " + dir + "/s0");
  ASSERT_EQ(imp["imported"].size(), 1u) << imp.dump();
  const std::string before = fingerprint_of(db);
  auto refused = [&](const std::string& shard, const std::vector<std::string>& words) {
    int rc = 0;
    std::string out = run("store import --db " + db + " " + shard, &rc);
    EXPECT_NE(rc, 0) << shard << "\n" << out;
    for (const auto& w : words) EXPECT_NE(out.find(w), std::string::npos) << w << "\n" << out;
    EXPECT_EQ(fingerprint_of(db), before) << shard;
  };
  // Another dtype: both values named.
  run_json(shard_cmd(corpus, r, 1, 2, dir + "/bf16", "--embedding-dtype bf16"));
  refused(dir + "/bf16", {"embedding dtype bf16", "holds fp16", dir + "/bf16"});
  // Another model (COCOM-light, whose small fixture BERT takes no 128-token passage: every
  // document is skipped, exit status 1, but the shard records the model it was made with).
  {
    std::string out;
    test::run_command(test::cocom_binary() + " ingest --json --shard 1/2 --export-sst " + dir +
                          "/light --model " + fx() + "/cocom-light --retriever " + r + " " + corpus,
                      &out);
    ASSERT_TRUE(fs::exists(dir + "/light/shard.json")) << out;
  }
  refused(dir + "/light", {"model fingerprint", "the store at"});
  // Documents the store holds already (the same shard made again into another directory
  // would be the same shard: skipped; a shard of another split overlaps instead).
  run_json(shard_cmd(corpus, r, 0, 1, dir + "/all"));
  refused(dir + "/all", {"is in the store at", "already"});
  // A flipped byte in an SST file.
  fs::copy(dir + "/s1", dir + "/flip", fs::copy_options::recursive);
  {
    std::string path = dir + "/flip/passages.sst";
    FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 40, SEEK_SET);
    int c = std::fgetc(f);
    std::fseek(f, 40, SEEK_SET);
    std::fputc(c ^ 0x55, f);
    std::fclose(f);
  }
  refused(dir + "/flip", {"checksum", "passages.sst"});
  // shard.json naming a file outside the shard directory.
  fs::copy(dir + "/s1", dir + "/escape", fs::copy_options::recursive);
  {
    Json j = read_json_file(dir + "/escape/shard.json");
    j["files"][0]["file"] = "../s0/documents.sst";
    write_json_file(dir + "/escape/shard.json", j);
  }
  refused(dir + "/escape", {"not a plain name"});
  // shard.json whose passage id range does not hold the passages.
  fs::copy(dir + "/s1", dir + "/range", fs::copy_options::recursive);
  {
    Json j = read_json_file(dir + "/range/shard.json");
    j["passage_ids"][0] = j["passage_ids"][0].get<uint64_t>() + 1;
    write_json_file(dir + "/range/shard.json", j);
  }
  refused(dir + "/range", {"outside the shard's passage ids"});
  // A column family a shard may not carry (the manifest: its counters and markers).
  fs::copy(dir + "/s1", dir + "/manifest", fs::copy_options::recursive);
  {
    Json j = read_json_file(dir + "/manifest/shard.json");
    j["files"][0]["cf"] = "manifest";
    write_json_file(dir + "/manifest/shard.json", j);
  }
  refused(dir + "/manifest", {"column family 'manifest'"});
  // No shard.json (an export that did not finish), and no directory at all.
  fs::create_directories(dir + "/empty");
  refused(dir + "/empty", {"no shard.json"});
  refused(dir + "/nowhere", {"no such directory"});
  // One bad shard among good ones: nothing is imported.
  refused(dir + "/s1 " + dir + "/flip", {"checksum"});
  // The good one still goes in afterwards.
  imp = run_json("store import --json --db " + db + " " + dir + "/s1");
  EXPECT_EQ(imp["imported"].size(), 1u) << imp.dump();
  EXPECT_EQ(run_json("info --json --db " + db)["documents"], 7);
  // Worker flags: --shard without --export-sst, a bad I/N, --db beside --export-sst.
  int rc = 0;
  std::string out = run("ingest --shard 0/2 " + corpus, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("go together"), std::string::npos) << out;
  out = run("ingest --shard 2/2 --export-sst " + dir + "/x " + corpus, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("0 <= I < N"), std::string::npos) << out;
  out = run("ingest --shard 1/x --export-sst " + dir + "/x " + corpus, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("expected I/N"), std::string::npos) << out;
  out = run("ingest --db " + db + " --shard 0/2 --export-sst " + dir + "/x " + corpus, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("writes no store"), std::string::npos) << out;
  out = run("ingest --shard 0/2 --export-sst " + dir + "/s0 " + corpus, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("finished shard already"), std::string::npos) << out;
  fs::remove_all(dir);
}

// SIGKILL at any moment of an import leaves the store as before (empty or absent) or as
// after (every shard), its parts agreeing; importing again then finishes the job.
TEST(Shards, SigkillDuringImportLeavesTheStoreBeforeOrAfter) {
  std::string dir = test::make_temp_dir("shards-kill");
  std::string corpus = make_corpus(dir, 30);
  std::string r = make_retriever(dir);
  std::string shards;
  for (int i = 0; i < 3; ++i) {
    run_json(shard_cmd(corpus, r, i, 3, dir + "/s" + std::to_string(i)));
    shards += " " + dir + "/s" + std::to_string(i);
  }
  // How long a whole import takes here, to spread the kills over it.
  const auto t0 = std::chrono::steady_clock::now();
  run_json("store import --json --db " + dir + "/timing" + shards);
  const double whole_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const char* env_rounds = std::getenv("COCOM_CRASH_ROUNDS");
  const int rounds = env_rounds ? std::max(1, std::atoi(env_rounds)) : 6;
  std::mt19937 rng(99);
  // From the start-up (the shards are read and checked) past the end (the store complete).
  std::uniform_real_distribution<double> when(0.3 * whole_ms, 1.2 * whole_ms);
  int before = 0, after = 0;
  for (int round = 0; round < rounds; ++round) {
    const std::string db = dir + "/db" + std::to_string(round);
    std::vector<std::string> argv_s = {test::cocom_binary(), "store", "import", "--db", db};
    for (int i = 0; i < 3; ++i) argv_s.push_back(dir + "/s" + std::to_string(i));
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int devnull = ::open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(int64_t(when(rng) * 1000)));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    int rc = 0;
    std::string out = run("info --json --db " + db + " 2>/dev/null", &rc);
    if (rc != 0) {  // killed before the store was created
      EXPECT_TRUE(out.find("no cocom store") != std::string::npos ||
                  out.find("no such store") != std::string::npos)
          << out;
      ++before;
      continue;
    }
    Json info = parse_json_text(out, "info");
    const int64_t docs = info["documents"].get<int64_t>();
    EXPECT_TRUE(docs == 0 || docs == 34) << "round " << round << ": " << info.dump();
    expect_parts_agree(info, true);
    (docs == 0 ? before : after) += 1;
    Json imp = run_json("store import --json --db " + db + shards);
    EXPECT_EQ(imp["imported"].size() + imp["already_imported"].size(), 3u) << imp.dump();
    info = run_json("info --json --db " + db);
    EXPECT_EQ(info["documents"], 34) << info.dump();
    expect_parts_agree(info, true);
  }
  std::printf("kills: %d left the store as before, %d as after\n", before, after);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Read-only replicas

namespace {

// `cocom console --read-only` in a child process, questions and commands on a pipe.
class Replica {
 public:
  explicit Replica(const std::string& db) {
    // Close-on-exec: the other children (the primary, the other replica) must not hold this
    // console's stdin open, or closing it would never end the console.
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return;
    std::vector<std::string> argv_s = {
        test::cocom_binary(), "console", "--read-only", "--db", db, "--k", "2", "--mode", "bm25",
        "--max-new-tokens",   "3"};
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(out[1], 2);
      close(in[1]);
      close(out[0]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~Replica() {
    if (to_ >= 0) close(to_);
    if (pid_ > 0) {
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    if (from_ >= 0) close(from_);
  }
  // The store's document count as this replica answers it now (:stats), -1 on failure.
  int64_t documents() {
    if (!send(":stats\n")) return -1;
    const std::string text = read_until("\nindex ");
    const size_t at = text.rfind("documents ");
    if (at == std::string::npos) return -1;
    return std::atoll(text.c_str() + at + 10);
  }
  // Asks a question; returns what the console printed up to its timing line.
  std::string ask(const std::string& q) {
    if (!send(q + "\n")) return "";
    return read_until("tokens/s");
  }
  // Closes stdin; returns the exit status.
  int finish() {
    close(to_);
    to_ = -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  bool send(const std::string& s) {
    return to_ >= 0 && write(to_, s.data(), s.size()) == static_cast<ssize_t>(s.size());
  }
  std::string read_until(const std::string& marker) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      const size_t at = buf_.find(marker);
      if (at != std::string::npos) {
        const size_t end = buf_.find('\n', at + 1);
        if (end != std::string::npos) {
          std::string text = buf_.substr(0, end + 1);
          buf_.erase(0, end + 1);
          return text;
        }
      }
      pollfd pfd{from_, POLLIN, 0};
      if (poll(&pfd, 1, 100) <= 0) continue;
      char b[4096];
      const ssize_t n = read(from_, b, sizeof b);
      if (n <= 0) break;
      buf_.append(b, size_t(n));
    }
    std::string text = buf_;
    buf_.clear();
    return text;
  }
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buf_;
};

}  // namespace

// A primary ingests while two replica processes (cocom console --read-only) answer: each
// sees every document the primary had committed when it was asked (the primary is held
// still at two points of its ingestion to make "committed" exact), never a partial one,
// and everything once the primary is done, without being reopened.
TEST(Replicas, TwoReplicasFollowAPrimaryThatIngests) {
  std::string dir = test::make_temp_dir("replicas");
  std::string base = make_corpus(dir, 0);  // 4 documents first
  std::string r = make_retriever(dir);
  const std::string db = dir + "/db";
  Json s = run_json("ingest --json --db " + db + " --model " + fx() + "/cocom --retriever " + r +
                    " " + base);
  ASSERT_EQ(s["added"], 4);
  Replica a(db), b(db);
  ASSERT_EQ(a.documents(), 4);
  ASSERT_EQ(b.documents(), 4);
  // 30 more documents, ingested by the primary in another process.
  std::string more = dir + "/more";
  fs::create_directories(more);
  // Named so that the primary (which walks a directory in name order) takes them in order.
  auto name = [](int i) { return std::string(i < 10 ? "0" : "") + std::to_string(i); };
  for (int i = 0; i < 30; ++i) {
    test::write_bytes(
        more + "/m" + name(i) + ".txt",
        "Record " + name(i) + " describes the numbat" + name(i) + " colony and its burrows.");
  }
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  std::vector<std::string> argv_s = {
      test::cocom_binary(), "ingest", "--progress-lines", "--db", db, more};
  std::vector<char*> argv;
  for (auto& x : argv_s) argv.push_back(x.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(fds[1], 2);
    close(fds[0]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  // Holds the primary after `target` progress lines (documents committed), checks both
  // replicas, lets it go on.
  int lines = 0;
  std::string pending;
  int64_t last_a = 4, last_b = 4;
  for (int target : {6, 18}) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    while (lines < target) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the primary is stuck";
      pollfd pfd{fds[0], POLLIN, 0};
      if (poll(&pfd, 1, 100) <= 0) continue;
      char buf[512];
      ssize_t n = read(fds[0], buf, sizeof buf);
      ASSERT_GT(n, 0) << "the primary ended early after " << lines << " documents";
      pending.append(buf, size_t(n));
      for (size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1)) {
        if (pending.compare(0, 8, "ingest: ") == 0) ++lines;
      }
    }
    kill(pid, SIGSTOP);
    const int64_t da = a.documents(), db_ = b.documents();
    EXPECT_GE(da, 4 + lines) << "replica a is behind what was committed";
    EXPECT_GE(db_, 4 + lines) << "replica b is behind what was committed";
    EXPECT_LE(da, 34);
    EXPECT_GE(da, last_a);  // never goes back
    EXPECT_GE(db_, last_b);
    last_a = da;
    last_b = db_;
    // They answer meanwhile, from what they see (the last committed record is found).
    const std::string last = "numbat" + name(lines - 1);
    const std::string answer = a.ask("What describes the " + last + " colony?");
    EXPECT_NE(answer.find(last), std::string::npos) << answer;
    kill(pid, SIGCONT);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(fds[0]);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Done: both see all of it, without reopening.
  EXPECT_EQ(a.documents(), 34);
  EXPECT_EQ(b.documents(), 34);
  const std::string answer = b.ask("What describes the numbat29 colony?");
  EXPECT_NE(answer.find("numbat29"), std::string::npos) << answer;
  EXPECT_EQ(a.finish(), 0);
  EXPECT_EQ(b.finish(), 0);
  // The replicas wrote nothing: the store opens for writing, whole.
  Json info = run_json("info --json --db " + db);
  EXPECT_EQ(info["documents"], 34);
  expect_parts_agree(info, true);
  fs::remove_all(dir);
}
