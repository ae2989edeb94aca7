// cocom serve: the HTTP service (serve/, docs/server.md).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "common/error.h"
#include "serve/bench_serve.h"
#include "serve/server.h"
#include "tools/commands.h"

namespace cocom::cli {

namespace {
int g_signal_pipe[2] = {-1, -1};
std::atomic<int> g_signals{0};

void on_stop_signal(int sig) {
  if (g_signals.fetch_add(1) > 0) std::_Exit(128 + sig);
  const unsigned char b = static_cast<unsigned char>(sig);
  ssize_t n = write(g_signal_pipe[1], &b, 1);
  (void)n;
}
}  // namespace

int cmd_serve(const GlobalOptions& g, const ServeArgs& a) {
  serve::ServeOptions o;
  for (const auto& spec : a.dbs) {
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
      fail("--db ", spec, ": expected NAME=DIR (the collection name clients use, and the store)");
    }
    o.collections.emplace_back(spec.substr(0, eq), spec.substr(eq + 1));
  }
  o.host = a.host;
  o.port = a.port;
  o.api_keys_file = a.api_keys;
  o.max_queue = a.max_queue;
  o.max_batch = a.max_batch;
  o.max_jobs = a.max_jobs;
  o.weights = weights_flag(a.weights);
  o.threads = g.threads;
  o.prompt_memory_mb = a.prompt_memory_mb;
  o.decoder_tokenizer = a.decoder_tokenizer;
  o.compressor_tokenizer = a.compressor_tokenizer;
  if (a.max_body_mb < 1 || a.max_body_mb > 4096)
    fail("--max-body-mb ", a.max_body_mb, ": must be 1..4096");
  o.max_body_bytes = size_t(a.max_body_mb) << 20;
  if (a.k < 1 || a.k > 50) fail("--k ", a.k, ": must be 1..50");
  o.top_k = size_t(a.k);
  o.web = !a.no_web;
  o.read_only = a.read_only;
  o.shutdown_grace_seconds = a.grace;
  o.print = [](const std::string& line) {
    std::cout << line << std::endl;  // flushed: scripts wait for the URL line
  };

  std::unique_ptr<serve::Server> server;
  Status st = serve::Server::Create(o, &server);
  if (!st.ok()) fail("serve: ", st.message());
  Result<int> port = server->Bind();
  if (!port.ok()) fail("serve: ", port.status().message());

  // SIGINT/SIGTERM (delivered to whichever thread) write their number to a pipe; one thread
  // reads it and stops the server. A second signal ends the process at once.
  if (pipe(g_signal_pipe) != 0) fail("serve: pipe: ", std::strerror(errno));
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread signals([&server] {
    unsigned char sig = 0;
    while (read(g_signal_pipe[0], &sig, 1) != 1) {
    }
    std::cout << "cocom serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
              << ": stopping (answers in flight get a few seconds, ingestion stops after its "
                 "current document)"
              << std::endl;
    server->Stop();
  });
  signals.detach();
  st = server->Serve();
  server.reset();  // stores closed
  if (!st.ok()) fail("serve: ", st.message());
  std::cout << "cocom serve: stopped" << std::endl;
  return 0;
}

void add_serve_command(CLI::App& app, const GlobalOptions& g, ServeArgs& a, int& rc) {
  auto* c = app.add_subcommand(
      "serve",
      "serve collections (stores) over HTTP: OpenAI-compatible chat completions answered from "
      "stored context embeddings, search, ingestion jobs, metrics and a web page (docs/server.md)");
  c->add_option("--db", a.dbs, "NAME=DIR: a collection (repeatable; the store must exist)")
      ->required();
  c->add_option("--host", a.host, "address to bind (an open server binds only loopback)")
      ->capture_default_str();
  c->add_option("--port", a.port, "port (0 = any free port; the URL is printed)")
      ->capture_default_str();
  c->add_option("--api-keys", a.api_keys,
                "JSON file {\"keys\": {\"KEY\": [\"collection\", ...]}}: keys and the collections "
                "each may read and write (\"*\" = all); without it the server is open");
  c->add_option("--max-queue", a.max_queue, "answers in flight at most; more get 429")
      ->capture_default_str();
  c->add_option("--max-batch", a.max_batch,
                "answers decoded together per decoder step (continuous batching)")
      ->capture_default_str();
  c->add_option("--max-jobs", a.max_jobs, "ingestion jobs queued per collection at most")
      ->capture_default_str();
  c->add_option("--max-body-mb", a.max_body_mb, "largest request body in MiB (more: 413)")
      ->capture_default_str();
  c->add_option("--k", a.k, "passages per question unless a request says (k)")
      ->capture_default_str();
  c->add_option("--weights", a.weights, "decoder weights in memory: fp32, bf16, int8 or int8g")
      ->capture_default_str();
  c->add_option("--decoder-tokenizer", a.decoder_tokenizer, "base decoder directory");
  c->add_option("--compressor-tokenizer", a.compressor_tokenizer, "compressor tokenizer directory");
  c->add_option("--grace", a.grace,
                "seconds answers in flight may run on after SIGINT/SIGTERM before they are "
                "cancelled")
      ->capture_default_str();
  c->add_option("--prompt-memory-mb", a.prompt_memory_mb,
                "the most memory (MB) one answer's prompt may take: longer prompts (question + "
                "k passages) are refused with 400, naming the largest k that fits")
      ->capture_default_str();
  c->add_flag("--no-web", a.no_web, "do not serve the web page at /");
  c->add_flag("--read-only", a.read_only,
              "serve the stores as replicas: opened without their lock while another process "
              "writes them, caught up before each request, never written (ingestion and "
              "removal get 403)");
  c->callback([&] { rc = cmd_serve(g, a); });
}

void add_bench_serve_command(CLI::App& bench, const GlobalOptions& g, int& rc) {
  static serve::ServeBenchOptions o;
  static std::string weights = "fp32";
  static bool no_compress = false, compressed_only = false;
  auto* c = bench.add_subcommand(
      "serve",
      "answers/s and p50/p95 latency of `cocom serve` (in this process, on a loopback port) "
      "with 1..N concurrent HTTP clients, compressed and uncompressed in one run");
  c->add_option("--db", o.db, "the store to ask")->required();
  c->add_option("--clients", o.clients, "client counts (comma list)")
      ->delimiter(',')
      ->capture_default_str();
  c->add_option("--questions", o.questions, "answers per client count and mode")
      ->capture_default_str();
  c->add_option("--max-new-tokens", o.max_new_tokens, "max_tokens of every request")
      ->capture_default_str();
  c->add_option("--max-batch", o.max_batch, "the server's --max-batch")->capture_default_str();
  c->add_option("--k", o.k, "passages per question")->capture_default_str();
  c->add_option("--weights", weights, "decoder weights: fp32, bf16, int8 or int8g")
      ->capture_default_str();
  c->add_option("--question-file", o.question_file,
                "questions, one per line (default: 'What is the homepage of TITLE?' for the "
                "titles of the passages that match --topic)");
  c->add_option("--topic", o.topic, "search query that picks the passages questions are about")
      ->capture_default_str();
  c->add_flag("--no-compress", no_compress, "measure the uncompressed baseline only");
  c->add_flag("--compressed-only", compressed_only, "measure answers from embeddings only");
  c->add_flag("--json", o.json, "print one JSON object (progress on stderr)");
  c->callback([&g, &rc] {
    o.weights = weights_flag(weights);
    o.threads = g.threads;
    if (no_compress && compressed_only)
      fail("--no-compress and --compressed-only exclude each other");
    o.compressed = !no_compress;
    o.uncompressed = !compressed_only;
    rc = serve::run_serve_bench(o);
  });
}

}  // namespace cocom::cli
