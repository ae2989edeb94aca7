// `cocom serve`: collections (stores) over HTTP in the OpenAI format, with a web page
// (docs/server.md). Built on the public API only: one Model per checkpoint shared by the
// Engines of its stores, continuous batching in the Model (ModelOptions::max_batch).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cocom/cocom.h"

namespace cocom::serve {

struct ServeOptions {
  std::vector<std::pair<std::string, std::string>> collections;  // name, store directory
  std::string host = "127.0.0.1";
  int port = 8080;            // 0: any free port
  std::string api_keys_file;  // empty: open server (loopback only)
  int max_queue = 64;         // answers admitted at once (waiting or decoding); more: 429
  int max_batch = 8;          // answers per decoder step
  int max_jobs = 16;          // ingestion jobs queued per collection; more: 429
  WeightFormat weights = WeightFormat::kFp32;
  int threads = 0;
  int64_t prompt_memory_mb = 8192;  // ModelOptions::prompt_memory_mb
  std::string decoder_tokenizer, compressor_tokenizer;
  size_t max_body_bytes = size_t(64) << 20;
  int max_tokens = 4096;  // the largest max_tokens a request may ask
  size_t top_k = 5;
  bool web = true;  // serve the page at /
  // Replicas: every store is opened as a RocksDB secondary (Options::read_only), catches up
  // with its writer before each request and is never written; ingestion and removal get 403.
  bool read_only = false;
  double shutdown_grace_seconds = 5;  // answers in flight may finish this long after a stop
  std::function<void(const std::string&)> print;  // start-up lines (stdout); null = none
};

class Server {
 public:
  // Opens every collection (they must exist) and one Model per checkpoint. Fails with a
  // Status naming the collection, directory or option at fault.
  static Status Create(const ServeOptions& options, std::unique_ptr<Server>* server);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port (port 0: any free one) and returns the port bound.
  Result<int> Bind();
  // Serves until Stop(); then waits for the answers in flight (cancelled after the grace
  // period) and the ingestion jobs (stopped after their current document).
  Status Serve();
  // Thread-safe; returns at once.
  void Stop();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cocom::serve
