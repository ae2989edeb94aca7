// `cocom bench store`: ingestion throughput of the compressor + store path for two
// random-weight COCOM checkpoints (COCOM-light at BERT-base size, COCOM at TinyLlama size),
// and search latency at scale (FAISS Flat / HNSW32 over random vectors, BM25 over RocksDB
// postings of synthetic passages). Prints numbers; never fails on time.
#pragma once

#include <cstdint>
#include <string>

namespace cocom::bench {

struct StoreBenchOptions {
  std::string what = "ingest,search";  // comma list: ingest, search, import
  int64_t passages = 100000;           // stored passages for the search part
  int64_t dim = 768;                   // retriever dimension (dense search)
  std::string factories =
      "Flat,HNSW32";  // FAISS indexes to time (comma list; Flat first for recall)
  int64_t queries = 200;
  int64_t ingest_passages = 64;     // synthetic passages per checkpoint (ingestion part)
  int64_t import_passages = 20000;  // passages of the import part (shard merge vs write path)
  uint64_t seed = 0;
  bool json = false;
  std::string keep_dir;  // work directory to keep (checkpoints are reused when present)
  std::string device = "cpu";
};

int run_store_bench(const StoreBenchOptions& opt);

}  // namespace cocom::bench
