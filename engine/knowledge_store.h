// The knowledge store: documents go in once (read, chunked, compressed into COCOM context
// embeddings, indexed), and every later question is answered from what is stored.
// RocksDB (storage/) is the source of truth; the FAISS file beside it is caught up or rebuilt
// from RocksDB when missing or stale.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "common/rw_lock.h"
#include "ingest/documents.h"
#include "model/cocom.h"
#include "storage/store.h"

namespace cocom::index {
class DenseIndex;
class Retriever;
}  // namespace cocom::index

namespace cocom::engine {

// The store's settings live in its manifest (RocksDB), fixed when it is created. Unset
// settings below take the stored values (or the defaults, for a new store); a set one that
// differs from the stored value is refused, naming both. cocom-db.json beside the store is a
// view of the manifest (read only to upgrade stores made before the manifest kept them).
struct KnowledgeStoreOptions {
  std::string db;             // store directory
  std::string model_dir;      // COCOM checkpoint; empty = where the store last found it
  std::string retriever_dir;  // dense retriever (optional; BM25 works without)
  std::optional<std::string> index_factory;     // default "Flat"
  std::optional<std::string> embedding_dtype;   // fp16 | bf16 | fp32 | int8; default fp16
  std::optional<int64_t> context_max_length;    // default 128
  std::optional<int64_t> chunk_overlap_tokens;  // default 0
  std::optional<std::string> bm25_language;     // index::check_analyzer; default english
  std::optional<std::string> query_prefix, passage_prefix;  // retriever prefixes; default ""
  int64_t compress_batch_size = 8;
  // A document of more passages is compressed and written in parts of this many (memory
  // bounded by the part, not the document), and made visible only once complete.
  int64_t passages_per_batch = 256;
  model::CocomLoadOptions cocom;
  bool need_model = true;  // false for search/rm/info: the COCOM model is not loaded
  // A model already loaded (and shared with other stores): used instead of loading model_dir,
  // which then defaults to its directory. It must be the model the store was built with.
  std::shared_ptr<const model::CocomModel> model;
  // Fails with "no cocom store at DIR" instead of creating one.
  bool create_if_missing = true;
  // Opens an existing store without its lock (storage::Store::open_reader): works while
  // another process ingests, sees what was committed at open; ingest and remove fail.
  bool read_only = false;
};

struct IngestProgress {
  size_t documents_done = 0, documents_total = 0;
  int64_t passages_done = 0;
  double seconds = 0;
};

// Called after every document and after every part of a long document; return false to
// stop (what is committed stays; a long document cut in the middle is dropped whole).
using IngestProgressFn = std::function<bool(const IngestProgress&)>;

// What import_shards did.
struct ImportSummary {
  storage::ImportResult result;
  int64_t index_vectors = 0;  // in the rebuilt dense index (0 without a retriever)
  double seconds = 0;
};

struct IngestSummary {
  int64_t added = 0, unchanged = 0, replaced = 0, passages = 0;
  std::vector<ingest::SkippedFile> skipped;
  std::vector<std::string> warnings;
  bool stopped_early = false;  // the progress callback returned false
  double seconds = 0;
  std::map<std::string, int64_t> formats;  // files read, by format (ingest::ReadResult)
  Json to_json() const;
};

enum class SearchMode { Dense, Bm25, Hybrid };
SearchMode parse_search_mode(const std::string& s);  // throws naming the value

struct SearchHit {
  uint64_t passage_id = 0;
  double score = 0;
  storage::PassageRecord passage;
  std::string title, source;
};

// Search results together with the stored context embeddings of the hits, read under one
// consistent view of the store (a concurrent writer cannot remove a hit in between).
struct Retrieval {
  std::vector<SearchHit> hits;
  std::vector<std::vector<float>> embeddings;  // per hit [n * H] fp32 (when asked for)
  int64_t embeddings_per_passage = 0, embedding_dim = 0;
  double retrieve_seconds = 0, load_seconds = 0;
};

// Thread safety: search(), retrieve(), info(), passage_embeddings() and loaded_model() may run
// concurrently with each other and with one writer (ingest*, remove). Writers are serialised
// among themselves. A writer holds the exclusive lock only while it stores one document and
// updates the dense index, never while it reads or compresses, so questions keep being
// answered during a long ingestion; readers see each document either fully or not at all.
class KnowledgeStore {
 public:
  static std::unique_ptr<KnowledgeStore> open(const KnowledgeStoreOptions& opt);
  ~KnowledgeStore();

  IngestSummary ingest(const std::vector<std::string>& paths, const ingest::ReadOptions& ro,
                       const std::function<void(const IngestProgress&)>& progress = nullptr);
  // The same, with a progress callback that can stop the ingestion.
  IngestSummary ingest_paths(const std::vector<std::string>& paths, const ingest::ReadOptions& ro,
                             const IngestProgressFn& progress);
  // Sharded bulk ingestion (storage/shard.h): reads `paths` whole, keeps the documents of
  // shard `index` of `count` (by a hash of their id), ingests them into this store, which
  // must be a new one of its own (its passages are numbered in the run's range), and writes
  // it as a shard into `export_dir` (nothing when the progress callback stopped it).
  IngestSummary ingest_shard(const std::vector<std::string>& paths, const ingest::ReadOptions& ro,
                             const IngestProgressFn& progress, int64_t index, int64_t count,
                             const std::string& export_dir);
  // Links shards into the store at `db` (created from the first shard's manifest when there
  // is none; storage::Store::import_shards says what is checked and what is atomic), then
  // rebuilds the dense index from RocksDB and writes cocom-db.json. The store's lock is held
  // throughout; no model or retriever is loaded.
  static ImportSummary import_shards(const std::string& db, const std::vector<std::string>& dirs);
  // A read-only store: moves to what the writer has committed since (storage::Store::
  // catch_up), and the dense index with it (the writer's file when it is current, else rebuilt
  // from RocksDB). Returns true when the store changed; false for a writer, or when catching
  // up failed (logged; the view stays as it was). Safe to call from any thread.
  bool catch_up();
  // Documents already in memory (ids must be non-empty and unique; the caller checks).
  IngestSummary ingest_documents(const std::vector<ingest::Document>& docs,
                                 const IngestProgressFn& progress = nullptr);
  // Removes documents by id, or every document read from a source (given as stored, or as a
  // path made absolute). Returns how many.
  int64_t remove(const std::string& id_or_path);
  std::vector<SearchHit> search(const std::string& query, size_t k, SearchMode mode) const;
  // search() plus, when with_embeddings, every hit's stored context embeddings.
  Retrieval retrieve(const std::string& query, size_t k, SearchMode mode,
                     bool with_embeddings) const;
  // Stored context embeddings of passages, [k, n, H] fp32 (for answering).
  std::vector<float> passage_embeddings(uint64_t id) const;
  Json info() const;

  // The COCOM model, loaded on first use when the store was opened without it (need_model =
  // false). Loading is serialised; a model whose fingerprint differs from the one the store's
  // embeddings were made with is refused. Throws naming the directory.
  const model::CocomModel& loaded_model() const;
  // The same, as the shared pointer other stores and the public Model may hold too.
  std::shared_ptr<const model::CocomModel> shared_model() const;
  bool model_loaded() const;
  const model::CocomModel* model() const;
  storage::Store& store() { return *store_; }
  const storage::Store& store() const { return *store_; }
  bool has_dense() const { return retriever_ != nullptr; }
  const KnowledgeStoreOptions& options() const { return opt_; }
  // The settings in force (the stored ones).
  int64_t context_max_length() const { return *opt_.context_max_length; }

 private:
  KnowledgeStore() = default;
  void save_index();
  void write_settings_view() const;
  void check_writable(const char* what) const;
  // The fingerprint the store records for its checkpoint. A store made before fingerprints
  // were content hashes names it the legacy way: when `model_dir` is that checkpoint, its
  // content hash `fingerprint` is recorded instead (unless read-only) and returned.
  std::string recorded_fingerprint(const std::string& model_dir,
                                   const std::string& fingerprint) const;
  // Ingestion must use the decoder weight format the stored embeddings were made with.
  void check_ingest_weights(const model::CocomModel& m);
  void rebuild_dense();
  // Removes a long document's staged passages from the index and the store (ingestion cut).
  void drop_staged(const std::vector<uint64_t>& staged);
  // Returns false when `progress` asked to stop in the middle of a long document (dropped).
  bool ingest_one(const ingest::Document& doc,
                  const std::function<int64_t(const std::string&)>& count,
                  const ingest::ChunkOptions& co, IngestSummary* sum, IngestProgress* pr,
                  const IngestProgressFn& progress);
  // Compresses passages [begin, end) of `ps` into rows for the store.
  std::vector<storage::NewPassage> make_passages(const model::CocomModel& m,
                                                 const ingest::Document& doc,
                                                 const std::vector<ingest::Passage>& ps,
                                                 size_t begin, size_t end,
                                                 std::vector<float>* retriever_flat) const;
  IngestSummary ingest_all(const std::vector<ingest::Document>& docs, IngestSummary sum,
                           const IngestProgressFn& progress);
  std::vector<SearchHit> search_locked(const std::string& query, const std::vector<float>& qvec,
                                       size_t k, SearchMode mode) const;
  std::vector<float> embed_query(const std::string& query, SearchMode mode) const;
  KnowledgeStoreOptions opt_;
  mutable std::mutex model_mu_;  // guards model_ (lazy loading)
  mutable std::shared_ptr<const model::CocomModel> model_;
  // Checks that `m` makes embeddings of the shape this store holds (its fingerprint was
  // checked before it was loaded).
  void check_shape(const model::CocomModel& m) const;
  std::unique_ptr<index::Retriever> retriever_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<index::DenseIndex> dense_;
  std::string index_path_;
  bool dense_dirty_ = false;
  // Readers share `mu_`; a writer takes it exclusively around each store + index update. It
  // prefers writers, so an ingestion finishes under sustained search traffic.
  mutable WriterPriorityMutex mu_;
  // Serialises writers (ingest, remove), which also own dense_dirty_ and the index file.
  std::mutex write_mu_;
};

}  // namespace cocom::engine
