// The knowledge store: documents go in once (read, chunked, compressed into COCOM context
// embeddings, indexed), and every later question is answered from what is stored.
// RocksDB (storage/) is the source of truth; the FAISS file beside it is caught up or rebuilt
// from RocksDB when missing or stale.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "engine/documents.h"
#include "model/cocom.h"
#include "storage/store.h"

namespace cocom::index {
class DenseIndex;
class Retriever;
}  // namespace cocom::index

namespace cocom::engine {

struct KnowledgeStoreOptions {
  std::string db;             // store directory
  std::string model_dir;      // COCOM checkpoint; remembered in the store after the first ingest
  std::string retriever_dir;  // dense retriever (optional; BM25 works without)
  std::string index_factory = "Flat";
  std::string embedding_dtype = "fp16";  // fp16 | bf16 | fp32
  int64_t context_max_length = 128;
  int64_t compress_batch_size = 8;
  ChunkOptions chunk;  // max_tokens follows context_max_length
  model::CocomLoadOptions cocom;
  std::string query_prefix, passage_prefix;  // retriever prefixes
  bool need_model = true;  // false for search/rm/info: the COCOM model is not loaded
};

struct IngestProgress {
  size_t documents_done = 0, documents_total = 0;
  int64_t passages_done = 0;
  double seconds = 0;
};

struct IngestSummary {
  int64_t added = 0, unchanged = 0, replaced = 0, passages = 0;
  std::vector<SkippedFile> skipped;
  std::vector<std::string> warnings;
  double seconds = 0;
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

class KnowledgeStore {
 public:
  static std::unique_ptr<KnowledgeStore> open(const KnowledgeStoreOptions& opt);
  ~KnowledgeStore();

  IngestSummary ingest(const std::vector<std::string>& paths, const ReadOptions& ro,
                       const std::function<void(const IngestProgress&)>& progress = nullptr);
  // Removes documents by id, or every document read from a source path. Returns how many.
  int64_t remove(const std::string& id_or_path);
  std::vector<SearchHit> search(const std::string& query, size_t k, SearchMode mode) const;
  // Stored context embeddings of passages, [k, n, H] fp32 (for answering).
  std::vector<float> passage_embeddings(uint64_t id) const;
  Json info() const;

  const model::CocomModel* model() const { return model_.get(); }
  storage::Store& store() { return *store_; }
  bool has_dense() const { return dense_ != nullptr; }

 private:
  KnowledgeStore() = default;
  void save_index();
  void rebuild_dense();
  void ingest_one(const Document& doc, const std::function<int64_t(const std::string&)>& count,
                  const ChunkOptions& co, IngestSummary* sum, IngestProgress* pr);
  KnowledgeStoreOptions opt_;
  std::unique_ptr<model::CocomModel> model_;
  std::unique_ptr<index::Retriever> retriever_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<index::DenseIndex> dense_;
  std::string index_path_;
  bool dense_dirty_ = false;
};

// Identifies a COCOM checkpoint for the manifest: directory name, config.json and the
// tensor names/shapes of its safetensors (cheap: no weights are hashed).
std::string cocom_fingerprint(const std::string& model_dir);

}  // namespace cocom::engine
