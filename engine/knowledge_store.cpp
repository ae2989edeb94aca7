#include "engine/knowledge_store.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>

#include "cocom/cocom.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/log.h"
#include "compress/compressor.h"
#include "index/bm25.h"
#include "index/dense_index.h"
#include "index/retriever.h"
#include "model/fingerprint.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "storage/shard.h"

namespace fs = std::filesystem;

namespace cocom::engine {

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Settings remembered in the store directory so later commands need not repeat them.
const char* kSettingsFile = "cocom-db.json";

// A model (or retriever) that produces non-finite vectors is broken: the ingestion stops
// rather than skip every document with the same reason, and nothing of it is stored.
struct ModelFault : Error {
  explicit ModelFault(const std::string& what) : Error(what, ErrorKind::kFailedPrecondition) {}
};

// `t` holds one row per passage, the first being passage `first` of `doc`.
void check_finite(const at::Tensor& t, const std::string& maker, const std::string& what,
                  const ingest::Document& doc, size_t first) {
  const at::Tensor bad_rows = at::isfinite(t).flatten(1).all(1).logical_not().nonzero();
  if (bad_rows.size(0) == 0) return;
  throw ModelFault(maker + " produced non-finite " + what + " (NaN or infinity) for passage " +
                   std::to_string(first + size_t(bad_rows[0][0].item<int64_t>())) +
                   " of document '" + doc.id +
                   "'; its weights are damaged or it is not the model it claims to be. Nothing of "
                   "the document was stored; the ingestion stopped");
}

// A checkpoint whose content differs from the one a store's embeddings were made with.
[[noreturn]] void refuse_other_checkpoint(const std::string& model_dir, const std::string& fp,
                                          const std::string& db, const std::string& stored_fp) {
  fail_precondition("--model ", model_dir, ": this checkpoint (", fp,
                    ") is not the compressor the store at ", db, " was built with (", stored_fp,
                    "); pass the original --model, or ingest into a new store");
}

void write_store_view(const storage::Store& store) {
  // cocom-db.json: what the manifest says, for people and scripts (never read back, except to
  // upgrade a store made before the manifest kept its settings).
  const storage::Manifest m = store.manifest();
  Json s;
  s["model"] = m.model_dir;
  s["retriever"] = m.retriever_dir;
  s["index_factory"] = m.index_factory;
  s["embedding_dtype"] = storage::embedding_dtype_name(m.embedding_dtype);
  s["context_max_length"] = m.context_max_length;
  s["chunk_overlap_tokens"] = m.chunk_overlap_tokens;
  s["query_prefix"] = m.query_prefix;
  s["passage_prefix"] = m.passage_prefix;
  s["ingest_weights"] = m.ingest_weights;
  s["compressor_fingerprint"] = m.compressor_fingerprint;
  s["compr_rate"] = m.compr_rate;
  s["embedding_shape"] = {m.embeddings_per_passage, m.embedding_dim};
  s["note"] = "a view of the store's manifest (in RocksDB); editing it changes nothing";
  const std::string path = join_path(store.path(), kSettingsFile);
  Json old = file_exists(path) ? read_json_file(path) : Json();
  if (old != s) write_json_file(path, s);
}

// A dense index of every retriever vector the store holds.
std::unique_ptr<index::DenseIndex> dense_from_store(const storage::Store& store,
                                                    const std::string& factory, int64_t dim) {
  auto fresh = index::DenseIndex::create(factory, dim);
  std::vector<uint64_t> ids;
  std::vector<float> vecs;
  store.for_each_retriever_vector([&](uint64_t id, const std::vector<float>& v) {
    ids.push_back(id);
    vecs.insert(vecs.end(), v.begin(), v.end());
  });
  if (!ids.empty()) fresh->add(ids, vecs);
  return fresh;
}

}  // namespace

SearchMode parse_search_mode(const std::string& s) {
  if (s == "dense") return SearchMode::Dense;
  if (s == "bm25") return SearchMode::Bm25;
  if (s == "hybrid") return SearchMode::Hybrid;
  fail("--mode ", s, ": expected dense, bm25 or hybrid");
}

Json IngestSummary::to_json() const {
  Json j;
  j["added"] = added;
  j["unchanged"] = unchanged;
  j["replaced"] = replaced;
  j["passages"] = passages;
  j["seconds"] = seconds;
  Json sk = Json::array();
  for (const auto& s : skipped) sk.push_back({{"path", s.path}, {"reason", s.reason}});
  j["skipped"] = sk;
  j["warnings"] = warnings;
  j["formats"] = formats;
  return j;
}

KnowledgeStore::~KnowledgeStore() = default;

namespace {

std::string absolute_dir(const std::string& d) {
  return d.empty() ? d : fs::absolute(d).lexically_normal().string();
}

// A setting asked for that differs from the one the store keeps.
template <class T>
void check_setting(const std::string& db, const char* option, const char* flag,
                   const std::optional<T>& requested, const T& stored, bool stored_known) {
  if (!requested || !stored_known || *requested == stored) return;
  auto show = [](const T& v) {
    if constexpr (std::is_same_v<T, std::string>) {
      return "'" + v + "'";
    } else {
      return std::to_string(v);
    }
  };
  fail(option, " (", flag, ") ", show(*requested), " conflicts with the store at ", db,
       ", which keeps ", show(stored),
       ": a store's settings are fixed when it is created (leave it unset, or use another --db)");
}

}  // namespace

std::unique_ptr<KnowledgeStore> KnowledgeStore::open(const KnowledgeStoreOptions& opt0) {
  std::unique_ptr<KnowledgeStore> ks(new KnowledgeStore());
  KnowledgeStoreOptions opt = opt0;
  if (opt.db.empty()) fail("--db: a store directory is required");
  const std::string settings_path = join_path(opt.db, kSettingsFile);
  bool exists = file_exists(join_path(opt.db, "CURRENT"));
  if (exists) {
    storage::Manifest none;
    none.schema_version = 0;  // no field set: nothing checked, nothing created
    ks->store_ = opt.read_only ? storage::Store::open_reader(opt.db, none)
                               : storage::Store::open(opt.db, none);
    if (ks->store_->manifest().schema_version == 0) {
      ks->store_.reset();  // a creation cut off before its manifest: create it again
      exists = false;
    }
  }
  if (!exists && opt.read_only) {
    fail_not_found("--db ", opt.db, ": no cocom store here (check the path)");
  }
  if (!exists && !opt.create_if_missing) {
    fail_not_found("--db ", opt.db,
                   ": no cocom store here (check the path, or create the store first with "
                   "cocom ingest --db DIR)");
  }
  if (opt.model) {
    if (!opt.model_dir.empty() && fs::path(opt.model_dir).lexically_normal() !=
                                      fs::path(opt.model->dir()).lexically_normal()) {
      fail("--model ", opt.model_dir, ": differs from the directory of the model given (",
           opt.model->dir(), ")");
    }
    opt.model_dir = opt.model->dir();
  }

  // The settings: the stored ones for an existing store (upgraded from cocom-db.json for a
  // store made before the manifest kept them), the requested or default ones for a new one.
  storage::Manifest st;  // settings part only
  storage::Manifest stored;
  // A store that holds nothing yet may still take another model and other settings (a first
  // ingestion that failed, or was run with the wrong --model, binds nothing), when this open
  // loads the model that will fill it.
  const bool asks_change = !opt0.model_dir.empty() || opt.model || opt.embedding_dtype ||
                           opt.index_factory || opt.context_max_length ||
                           opt.chunk_overlap_tokens || opt.query_prefix || opt.passage_prefix ||
                           opt.bm25_language || !opt0.retriever_dir.empty();
  const bool empty_store = exists && !opt.read_only && (opt.need_model || asks_change) &&
                           ks->store_->stats().documents == 0 && ks->store_->stats().passages == 0;
  std::optional<std::string> analyzer;  // the requested one, canonical
  if (opt.bm25_language) analyzer = index::check_analyzer(*opt.bm25_language);
  if (exists) {
    stored = ks->store_->manifest();
    Json legacy = file_exists(settings_path) ? read_json_file(settings_path) : Json::object();
    const std::string& db = opt.db;
    const bool fixed = !empty_store;  // an empty store takes the settings asked for
    check_setting(db, "Options::index_factory", "--index", opt.index_factory, stored.index_factory,
                  fixed);
    check_setting(db, "Options::embedding_dtype", "--embedding-dtype", opt.embedding_dtype,
                  std::string(storage::embedding_dtype_name(stored.embedding_dtype)), fixed);
    check_setting(db, "Options::bm25_language", "--language", analyzer,
                  stored.analyzer.empty() ? std::string("words") : stored.analyzer, fixed);
    st = stored;
    if (analyzer) st.analyzer = *analyzer;
    if (opt.index_factory) st.index_factory = *opt.index_factory;
    if (opt.embedding_dtype) {
      auto dtype = storage::parse_embedding_dtype(*opt.embedding_dtype);
      if (!dtype)
        fail("--embedding-dtype ", *opt.embedding_dtype, ": expected fp16, bf16, fp32 or int8");
      st.embedding_dtype = *dtype;
    }
    if (stored.context_max_length <= 0) {
      st.context_max_length = json_int_or(legacy, "context_max_length",
                                          opt.context_max_length.value_or(128), settings_path);
    }
    check_setting(db, "Options::context_max_length", "--context-max-length", opt.context_max_length,
                  st.context_max_length, fixed);
    if (opt.context_max_length) st.context_max_length = *opt.context_max_length;
    check_setting(db, "Options::chunk_overlap_tokens", "--overlap", opt.chunk_overlap_tokens,
                  stored.chunk_overlap_tokens, fixed && stored.chunk_overlap_tokens >= 0);
    if (stored.chunk_overlap_tokens < 0) st.chunk_overlap_tokens = 0;
    if (opt.chunk_overlap_tokens) st.chunk_overlap_tokens = *opt.chunk_overlap_tokens;
    check_setting(db, "Options::query_prefix", "--query-prefix", opt.query_prefix,
                  stored.query_prefix, fixed && stored.has_prefixes);
    check_setting(db, "Options::passage_prefix", "--passage-prefix", opt.passage_prefix,
                  stored.passage_prefix, fixed && stored.has_prefixes);
    if (!stored.has_prefixes) st.query_prefix = st.passage_prefix = "";
    st.has_prefixes = true;
    if (opt.query_prefix) st.query_prefix = *opt.query_prefix;
    if (opt.passage_prefix) st.passage_prefix = *opt.passage_prefix;
    if (st.model_dir.empty()) st.model_dir = json_string_or(legacy, "model", "", settings_path);
    if (st.retriever_dir.empty()) {
      st.retriever_dir = json_string_or(legacy, "retriever", "", settings_path);
    }
    if (opt.model_dir.empty()) opt.model_dir = st.model_dir;
    if (opt.model_dir.empty() && empty_store) opt.model_dir = DefaultModelDir();
    if (opt.retriever_dir.empty()) opt.retriever_dir = st.retriever_dir;
  } else {
    st.index_factory = opt.index_factory.value_or("Flat");
    st.analyzer = analyzer.value_or(index::default_analyzer());
    const std::string dt = opt.embedding_dtype.value_or("fp16");
    auto dtype = storage::parse_embedding_dtype(dt);
    if (!dtype) fail("--embedding-dtype ", dt, ": expected fp16, bf16, fp32 or int8");
    st.embedding_dtype = *dtype;
    st.context_max_length = opt.context_max_length.value_or(128);
    st.chunk_overlap_tokens = opt.chunk_overlap_tokens.value_or(0);
    st.has_prefixes = true;
    st.query_prefix = opt.query_prefix.value_or("");
    st.passage_prefix = opt.passage_prefix.value_or("");
    if (opt.model_dir.empty()) {
      opt.model_dir = DefaultModelDir();
      if (opt.model_dir.empty()) {
        fail("--db ", opt.db,
             ": no store there yet and no default model was found (models/default, "
             "$COCOM_DEFAULT_MODEL); pass --model DIR (a COCOM checkpoint) to create one");
      }
      log::info("creating {} with the default model {}", opt.db, opt.model_dir);
    }
  }
  if (st.context_max_length < 8 || st.context_max_length > 8192) {
    fail("context_max_length ", st.context_max_length,
         " (--context-max-length): must be between 8 and 8192");
  }
  if (st.chunk_overlap_tokens < 0 || st.chunk_overlap_tokens >= st.context_max_length) {
    fail("chunk_overlap_tokens ", st.chunk_overlap_tokens,
         " (--overlap): must be >= 0 and smaller than context_max_length ", st.context_max_length);
  }
  opt.index_factory = st.index_factory;
  opt.embedding_dtype = storage::embedding_dtype_name(st.embedding_dtype);
  opt.context_max_length = st.context_max_length;
  opt.chunk_overlap_tokens = st.chunk_overlap_tokens;
  opt.query_prefix = st.query_prefix;
  opt.passage_prefix = st.passage_prefix;

  // Identity: the model and the retriever that made (or will make) what the store holds.
  storage::Manifest mf = st;
  mf.schema_version = storage::kSchemaVersion;
  mf.compressor_fingerprint.clear();
  mf.compr_rate = mf.embeddings_per_passage = mf.embedding_dim = 0;
  mf.retriever_fingerprint.clear();
  mf.retriever_dim = 0;
  if (!opt.need_model && exists && !opt0.model_dir.empty()) {
    // The model is loaded later (loaded_model()); an explicitly named one must still be the
    // one the stored embeddings were made with (a cheap check: no weights are read).
    if (!dir_exists(opt.model_dir))
      fail_not_found("--model ", opt.model_dir, ": no such directory");
    mf.compressor_fingerprint = model::checkpoint_fingerprint(opt.model_dir);
  }
  if (opt.need_model || !exists || opt.model || empty_store) {
    if (opt.model_dir.empty()) fail("--model: this command needs the COCOM checkpoint");
    ks->model_ = opt.model ? opt.model : model::CocomModel::load(opt.model_dir, opt.cocom);
    const int64_t r = ks->model_->config().compr_rate;
    mf.compressor_fingerprint = model::checkpoint_fingerprint(opt.model_dir);
    mf.compr_rate = r;
    mf.embeddings_per_passage = (st.context_max_length + r - 1) / r;
    mf.embedding_dim = ks->model_->decoder().config().hidden_size;
    if (!exists) {
      mf.ingest_weights = model::weight_format_name(ks->model_->decoder().weight_format());
    }
  }
  if (!opt.retriever_dir.empty()) {
    index::RetrieverOptions ro;
    ro.query_prefix = st.query_prefix;
    ro.passage_prefix = st.passage_prefix;
    ro.device = opt.cocom.device;
    ks->retriever_ = index::Retriever::load(opt.retriever_dir, ro);
    mf.retriever_fingerprint = ks->retriever_->fingerprint();
    mf.retriever_dim = ks->retriever_->dim();
  }
  if (!opt.model_dir.empty()) mf.model_dir = absolute_dir(opt.model_dir);
  if (!opt.retriever_dir.empty()) mf.retriever_dir = absolute_dir(opt.retriever_dir);
  if (empty_store) {
    // Everything the store records is what this open asks for (or what it kept).
    mf.ingest_weights = model::weight_format_name(ks->model_->decoder().weight_format());
    if (ks->store_->manifest().compressor_fingerprint != mf.compressor_fingerprint) {
      log::info("{}: an empty store, now bound to the model {}", opt.db, opt.model_dir);
    }
    ks->store_->reset_empty(mf);
  } else if (exists) {
    if (!mf.compressor_fingerprint.empty()) {
      const std::string recorded =
          ks->recorded_fingerprint(opt.model_dir, mf.compressor_fingerprint);
      if (!recorded.empty() && mf.compressor_fingerprint != recorded) {
        refuse_other_checkpoint(opt.model_dir, mf.compressor_fingerprint, opt.db, recorded);
      }
      // The same checkpoint (recorded in the legacy form when the store is read-only).
      mf.compressor_fingerprint = ks->store_->manifest().compressor_fingerprint;
    }
    ks->store_->check(mf);
    const bool changed = mf.context_max_length != stored.context_max_length ||
                         mf.chunk_overlap_tokens != stored.chunk_overlap_tokens ||
                         mf.has_prefixes != stored.has_prefixes ||
                         mf.model_dir != stored.model_dir ||
                         mf.retriever_dir != stored.retriever_dir;
    // An upgraded store, or a moved checkpoint (remembered by the next writer when read-only).
    if (changed && !opt.read_only) ks->store_->set_settings(mf);
  } else {
    ks->store_ = storage::Store::open(opt.db, mf);
  }
  ks->opt_ = opt;
  if (ks->retriever_) {
    ks->index_path_ = join_path(opt.db, "dense.faiss");
    const uint64_t seq = ks->store_->sequence();
    bool fresh = false;
    if (file_exists(ks->index_path_)) {
      try {
        ks->dense_ = index::DenseIndex::load(ks->index_path_, ks->retriever_->dim());
        fresh = ks->dense_->saved_sequence() == seq;
        if (!fresh)
          log::info("{}: stale (store moved on); rebuilding from RocksDB", ks->index_path_);
      } catch (const Error& e) {
        log::warn("{}; rebuilding the dense index from RocksDB", e.what());
      }
    }
    if (!fresh) ks->rebuild_dense();
  }
  if (!opt.read_only) ks->write_settings_view();
  return ks;
}

std::string KnowledgeStore::recorded_fingerprint(const std::string& model_dir,
                                                 const std::string& fingerprint) const {
  const std::string stored = store_->manifest().compressor_fingerprint;
  if (!model::is_legacy_fingerprint(stored) || model_dir.empty()) return stored;
  if (model::legacy_checkpoint_fingerprint(model_dir) != stored) return stored;  // another
  if (!store_->read_only()) {
    log::info("{}: recording the checkpoint {} by its content ({}, was {})", store_->path(),
              model_dir, fingerprint, stored);
    store_->replace_compressor_fingerprint(fingerprint);
  }
  return fingerprint;
}

void KnowledgeStore::check_writable(const char* what) const {
  if (opt_.read_only) {
    fail_precondition(store_->path(), ": cannot ", what,
                      ": the store was opened for reading only (read_only; another process may "
                      "be writing it)");
  }
}

void KnowledgeStore::write_settings_view() const { write_store_view(*store_); }

void KnowledgeStore::check_ingest_weights(const model::CocomModel& m) {
  const std::string w = model::weight_format_name(m.decoder().weight_format());
  storage::Manifest mf = store_->manifest();
  if (mf.ingest_weights.empty()) {
    mf.ingest_weights = w;
    store_->set_settings(mf);
    write_settings_view();
    return;
  }
  if (mf.ingest_weights != w) {
    fail("the embeddings of the store at ", store_->path(), " were made with ", mf.ingest_weights,
         " decoder weights; ingesting with ", w,
         " would mix embeddings of two models "
         "(Options::weights / --weights ",
         mf.ingest_weights, ")");
  }
}

const model::CocomModel* KnowledgeStore::model() const {
  std::lock_guard<std::mutex> lock(model_mu_);
  return model_.get();
}

bool KnowledgeStore::model_loaded() const { return model() != nullptr; }

void KnowledgeStore::check_shape(const model::CocomModel& m) const {
  const storage::Manifest& mf = store_->manifest();
  const int64_t r = m.config().compr_rate;
  const int64_t n = (*opt_.context_max_length + r - 1) / r;
  const int64_t h = m.decoder().config().hidden_size;
  if ((mf.embeddings_per_passage && mf.embeddings_per_passage != n) ||
      (mf.embedding_dim && mf.embedding_dim != h)) {
    fail("--model ", m.dir(), ": makes context embeddings [", n, ", ", h, "] but the store at ",
         store_->path(), " holds [", mf.embeddings_per_passage, ", ", mf.embedding_dim, "]");
  }
}

std::shared_ptr<const model::CocomModel> KnowledgeStore::shared_model() const {
  std::lock_guard<std::mutex> lock(model_mu_);
  if (model_) return model_;
  if (opt_.model_dir.empty()) {
    fail_precondition(store_->path(),
                      ": the store does not remember its COCOM checkpoint; pass --model DIR");
  }
  if (!dir_exists(opt_.model_dir)) {
    fail_not_found("--model ", opt_.model_dir,
                   ": no such directory (the COCOM checkpoint of the store at ", store_->path(),
                   "; pass --model DIR if it moved)");
  }
  const std::string fp = model::checkpoint_fingerprint(opt_.model_dir);
  const std::string recorded = recorded_fingerprint(opt_.model_dir, fp);
  if (!recorded.empty() && fp != recorded) {
    // Refused before the (possibly long) load.
    refuse_other_checkpoint(opt_.model_dir, fp, store_->path(), recorded);
  }
  std::shared_ptr<const model::CocomModel> m = model::CocomModel::load(opt_.model_dir, opt_.cocom);
  check_shape(*m);
  model_ = std::move(m);
  return model_;
}

const model::CocomModel& KnowledgeStore::loaded_model() const { return *shared_model(); }

void KnowledgeStore::rebuild_dense() {
  // Built aside (writers are serialised, so the store does not change meanwhile), then
  // swapped in under the exclusive lock so that searches never see a half-built index.
  auto fresh = dense_from_store(*store_, *opt_.index_factory, retriever_->dim());
  const uint64_t seq = store_->sequence();
  {
    std::unique_lock<WriterPriorityMutex> lock(mu_);
    dense_ = std::move(fresh);
    dense_dirty_ = false;
  }
  if (opt_.read_only) return;  // rebuilt in memory only; the writer keeps the file
  std::shared_lock<WriterPriorityMutex> lock(mu_);
  dense_->save(index_path_, seq);
}

void KnowledgeStore::save_index() {
  if (!retriever_) return;
  // After a failure part-way through a document the in-memory index may disagree with
  // RocksDB: rebuild it from the store rather than save a file that claims to be current.
  if (dense_dirty_) {
    rebuild_dense();
  } else {
    std::shared_lock<WriterPriorityMutex> lock(mu_);
    dense_->save(index_path_, store_->sequence());
  }
}

std::vector<storage::NewPassage> KnowledgeStore::make_passages(
    const model::CocomModel& m, const ingest::Document& doc, const std::vector<ingest::Passage>& ps,
    size_t begin, size_t end, std::vector<float>* retriever_flat) const {
  std::vector<std::string> texts;
  for (size_t i = begin; i < end; ++i) texts.push_back(ps[i].text);
  at::Tensor emb =
      compress::compress_passages(m, texts, *opt_.context_max_length, opt_.compress_batch_size)
          .contiguous();
  check_finite(emb, "the COCOM model at " + m.dir(), "context embeddings", doc, begin);
  at::Tensor rv;
  if (retriever_) {
    rv = retriever_->embed_passages(texts).contiguous();
    check_finite(rv, "the retriever at " + opt_.retriever_dir, "vectors", doc, begin);
  }
  std::vector<storage::NewPassage> np(texts.size());
  const int64_t per = emb.size(1) * emb.size(2);
  // Title words count twice in stores with a named analyzer: the passage text starts with the
  // title, and its words are added once more (analysed once for all the document's passages).
  const std::string analyzer = store_->manifest().analyzer;
  const std::vector<std::string> title_terms =
      analyzer.empty() ? std::vector<std::string>{} : index::analyze(doc.title, analyzer);
  for (size_t i = 0; i < np.size(); ++i) {
    const ingest::Passage& p = ps[begin + i];
    np[i].record.doc_id = doc.id;
    np[i].record.index = p.index;
    np[i].record.text = p.text;
    np[i].record.char_begin = p.char_begin;
    np[i].record.char_end = p.char_end;
    const float* e = emb.data_ptr<float>() + int64_t(i) * per;
    np[i].embeddings.assign(e, e + per);
    if (rv.defined()) {
      const float* v = rv.data_ptr<float>() + int64_t(i) * rv.size(1);
      np[i].retriever_vector.assign(v, v + rv.size(1));
    }
    np[i].terms = index::analyze(p.text, analyzer);
    np[i].terms.insert(np[i].terms.end(), title_terms.begin(), title_terms.end());
  }
  retriever_flat->clear();
  if (rv.defined()) retriever_flat->assign(rv.data_ptr<float>(), rv.data_ptr<float>() + rv.numel());
  return np;
}

bool KnowledgeStore::ingest_one(const ingest::Document& doc,
                                const std::function<int64_t(const std::string&)>& count,
                                const ingest::ChunkOptions& co, IngestSummary* sum,
                                IngestProgress* pr, const IngestProgressFn& progress) {
  const model::CocomModel& m = loaded_model();
  const std::string hash = ingest::content_hash(doc);
  std::optional<storage::DocumentRecord> old = store_->get_document(doc.id);
  if (old && old->content_hash == hash) {
    ++sum->unchanged;
    return true;
  }
  std::vector<ingest::Passage> ps = ingest::chunk_document(doc, co, count);
  if (ps.empty()) {
    // A document that lost all its text: its old passages must not stay searchable.
    if (old) {
      std::unique_lock<WriterPriorityMutex> lock(mu_);
      if (auto removed = store_->remove_document(doc.id); removed && dense_)
        dense_->remove(*removed);
    }
    sum->skipped.push_back({doc.source.empty() ? doc.id : doc.source, "no text"});
    return true;
  }
  storage::DocumentRecord rec;
  rec.id = doc.id;
  rec.source = doc.source;
  rec.title = doc.title;
  rec.content_hash = hash;
  rec.meta_json = doc.meta_json;
  const size_t part = static_cast<size_t>(std::max<int64_t>(opt_.passages_per_batch, 1));
  std::vector<float> flat;
  std::vector<uint64_t> ids;
  if (ps.size() <= part) {
    std::vector<storage::NewPassage> np = make_passages(m, doc, ps, 0, ps.size(), &flat);
    // The only part of a document's ingestion that readers wait for.
    std::unique_lock<WriterPriorityMutex> lock(mu_);
    ids = store_->put_document(rec, std::move(np));
    if (dense_) {
      if (old) dense_->remove(old->passage_ids);
      dense_->add(ids, flat);
    }
    pr->passages_done += static_cast<int64_t>(ids.size());
  } else {
    // In parts: each one compressed, then written in its own batch; readers skip the staged
    // passages (no document lists them) until the commit makes them the document at once.
    store_->begin_staging(doc.id);
    std::vector<uint64_t> staged;
    bool stopped = false;
    try {
      for (size_t b = 0; b < ps.size() && !stopped; b += part) {
        const size_t e = std::min(ps.size(), b + part);
        std::vector<storage::NewPassage> np = make_passages(m, doc, ps, b, e, &flat);
        std::vector<uint64_t> part_ids;
        {
          std::unique_lock<WriterPriorityMutex> lock(mu_);
          part_ids = store_->stage_passages(std::move(np));
          if (dense_) dense_->add(part_ids, flat);
        }
        staged.insert(staged.end(), part_ids.begin(), part_ids.end());
        pr->passages_done += static_cast<int64_t>(part_ids.size());
        if (e < ps.size() && progress && !progress(*pr)) stopped = true;
      }
      if (!stopped) {
        std::unique_lock<WriterPriorityMutex> lock(mu_);
        ids = store_->commit_staging(rec);
        if (dense_ && old) dense_->remove(old->passage_ids);
      }
    } catch (...) {
      drop_staged(staged);
      throw;
    }
    if (stopped) {
      drop_staged(staged);
      pr->passages_done -= static_cast<int64_t>(staged.size());
      return false;
    }
  }
  sum->passages += static_cast<int64_t>(ids.size());
  if (old) {
    ++sum->replaced;
  } else {
    ++sum->added;
  }
  return true;
}

void KnowledgeStore::drop_staged(const std::vector<uint64_t>& staged) {
  {
    std::unique_lock<WriterPriorityMutex> lock(mu_);
    if (dense_) dense_->remove(staged);
  }
  store_->abort_staging();
}

IngestSummary KnowledgeStore::ingest(const std::vector<std::string>& paths,
                                     const ingest::ReadOptions& ro,
                                     const std::function<void(const IngestProgress&)>& progress) {
  IngestProgressFn fn;
  if (progress) {
    fn = [&progress](const IngestProgress& p) {
      progress(p);
      return true;
    };
  }
  return ingest_paths(paths, ro, fn);
}

IngestSummary KnowledgeStore::ingest_paths(const std::vector<std::string>& paths,
                                           const ingest::ReadOptions& ro,
                                           const IngestProgressFn& progress) {
  auto t0 = std::chrono::steady_clock::now();
  check_writable("ingest");
  loaded_model();  // fail before reading anything when the model cannot be loaded
  IngestSummary sum;
  ingest::ReadResult rr = ingest::read_paths(paths, ro);
  sum.skipped = rr.skipped;
  sum.warnings = rr.warnings;
  sum.formats = rr.formats;
  sum = ingest_all(rr.documents, std::move(sum), progress);
  sum.seconds = since(t0);
  return sum;
}

IngestSummary KnowledgeStore::ingest_documents(const std::vector<ingest::Document>& docs,
                                               const IngestProgressFn& progress) {
  auto t0 = std::chrono::steady_clock::now();
  IngestSummary sum = ingest_all(docs, IngestSummary{}, progress);
  sum.seconds = since(t0);
  return sum;
}

IngestSummary KnowledgeStore::ingest_all(const std::vector<ingest::Document>& docs,
                                         IngestSummary sum, const IngestProgressFn& progress) {
  std::lock_guard<std::mutex> writer(write_mu_);
  check_writable("ingest");
  auto t0 = std::chrono::steady_clock::now();
  const model::CocomModel& m = loaded_model();
  if (!docs.empty()) check_ingest_weights(m);
  const bool light = m.config().light();
  const model::Tokenizer& tok = light ? *m.compressor_tokenizer() : m.decoder_tokenizer();
  // Tokens of the compressor's input: BERT adds [CLS] [SEP]; the decoder compressor wraps the
  // passage in <ENC><s> ... </s>.
  auto count = [&](const std::string& text) -> int64_t {
    return static_cast<int64_t>(tok.encode(text, light).size()) + (light ? 0 : 3);
  };
  ingest::ChunkOptions co;
  co.max_tokens = *opt_.context_max_length;
  co.overlap_tokens = *opt_.chunk_overlap_tokens;
  IngestProgress pr;
  pr.documents_total = docs.size();
  for (const ingest::Document& doc : docs) {
    // One bad document never stops the batch: it is reported as skipped with the reason.
    try {
      if (!ingest_one(doc, count, co, &sum, &pr, progress)) {
        sum.stopped_early = true;
        break;
      }
    } catch (const ModelFault&) {
      save_index();
      throw;
    } catch (const Error& e) {
      sum.skipped.push_back({doc.source.empty() ? doc.id : doc.source, e.what()});
      dense_dirty_ = dense_ != nullptr;
    } catch (const c10::Error& e) {
      sum.skipped.push_back({doc.source.empty() ? doc.id : doc.source,
                             std::string("libtorch: ") + e.what_without_backtrace()});
      dense_dirty_ = dense_ != nullptr;
    }
    ++pr.documents_done;
    pr.seconds = since(t0);
    if (progress && !progress(pr)) {
      sum.stopped_early = pr.documents_done < pr.documents_total;
      break;
    }
    if (retriever_ && pr.documents_done % 64 == 0) save_index();
  }
  save_index();
  return sum;
}

int64_t KnowledgeStore::remove(const std::string& id_or_path) {
  std::lock_guard<std::mutex> writer(write_mu_);
  check_writable("remove");
  std::vector<std::string> ids;
  if (store_->get_document(id_or_path)) {
    ids.push_back(id_or_path);
  } else {
    // A source as stored (in-memory documents may carry URLs), else a path made absolute.
    for (const auto& d : store_->documents_by_source(id_or_path)) ids.push_back(d.id);
    if (ids.empty() && !id_or_path.empty()) {
      std::string abs = fs::absolute(id_or_path).lexically_normal().string();
      for (const auto& d : store_->documents_by_source(abs)) ids.push_back(d.id);
    }
  }
  int64_t n = 0;
  for (const auto& id : ids) {
    std::unique_lock<WriterPriorityMutex> lock(mu_);
    auto removed = store_->remove_document(id);
    if (!removed) continue;
    if (dense_) dense_->remove(*removed);
    ++n;
  }
  save_index();
  return n;
}

std::vector<float> KnowledgeStore::embed_query(const std::string& query, SearchMode mode) const {
  if (query.find_first_not_of(" \t\r\n") == std::string::npos) fail("search: the query is empty");
  if (mode != SearchMode::Bm25 && !retriever_) {
    fail_precondition(
        "this store has no dense retriever (ingest with --retriever DIR); use --mode bm25");
  }
  if (mode == SearchMode::Bm25) return {};
  // The retriever never changes after open: no lock needed for the query embedding.
  at::Tensor q = retriever_->embed_queries({query}).contiguous();
  return std::vector<float>(q.data_ptr<float>(), q.data_ptr<float>() + q.numel());
}

std::vector<SearchHit> KnowledgeStore::search(const std::string& query, size_t k,
                                              SearchMode mode) const {
  if (k == 0) fail("--k must be at least 1");
  std::vector<float> qvec = embed_query(query, mode);
  std::shared_lock<WriterPriorityMutex> lock(mu_);
  return search_locked(query, qvec, k, mode);
}

Retrieval KnowledgeStore::retrieve(const std::string& query, size_t k, SearchMode mode,
                                   bool with_embeddings) const {
  if (k == 0) fail("--k must be at least 1");
  auto t0 = std::chrono::steady_clock::now();
  Retrieval r;
  std::vector<float> qvec = embed_query(query, mode);
  std::shared_lock<WriterPriorityMutex> lock(mu_);
  r.hits = search_locked(query, qvec, k, mode);
  if (r.hits.empty() && mode == SearchMode::Bm25 && retriever_) {
    // No passage shares a word with the question: the nearest passages by meaning instead.
    lock.unlock();
    log::info("no lexical match for the question; retrieving with the dense retriever");
    qvec = embed_query(query, SearchMode::Dense);
    lock.lock();
    r.hits = search_locked(query, qvec, k, SearchMode::Dense);
  }
  r.retrieve_seconds = since(t0);
  const storage::Manifest& mf = store_->manifest();
  r.embeddings_per_passage = mf.embeddings_per_passage;
  r.embedding_dim = mf.embedding_dim;
  if (with_embeddings) {
    auto t1 = std::chrono::steady_clock::now();
    for (const auto& h : r.hits) {
      auto e = store_->get_embeddings(h.passage_id);
      if (!e) fail(store_->path(), ": passage ", h.passage_id, " has no stored context embeddings");
      if (static_cast<int64_t>(e->size()) != mf.embeddings_per_passage * mf.embedding_dim) {
        fail(store_->path(), ": passage ", h.passage_id, " has ", e->size(),
             " embedding values, the manifest says [", mf.embeddings_per_passage, ", ",
             mf.embedding_dim, "]");
      }
      r.embeddings.push_back(std::move(*e));
    }
    r.load_seconds = since(t1);
  }
  return r;
}

std::vector<SearchHit> KnowledgeStore::search_locked(const std::string& query,
                                                     const std::vector<float>& qvec, size_t k,
                                                     SearchMode mode) const {
  std::vector<std::pair<uint64_t, double>> ranked;
  // No more hits than passages: a huge k must not size the searches' result buffers.
  k = std::min<size_t>(k, static_cast<size_t>(std::max<int64_t>(store_->stats().passages, 1)));
  const size_t wide = std::max<size_t>(k, 20);
  std::vector<std::pair<uint64_t, double>> lexical, dense;
  if (mode != SearchMode::Dense)
    lexical = index::bm25_search(*store_, index::analyze(query, store_->manifest().analyzer),
                                 mode == SearchMode::Bm25 ? k : wide);
  if (mode != SearchMode::Bm25) {
    for (const auto& [id, s] : dense_->search(qvec, mode == SearchMode::Dense ? k : wide)) {
      dense.push_back({id, double(s)});
    }
  }
  if (mode == SearchMode::Bm25) {
    ranked = lexical;
  } else if (mode == SearchMode::Dense) {
    ranked = dense;
  } else {
    std::vector<uint64_t> a, b;
    for (const auto& p : lexical) a.push_back(p.first);
    for (const auto& p : dense) b.push_back(p.first);
    ranked = index::reciprocal_rank_fusion({a, b}, k);
  }
  std::vector<SearchHit> hits;
  for (const auto& [id, score] : ranked) {
    auto p = store_->get_passage(id);
    if (!p) continue;  // the index may lag RocksDB after a failed write
    // Only passages their document lists: not those of a document still being written in
    // parts, nor the retired ones of a replaced document awaiting deletion.
    auto d = store_->get_document(p->doc_id);
    if (!d || !std::binary_search(d->passage_ids.begin(), d->passage_ids.end(), id)) continue;
    SearchHit h;
    h.passage_id = id;
    h.score = score;
    h.passage = *p;
    h.title = d->title;
    h.source = d->source;
    hits.push_back(std::move(h));
    if (hits.size() == k) break;
  }
  return hits;
}

std::vector<float> KnowledgeStore::passage_embeddings(uint64_t id) const {
  auto e = store_->get_embeddings(id);
  if (!e) fail("passage ", id, " has no stored embeddings");
  return *e;
}

Json KnowledgeStore::info() const {
  const storage::Manifest& mf = store_->manifest();
  storage::StoreStats st = store_->stats();
  Json j;
  j["db"] = store_->path();
  j["schema_version"] = mf.schema_version;
  j["compressor_fingerprint"] = mf.compressor_fingerprint;
  j["compr_rate"] = mf.compr_rate;
  j["embedding_shape"] = {mf.embeddings_per_passage, mf.embedding_dim};
  j["embedding_dtype"] = storage::embedding_dtype_name(mf.embedding_dtype);
  j["context_max_length"] = *opt_.context_max_length;
  j["retriever_fingerprint"] = mf.retriever_fingerprint;
  j["index_factory"] = mf.index_factory;
  j["documents"] = st.documents;
  j["passages"] = st.passages;
  j["embeddings"] = st.embeddings;
  j["bm25_documents"] = st.bm25_documents;
  {
    std::shared_lock<WriterPriorityMutex> lock(mu_);
    j["index_vectors"] = dense_ ? dense_->size() : 0;
  }
  j["model"] = opt_.model_dir;
  j["retriever"] = opt_.retriever_dir;
  return j;
}

// ---------------------------------------------------------------------------------------
// Shards and readers catching up

IngestSummary KnowledgeStore::ingest_shard(const std::vector<std::string>& paths,
                                           const ingest::ReadOptions& ro,
                                           const IngestProgressFn& progress, int64_t index,
                                           int64_t count, const std::string& export_dir) {
  auto t0 = std::chrono::steady_clock::now();
  check_writable("ingest");
  if (count < 1 || count > storage::kMaxShards || index < 0 || index >= count) {
    fail("--shard ", index, "/", count, ": expected I/N with 0 <= I < N <= ", storage::kMaxShards);
  }
  loaded_model();
  IngestSummary sum;
  ingest::ReadResult rr = ingest::read_paths(paths, ro);
  sum.skipped = rr.skipped;
  sum.warnings = rr.warnings;
  // The run: every input document (every worker reads the same list), so that the shards of
  // one run get disjoint passage id ranges without talking to each other.
  std::vector<std::string> keys;
  keys.reserve(rr.documents.size());
  for (const auto& d : rr.documents) keys.push_back(d.id + '\n' + ingest::content_hash(d));
  std::sort(keys.begin(), keys.end());
  uint64_t run = fnv1a64("cocom-shard-run/" + std::to_string(count));
  for (const auto& k : keys) run = fnv1a64(k + '\n', run);
  std::vector<ingest::Document> mine;
  for (auto& d : rr.documents) {
    if (storage::shard_of_document(d.id, count) == index) mine.push_back(std::move(d));
  }
  store_->set_first_passage_id(storage::shard_first_passage_id(run, index));
  sum = ingest_all(mine, std::move(sum), progress);
  if (!sum.stopped_early) store_->export_shard(export_dir, index, count);
  sum.seconds = since(t0);
  return sum;
}

ImportSummary KnowledgeStore::import_shards(const std::string& db,
                                            const std::vector<std::string>& dirs) {
  auto t0 = std::chrono::steady_clock::now();
  if (db.empty()) fail("--db: a store directory is required");
  if (dirs.empty()) fail("store import: give at least one shard directory");
  // Every shard is read and checked before the store is touched.
  std::vector<storage::ShardContents> shards;
  for (const auto& d : dirs) shards.push_back(storage::read_shard(d));
  std::unique_ptr<storage::Store> store;
  if (file_exists(join_path(db, "CURRENT"))) {
    storage::Manifest none;
    none.schema_version = 0;
    store = storage::Store::open(db, none);
    if (store->manifest().schema_version == 0) store.reset();  // a creation cut off: again
  }
  if (!store) {
    storage::Manifest m = shards.front().manifest;
    m.schema_version = storage::kSchemaVersion;
    store = storage::Store::open(db, m);
    // The view at once: Engine::Open knows a store by it, also one whose import is cut off.
    write_store_view(*store);
    log::info("{}: created from the manifest of shard {}", db, shards.front().dir);
  }
  ImportSummary sum;
  sum.result = store->import_shards(shards);
  const storage::Manifest mf = store->manifest();
  if (mf.retriever_dim > 0) {
    const std::string path = join_path(db, "dense.faiss");
    bool fresh = false;
    if (sum.result.imported.empty() && file_exists(path)) {
      try {
        auto d = index::DenseIndex::load(path, mf.retriever_dim);
        fresh = d->saved_sequence() == store->sequence();
        sum.index_vectors = d->size();
      } catch (const Error&) {
      }
    }
    if (!fresh) {
      auto d = dense_from_store(*store, mf.index_factory, mf.retriever_dim);
      d->save(path, store->sequence());
      sum.index_vectors = d->size();
    }
  }
  write_store_view(*store);
  sum.seconds = since(t0);
  return sum;
}

bool KnowledgeStore::catch_up() {
  if (!opt_.read_only) return false;
  std::lock_guard<std::mutex> one(write_mu_);  // one catch-up at a time (a reader never writes)
  bool changed = false;
  try {
    {
      std::unique_lock<WriterPriorityMutex> lock(mu_);
      changed = store_->catch_up();
    }
    if (changed && retriever_) {
      const uint64_t seq = store_->sequence();
      std::unique_ptr<index::DenseIndex> fresh;
      if (file_exists(index_path_)) {
        try {
          auto d = index::DenseIndex::load(index_path_, retriever_->dim());
          if (d->saved_sequence() == seq) fresh = std::move(d);
        } catch (const Error&) {
        }
      }
      // Built beside the one in use: searches go on meanwhile (no catch-up can run).
      if (!fresh) fresh = dense_from_store(*store_, *opt_.index_factory, retriever_->dim());
      std::unique_lock<WriterPriorityMutex> lock(mu_);
      dense_ = std::move(fresh);
    }
  } catch (const Error& e) {
    log::warn("{}: could not catch up with the writer ({}); answering from the last view", opt_.db,
              e.what());
    return false;
  }
  return changed;
}

}  // namespace cocom::engine
