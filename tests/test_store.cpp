// The knowledge store end to end through the `cocom` binary: ingest, re-ingest, replace,
// remove, search (BM25, dense, hybrid), fingerprint checks, and SIGKILL during ingestion.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/json_util.h"
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
