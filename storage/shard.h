// Shards: the rows of some documents made by a worker of a sharded bulk ingestion (`cocom
// ingest --shard I/N --export-sst DIR`), as RocksDB SST files, one per column family of the
// store, and `shard.json` describing them. Store::import_shards links them into a store with
// IngestExternalFiles. Torch-free; RocksDB stays out of this header.
//
// DIR/shard.json: {"format": "cocom-shard", "version": 1, "shard": {"index": I, "count": N},
//   "manifest": {the store manifest the worker made its embeddings with},
//   "passage_ids": [first, last] (inclusive; empty shard: absent),
//   "files": [{"cf": COLUMN_FAMILY, "file": "COLUMN_FAMILY.sst", "bytes": B, "xxh3": HEX}...]}
// Written last (temporary file + rename): a directory without it holds no finished shard.
//
// Passage ids: a shard's passages carry their final ids (an SST file is linked as it is, never
// rewritten). Worker I of a run of N numbers its passages from
//   2^62 + (R mod 2^20) * 2^42 + I * 2^32,
// R a hash of every input document of the run (ids and content hashes; every worker reads
// the same list), so the shards of one run never collide with each other, nor with the
// ids an ordinary ingestion hands out (from 0 up). Shards of two runs share a range with
// probability 2^-20; the import refuses a shard whose range holds a passage already stored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "storage/store.h"

namespace cocom::storage {

constexpr uint64_t kShardIdBase = uint64_t{1} << 62;
constexpr int64_t kMaxShards = 1024;                           // 2^10 workers per run
constexpr uint64_t kShardIdSpan = uint64_t{1} << 32;           // passages per shard at most
constexpr uint64_t kShardRunSpan = kShardIdSpan << 10;         // one run's ranges (2^42)
constexpr uint64_t kShardRuns = kShardIdBase / kShardRunSpan;  // 2^20

// The first passage id of shard `index` of a run whose input hashes to `run_hash`.
uint64_t shard_first_passage_id(uint64_t run_hash, int64_t index);
// Which shard of `count` a document belongs to (a hash of its id).
int64_t shard_of_document(const std::string& doc_id, int64_t count);

// One SST file of a shard, as validated.
struct ShardFile {
  std::string cf;    // the column family it goes to
  std::string path;  // absolute
  uint64_t entries = 0;
};

// A shard read back and checked row by row (read_shard).
struct ShardContents {
  std::string dir;
  std::string id;  // hash of the manifest and the files' checksums: same shard = same id
  int64_t index = 0, count = 1;
  Manifest manifest;
  StoreStats counts;  // documents, passages, embeddings, bm25_documents, total_terms
  uint64_t first_id = 0, last_id = 0;  // passage id range (counts.passages == 0: none)
  std::vector<std::string> document_ids;
  std::vector<ShardFile> files;
};

// Reads DIR/shard.json and every SST file it names, and checks everything a store relies
// on: file names, sizes and checksums; only plain values (no deletions, merges or range
// deletions: an SST linked into a store must not erase its rows); every key of the right
// form and inside the shard's passage id range; every document's passages present and its
// own; every passage's embeddings ([n, H] of the manifest), retriever vector (its dim),
// length and postings present, and nothing else. Throws cocom::Error (corruption) naming
// the file and the row at fault.
ShardContents read_shard(const std::string& dir);

}  // namespace cocom::storage
