// The knowledge store: RocksDB is the single source of truth for documents, passages (text
// + provenance), context embeddings, BM25 postings (scored in index/bm25.h) and the manifest.
// Torch-free; the only third-party dependency is RocksDB (kept out of this header).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "storage/codec.h"

namespace cocom::storage {

constexpr int kSchemaVersion = 1;

// What the stored embeddings and postings were made with. Opening a store with a different
// compressor or retriever fingerprint is an error (no silent mixing).
struct Manifest {
  int schema_version = kSchemaVersion;
  std::string compressor_fingerprint;  // identifies the COCOM checkpoint that made the embeddings
  int64_t compr_rate = 0;
  int64_t embeddings_per_passage = 0;  // n
  int64_t embedding_dim = 0;           // H
  EmbeddingDType embedding_dtype = EmbeddingDType::F16;
  std::string retriever_fingerprint;  // empty = no dense retriever (BM25 only)
  int64_t retriever_dim = 0;
  std::string index_factory = "Flat";
  // The BM25 analyzer (index::analyze), fixed when the store is created: "words",
  // "snowball:<language>"; "" in stores made before it was recorded (read as "words").
  std::string analyzer;

  // The store's settings, fixed when it is created; the engine refuses an open that asks for
  // other values. Stores made before they were kept here read as unknown (0, -1, false,
  // empty) until the engine fills them in (set_settings).
  int64_t context_max_length = 0;            // compressor tokens per passage
  int64_t chunk_overlap_tokens = -1;         // tokens repeated between consecutive passages
  bool has_prefixes = false;                 // query_prefix / passage_prefix are known
  std::string query_prefix, passage_prefix;  // the retriever's prompt prefixes
  std::string ingest_weights;  // decoder weight format that made the embeddings ("" = none yet)
  // Where the checkpoint and the retriever were last found (hints: identity is the
  // fingerprints; a moved checkpoint is accepted when its fingerprint matches).
  std::string model_dir, retriever_dir;
};

struct DocumentRecord {
  std::string id;      // caller-chosen, unique (e.g. the source path, or a jsonl "id")
  std::string source;  // file path it came from
  std::string title;
  std::string content_hash;           // hex digest of the document's text + title
  std::string meta_json;              // other fields, as a JSON object text
  std::vector<uint64_t> passage_ids;  // filled by the store on put
};

struct PassageRecord {
  uint64_t id = 0;  // assigned by the store (dense, never reused), = the FAISS id
  std::string doc_id;
  int64_t index = 0;                     // position within its document
  std::string text;                      // the passage as compressed ("Title. text")
  int64_t char_begin = 0, char_end = 0;  // span in the document text
};

// One passage to add: its text, its context embeddings [n * H] row-major fp32 (converted to
// the store's dtype), its retriever vector (may be empty), and its BM25 terms.
struct NewPassage {
  PassageRecord record;  // id is ignored (assigned)
  std::vector<float> embeddings;
  std::vector<float> retriever_vector;
  std::vector<std::string> terms;  // analysed tokens (index::analyze), for BM25
};

struct StoreStats {
  int64_t documents = 0, passages = 0, embeddings = 0, bm25_documents = 0;
  int64_t total_terms = 0;  // sum of passage lengths (BM25 avgdl = total_terms / bm25_documents)
  uint64_t next_passage_id = 0;
};

// One passage in the postings of a term.
struct Posting {
  uint64_t passage_id = 0;
  uint32_t tf = 0;      // occurrences of the term in the passage
  uint32_t length = 0;  // the passage's length in terms (0 if its length record is missing)
};

// The postings of one term: every passage that contains it, by increasing passage id.
struct TermPostings {
  std::string term;
  int64_t df = 0;  // document frequency: passages containing the term (= postings.size())
  std::vector<Posting> postings;
};

// What lexical scoring reads (index/bm25.h), all under one snapshot: the counters (N =
// stats.bm25_documents, the sum of lengths = stats.total_terms) and the postings of the terms
// asked for, in the order asked (an empty term, or one with a NUL byte, has none).
struct PostingsSnapshot {
  StoreStats stats;
  std::vector<TermPostings> terms;
};

struct ShardContents;  // storage/shard.h

// What Store::import_shards did.
struct ImportResult {
  std::vector<std::string> imported;  // shard directories linked in
  std::vector<std::string> already;   // shard directories this store had imported before
  int64_t documents = 0, passages = 0;
};

class Store {
 public:
  // Opens or creates the store at `path` (a directory). A new store takes `manifest`; an
  // existing one must match it (schema version, compressor and retriever fingerprints,
  // embedding shape): otherwise throws cocom::Error naming the field, both values and the
  // path. Fields of `manifest` left empty/zero are not checked and take the stored value.
  // A `manifest` with schema_version 0 checks nothing and creates nothing: it opens an
  // existing database to read what it holds (manifest().schema_version is then 0 for a
  // database whose creation was cut off before its manifest was written).
  static std::unique_ptr<Store> open(const std::string& path, const Manifest& manifest);
  // Opens an existing store for reading only, without its lock, so it works while another
  // process writes it (a RocksDB secondary instance): it sees what was committed when it
  // opened, or at its last catch_up() (a document written in parts only once complete),
  // checks `manifest` like open(), and every write fails. Crash leftovers are left for the
  // next open() to finish.
  static std::unique_ptr<Store> open_reader(const std::string& path, const Manifest& manifest);
  bool read_only() const;
  // A reader: moves its view to what the writer has committed since (RocksDB's
  // TryCatchUpWithPrimary: it tails the writer's MANIFEST and write-ahead log, no copy),
  // re-reading the manifest and the counters. Returns true when the store changed. Must not
  // run concurrently with reads of this Store (the engine holds its lock exclusively).
  // A writer: returns false.
  bool catch_up();
  // Opens an existing store read-only-ish for inspection (no manifest check).
  static std::unique_ptr<Store> open_existing(const std::string& path);
  ~Store();

  Manifest manifest() const;  // a copy: the settings part may change (set_settings)
  // Fails (naming the field, the stored and the wanted value) when `wanted` disagrees with the
  // stored manifest on a field it sets (fingerprints, rate, shape, dtype, retriever).
  void check(const Manifest& wanted) const;
  // Replaces the settings part of the manifest (context length .. retriever_dir; never the
  // fingerprints, shape or dtype), durably.
  void set_settings(const Manifest& settings);
  const std::string& path() const;
  // Identity changes: only while the store is not yet shared with other threads (readers use
  // the identity fields without a lock), as KnowledgeStore::open does. Durable (sync).
  // The same checkpoint recorded under a new name for it (a legacy fingerprint upgraded to
  // the content hash).
  void replace_compressor_fingerprint(const std::string& fingerprint);
  // A store holding no document takes a whole new manifest (another model, dtype, shape...);
  // fails naming the store when it holds any.
  void reset_empty(const Manifest& manifest);

  // Adds or replaces a document with all its passages in ONE RocksDB WriteBatch: the
  // document is entirely present or entirely absent after a crash. A replaced document's
  // old passages, embeddings and postings are deleted in the same batch (more than 256 of
  // them: retired in that batch, deleted by collect_garbage() before this returns). Returns
  // the new passage ids (in order).
  std::vector<uint64_t> put_document(DocumentRecord doc, std::vector<NewPassage> passages);
  // Removes a document and everything it owns (one WriteBatch, or retired as above). Returns
  // its passage ids, or nullopt when no such document.
  std::optional<std::vector<uint64_t>> remove_document(const std::string& doc_id);

  // A long document written in parts, each one bounded batch, visible only once complete:
  //   begin_staging(id); stage_passages(part)...; commit_staging(record) or abort_staging().
  // Staged passages are stored (text, embeddings, vectors, postings) but belong to no
  // document: readers must skip a passage whose document record does not list it (the
  // engine does). commit_staging makes them the document in one small batch (an old version
  // is retired); abort_staging, or open() after a crash in the middle, retires them. One
  // staging at a time; put_document fails meanwhile. Counters include staged passages.
  void begin_staging(const std::string& doc_id);
  std::vector<uint64_t> stage_passages(std::vector<NewPassage> part);  // new ids, in order
  std::vector<uint64_t> commit_staging(DocumentRecord doc);            // all the document's ids
  void abort_staging();
  // Deletes retired passages, `per_batch` per WriteBatch, until none are left; returns how
  // many. Safe after a crash in the middle (ids already gone are skipped).
  int64_t collect_garbage(size_t per_batch = 256);

  std::optional<DocumentRecord> get_document(const std::string& doc_id) const;
  std::vector<DocumentRecord> documents_by_source(const std::string& source) const;
  std::optional<PassageRecord> get_passage(uint64_t id) const;
  // Context embeddings of a passage as fp32 [n * H].
  std::optional<std::vector<float>> get_embeddings(uint64_t id) const;
  std::optional<std::vector<float>> get_retriever_vector(uint64_t id) const;

  // Visits every passage id with its retriever vector (for rebuilding the dense index).
  void for_each_retriever_vector(
      const std::function<void(uint64_t, const std::vector<float>&)>& fn) const;
  void for_each_document(const std::function<void(const DocumentRecord&)>& fn) const;

  // The postings of `terms` and the counters, read under one RocksDB snapshot taken together
  // with the counters: a write that runs meanwhile is either wholly visible or not at all.
  // (A reader instance sees what was committed when it opened.)
  PostingsSnapshot read_postings(const std::vector<std::string>& terms) const;

  StoreStats stats() const;
  // A value that changes with every write (for checking the FAISS file is in sync).
  uint64_t sequence() const;

  // Sharded bulk ingestion (storage/shard.h).
  // A store that never held a passage hands out ids from `first` on (a shard worker's store).
  void set_first_passage_id(uint64_t first);
  // Writes every row as shard `index` of `count` into `dir` (created; must not hold a
  // shard.json): one SST file per non-empty column family, then shard.json. Fails while a
  // document is written in parts or retired passages wait for deletion.
  void export_shard(const std::string& dir, int64_t index, int64_t count) const;
  // Links shards (read and checked by read_shard) into the store with ONE IngestExternalFiles
  // over every column family: the shards' files (copied, the shard directories are left as
  // they are), and a small file made here holding the new counters and one marker per shard.
  // RocksDB records it as one MANIFEST edit: a crash leaves the store as before or after it,
  // never in between. A shard imported before (its marker) is skipped; nothing is linked
  // when a shard was made with another model or setting (the error names both values), has
  // a document the store (or another shard) already holds, or passage ids the store uses.
  ImportResult import_shards(const std::vector<ShardContents>& shards);

  struct Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  // Finishes what a crash interrupted: an unfinished staging is dropped, garbage deleted.
  void recover();
  std::unique_ptr<Impl> impl_;
};

}  // namespace cocom::storage
