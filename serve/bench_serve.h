// `cocom bench serve`: answers/s and latency of `cocom serve` under 1..N concurrent clients,
// compressed and uncompressed, in one run. The server is the real one (serve::Server on a
// loopback port, in this process); the clients are HTTP clients on their own threads.
#pragma once

#include <string>
#include <vector>

#include "cocom/cocom.h"

namespace cocom::serve {

struct ServeBenchOptions {
  std::string db;  // the store (collection) to ask
  std::vector<int> clients = {1, 2, 4, 8};
  int questions = 16;  // answers per (mode, client count)
  int max_new_tokens = 32;
  int max_batch = 8;
  WeightFormat weights = WeightFormat::kFp32;
  bool compressed = true, uncompressed = true;
  std::string question_file;      // one question per line; default: from the store
  std::string topic = "package";  // search query whose hits' titles make the questions
  size_t k = 5;
  int threads = 0;
  bool json = false;
};

int run_serve_bench(const ServeBenchOptions& options);

}  // namespace cocom::serve
