// The public API (include/cocom/cocom.h) over the knowledge store and the answering pipeline.
// Every entry point turns the exceptions of the layers below (cocom::Error, c10::Error,
// std::exception) into a Status whose message says what the caller can do.
#include "cocom/cocom.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>

#include "common/error.h"
#include "common/json_util.h"
#include "common/utf8.h"
#include "engine/api_internal.h"
#include "engine/knowledge_store.h"
#include "generate/cocom_generate.h"
#include "model/runtime.h"
#include "storage/shard.h"
#include "storage/store.h"

namespace cocom {

using namespace api;  // NOLINT: this file is the API layer

namespace {

engine::SearchMode to_internal(SearchMode m, bool has_dense) {
  switch (m) {
    case SearchMode::kHybrid:
      return engine::SearchMode::Hybrid;
    case SearchMode::kDense:
      return engine::SearchMode::Dense;
    case SearchMode::kBm25:
      return engine::SearchMode::Bm25;
    case SearchMode::kAuto:
      break;
  }
  return has_dense ? engine::SearchMode::Hybrid : engine::SearchMode::Bm25;
}

void check_mode(SearchMode m, bool has_dense, const char* option) {
  if ((m == SearchMode::kDense || m == SearchMode::kHybrid) && !has_dense) {
    throw_status(Status::FailedPrecondition(
        std::string(option) + " asks for " + (m == SearchMode::kDense ? "dense" : "hybrid") +
        " search, but the store has no dense retriever; set Options::retriever_dir (--retriever) "
        "when ingesting, or use SearchMode::kBm25 / kAuto (--mode bm25)"));
  }
}

// Refuses, before retrieval, a question whose compressed prompt with k passages of n slots
// would not fit the decoder's positions or the prompt memory budget (generate/'s estimate).
void check_budget(const model::CocomModel& m, const std::string& question, size_t k, int64_t n,
                  const char* option, const GenerationOptions& gen) {
  if (n < 1) return;  // an empty store: nothing will be retrieved
  const int64_t kk = static_cast<int64_t>(std::min<size_t>(k, size_t{1} << 24));
  const int64_t max_k = generate::max_passages(m, question, n, gen.max_new_tokens);
  if (kk <= max_k) return;
  const int64_t tokens = generate::qa_prompt_tokens(m, question, kk, n);
  const int64_t fits = generate::max_prompt_tokens(m, gen.max_new_tokens);
  const int64_t question_tokens = generate::qa_prompt_tokens(m, question, 1, n) - n;
  std::string msg = std::string(option) + " " + std::to_string(k) + ": the prompt would have " +
                    std::to_string(tokens) + " tokens (" + std::to_string(kk) + " passages x " +
                    std::to_string(n) + " context embeddings, plus about " +
                    std::to_string(question_tokens) + " for the question and template), but " +
                    std::to_string(fits) + " fit (the decoder has " +
                    std::to_string(m.decoder().config().max_position_embeddings) +
                    " positions; the prompt memory budget is " +
                    std::to_string(m.prompt_memory_bytes() >> 20) + " MB for up to " +
                    std::to_string(gen.max_new_tokens) + " new tokens, Options::prompt_memory_mb)";
  msg += max_k > 0 ? "; at most " + std::to_string(max_k) + " passages fit beside this question"
                   : "; the question alone is too long: shorten it";
  throw_status(Status::InvalidArgument(msg));
}

Passage to_passage(const engine::SearchHit& h) {
  Passage p;
  p.id = h.passage_id;
  p.document_id = h.passage.doc_id;
  p.title = h.title;
  p.source = h.source;
  p.index = h.passage.index;
  p.text = h.passage.text;
  p.score = h.score;
  return p;
}

IngestStats to_stats(const engine::IngestSummary& s) {
  IngestStats r;
  r.added = s.added;
  r.unchanged = s.unchanged;
  r.replaced = s.replaced;
  r.passages = s.passages;
  for (const auto& k : s.skipped) r.skipped.push_back({k.path, k.reason});
  r.warnings = s.warnings;
  r.stopped_early = s.stopped_early;
  r.seconds = s.seconds;
  r.formats = s.formats;
  return r;
}

engine::IngestProgressFn progress_fn(const IngestOptions& o) {
  if (!o.progress) return nullptr;
  return [&o](const engine::IngestProgress& p) {
    IngestProgress q;
    q.documents_done = p.documents_done;
    q.documents_total = p.documents_total;
    q.passages_done = p.passages_done;
    q.seconds = p.seconds;
    return o.progress(q);
  };
}

// Ingest's inputs: every path must exist.
void check_paths(const std::vector<std::string>& paths) {
  if (paths.empty()) throw_status(Status::InvalidArgument("no paths given (files or directories)"));
  for (const auto& p : paths) {
    if (!std::filesystem::exists(p))
      throw_status(Status::NotFound(p + ": no such file or directory"));
  }
}

ingest::ReadOptions read_options(const IngestOptions& options) {
  ingest::ReadOptions ro;
  ro.include = options.include;
  ro.exclude = options.exclude;
  ro.source_name = options.source_name;
  if (options.max_file_bytes < 0) {
    throw_status(Status::InvalidArgument("IngestOptions::max_file_bytes " +
                                         std::to_string(options.max_file_bytes) +
                                         ": must be >= 0 (0 = no limit)"));
  }
  if (options.max_nesting_depth < 1) {
    throw_status(Status::InvalidArgument("IngestOptions::max_nesting_depth " +
                                         std::to_string(options.max_nesting_depth) +
                                         ": must be at least 1"));
  }
  for (const auto& [field, value] :
       {std::make_pair("max_unpacked_bytes", options.max_unpacked_bytes),
        std::make_pair("max_archive_entries", options.max_archive_entries)}) {
    if (value < 0) {
      throw_status(Status::InvalidArgument(std::string("IngestOptions::") + field + " " +
                                           std::to_string(value) +
                                           ": must be >= 0 (0 = no limit)"));
    }
  }
  ro.max_file_bytes = options.max_file_bytes;
  ro.max_nesting_depth = options.max_nesting_depth;
  ro.max_unpacked_bytes = options.max_unpacked_bytes;
  ro.max_archive_entries = options.max_archive_entries;
  return ro;
}

const char* code_name(Status::Code c) {
  switch (c) {
    case Status::Code::kOk:
      return "OK";
    case Status::Code::kInvalidArgument:
      return "InvalidArgument";
    case Status::Code::kNotFound:
      return "NotFound";
    case Status::Code::kCorruption:
      return "Corruption";
    case Status::Code::kIOError:
      return "IOError";
    case Status::Code::kCancelled:
      return "Cancelled";
    case Status::Code::kFailedPrecondition:
      return "FailedPrecondition";
    case Status::Code::kInternal:
      return "Internal";
  }
  return "Unknown";
}

// Bytes per stored embedding value (int8 stores carry a small per-row scale besides).
int64_t dtype_bytes(storage::EmbeddingDType t) {
  switch (t) {
    case storage::EmbeddingDType::F32:
      return 4;
    case storage::EmbeddingDType::F16:
    case storage::EmbeddingDType::BF16:
      return 2;
    case storage::EmbeddingDType::I8:
      break;
  }
  return 1;
}

void validate_options(const Options& o) {
  auto bad = [](const std::string& m) { throw_status(Status::InvalidArgument(m)); };
  if (o.db_path.empty()) bad("Options::db_path is empty: name the store directory (--db)");
  if (o.top_k == 0) bad("Options::top_k is 0: retrieve at least 1 passage per question (--k)");
  if (o.passages_per_batch < 1) {
    bad("Options::passages_per_batch " + std::to_string(o.passages_per_batch) +
        ": must be at least 1");
  }
  if (o.prompt_memory_mb < 1) {
    bad("Options::prompt_memory_mb " + std::to_string(o.prompt_memory_mb) +
        ": must be at least 1 (MB)");
  }
  if (o.threads < 0)
    bad("Options::threads " + std::to_string(o.threads) + ": must be 0 (all cores) or positive");
  if (o.index_factory && o.index_factory->empty())
    bad("Options::index_factory is empty: use a FAISS factory string such as \"Flat\"");
  const int cml = o.context_max_length.value_or(128);
  if (cml < 8 || cml > 8192) {
    bad("Options::context_max_length " + std::to_string(cml) +
        ": must be between 8 and 8192 compressor tokens (the published models use 128)");
  }
  if (o.chunk_overlap_tokens && (*o.chunk_overlap_tokens < 0 || *o.chunk_overlap_tokens >= cml)) {
    bad("Options::chunk_overlap_tokens " + std::to_string(*o.chunk_overlap_tokens) +
        ": must be >= 0 and smaller than context_max_length");
  }
  check_generation(o.generation, "Options::generation");
  try {
    model::parse_device(o.device);
  } catch (const Error& e) {
    bad("Options::device '" + o.device + "': " + e.what());
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(code_name(code_)) + ": " + message_;
}

void AbortOnBadResultAccess(const Status& s) {
  std::fprintf(stderr, "cocom: value of a failed Result accessed: %s\n", s.ToString().c_str());
  std::abort();
}

const char* Version() { return "0.1.0"; }

std::string DefaultModelDir() {
  auto has_model = [](const std::string& dir) {
    std::error_code ec;
    return !dir.empty() && std::filesystem::is_regular_file(join_path(dir, "config.json"), ec);
  };
  if (const char* env = std::getenv("COCOM_DEFAULT_MODEL")) {
    return has_model(env) ? std::string(env) : std::string();
  }
  for (const char* dir : {COCOM_INSTALLED_MODEL_DIR, COCOM_SOURCE_MODEL_DIR}) {
    if (has_model(dir)) return dir;
  }
  return {};
}

struct Engine::Impl {
  Options opt;
  std::unique_ptr<engine::KnowledgeStore> ks;
  std::atomic<int64_t> questions{0};
  // The public Model: given to Open, or wrapped around the one the store loaded.
  mutable std::mutex model_mu;
  mutable std::shared_ptr<Model> model;

  Result<Answer> ask(const std::string& question, const TokenCallback* on_token,
                     const AskOptions& options);
  std::shared_ptr<Model> get_model() const;
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

Status Engine::Open(const Options& options, std::unique_ptr<Engine>* engine) {
  return Open(options, nullptr, engine);
}

Status Engine::Open(const Options& options, std::shared_ptr<Model> model,
                    std::unique_ptr<Engine>* engine) {
  if (engine == nullptr) return Status::InvalidArgument("Open: the engine pointer is null");
  engine->reset();
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->model = model;
  Status s = guard("Open", [&] {
    const Options& o = options;
    validate_options(o);
    configure_logging(o.log_level, o.log_callback, o.verbose);
    if (!model) {
      model::RuntimeOptions ro;  // 0 = all cores (libtorch's own default can be 1 thread)
      ro.threads = o.threads;
      ro.device = o.device;
      model::init_runtime(ro);
    }
    const bool exists = std::filesystem::exists(join_path(o.db_path, "cocom-db.json"));
    if (!exists) {
      if (!o.create_if_missing || o.read_only) {
        throw_status(Status::NotFound(
            "no cocom store at " + o.db_path +
            (o.read_only ? " (Options::read_only)" : " (Options::create_if_missing is false)") +
            ": check the path, or create the store first (cocom ingest --db DIR --model DIR)"));
      }
      if (!model && o.model_dir.empty() && DefaultModelDir().empty()) {
        throw_status(Status::InvalidArgument(
            "Options::model_dir is empty and no default model was found (COCOM_DEFAULT_MODEL, " +
            std::string(COCOM_INSTALLED_MODEL_DIR) + ", " + COCOM_SOURCE_MODEL_DIR +
            "): creating the store at " + o.db_path + " needs a COCOM checkpoint directory"));
      }
    }
    if (!o.model_dir.empty() && !dir_exists(o.model_dir)) {
      throw_status(Status::NotFound("Options::model_dir " + o.model_dir +
                                    ": no such directory (a COCOM checkpoint directory; --model)"));
    }
    if (!o.retriever_dir.empty() && !dir_exists(o.retriever_dir)) {
      throw_status(
          Status::NotFound("Options::retriever_dir " + o.retriever_dir +
                           ": no such directory (a sentence-transformers model; --retriever)"));
    }
    engine::KnowledgeStoreOptions ko;
    ko.db = o.db_path;
    ko.create_if_missing = o.create_if_missing;
    ko.read_only = o.read_only;
    ko.retriever_dir = o.retriever_dir;
    ko.index_factory = o.index_factory;
    ko.bm25_language = o.bm25_language;
    if (o.embedding_dtype) ko.embedding_dtype = EmbeddingDTypeName(*o.embedding_dtype);
    if (o.context_max_length) ko.context_max_length = *o.context_max_length;
    if (o.chunk_overlap_tokens) ko.chunk_overlap_tokens = *o.chunk_overlap_tokens;
    ko.query_prefix = o.query_prefix;
    ko.passage_prefix = o.passage_prefix;
    ko.passages_per_batch = o.passages_per_batch;
    ko.need_model = o.load_model_eagerly;
    if (model) {
      std::shared_ptr<const model::CocomModel> m = InternalAccess::cocom_model(*model);
      if (!o.model_dir.empty() && std::filesystem::path(o.model_dir).lexically_normal() !=
                                      std::filesystem::path(m->dir()).lexically_normal()) {
        throw_status(Status::InvalidArgument(
            "Options::model_dir " + o.model_dir + " is not the directory of the Model given (" +
            m->dir() + "): leave it empty, or open the Engine without a Model"));
      }
      ko.model = std::move(m);
      ko.cocom.device = ko.model->decoder().device();
    } else {
      for (const auto* t : {&o.decoder_tokenizer, &o.compressor_tokenizer}) {
        if (!t->empty() && !dir_exists(*t)) {
          throw_status(Status::NotFound(std::string(t == &o.decoder_tokenizer
                                                        ? "Options::decoder_tokenizer "
                                                        : "Options::compressor_tokenizer ") +
                                        *t + ": no such directory"));
        }
      }
      ko.model_dir = o.model_dir;
      ko.cocom.decoder_tokenizer = o.decoder_tokenizer;
      ko.cocom.compressor_tokenizer = o.compressor_tokenizer;
      ko.cocom.device = model::parse_device(o.device);
      ko.cocom.decoder_weights = to_internal(o.weights);
      ko.cocom.prompt_memory_mb = o.prompt_memory_mb;
    }
    impl->ks = engine::KnowledgeStore::open(ko);
    check_mode(o.search_mode, impl->ks->has_dense(), "Options::search_mode");
  });
  if (!s.ok()) return s;
  engine->reset(new Engine(std::move(impl)));
  return s;
}

std::shared_ptr<Model> Engine::Impl::get_model() const {
  std::lock_guard<std::mutex> lock(model_mu);
  if (!model) model = InternalAccess::wrap_model(ks->shared_model(), opt.device);
  return model;
}

Result<std::shared_ptr<Model>> Engine::GetModel() const {
  std::shared_ptr<Model> m;
  Status s = guard("GetModel", [&] { m = impl_->get_model(); });
  if (!s.ok()) return s;
  return m;
}

engine::KnowledgeStore& InternalAccess::knowledge_store(Engine& e) { return *e.impl_->ks; }

std::shared_ptr<const model::CocomModel> InternalAccess::cocom_model(const Engine& e) {
  if (!e.impl_->ks->model_loaded()) return nullptr;
  return e.impl_->ks->shared_model();
}

Result<IngestStats> Engine::Ingest(const std::vector<std::string>& paths,
                                   const IngestOptions& options) {
  IngestStats out;
  Status s = guard("Ingest", [&] {
    check_paths(paths);
    out = to_stats(impl_->ks->ingest_paths(paths, read_options(options), progress_fn(options)));
  });
  if (!s.ok()) return s;
  return out;
}

Result<IngestStats> Engine::IngestDocuments(const std::vector<Document>& documents,
                                            const IngestOptions& options) {
  IngestStats out;
  Status s = guard("IngestDocuments", [&] {
    std::vector<ingest::Document> docs;
    std::vector<std::string> warnings;
    std::set<std::string> seen;
    for (size_t i = 0; i < documents.size(); ++i) {
      const Document& d = documents[i];
      if (d.id.empty()) {
        throw_status(Status::InvalidArgument("documents[" + std::to_string(i) +
                                             "].id is empty: every document needs a stable id"));
      }
      if (!seen.insert(d.id).second) {
        warnings.push_back("document id '" + d.id + "' given twice; the first one was kept");
        continue;
      }
      ingest::Document e;
      e.id = d.id;
      e.title = d.title;
      e.text = d.text;
      e.source = d.source;
      e.meta_json = "{}";
      size_t fixed = utf8::repair(&e.text) + utf8::repair(&e.title);
      if (fixed > 0) {
        warnings.push_back("document '" + d.id + "': " + std::to_string(fixed) +
                           " invalid UTF-8 sequence(s) replaced with U+FFFD");
      }
      docs.push_back(std::move(e));
    }
    engine::IngestSummary sum = impl_->ks->ingest_documents(docs, progress_fn(options));
    sum.warnings.insert(sum.warnings.begin(), warnings.begin(), warnings.end());
    out = to_stats(sum);
  });
  if (!s.ok()) return s;
  return out;
}

Result<int64_t> Engine::Remove(const std::string& id_or_source) {
  int64_t n = 0;
  Status s = guard("Remove", [&] {
    if (id_or_source.empty())
      throw_status(Status::InvalidArgument("the document id or source is empty"));
    n = impl_->ks->remove(id_or_source);
  });
  if (!s.ok()) return s;
  return n;
}

Result<std::vector<Passage>> Engine::Search(const std::string& query,
                                            const SearchOptions& options) const {
  std::vector<Passage> out;
  Status s = guard("Search", [&] {
    if (query.find_first_not_of(" \t\r\n") == std::string::npos) {
      throw_status(Status::InvalidArgument("the query is empty"));
    }
    impl_->ks->catch_up();  // a read-only Engine: what the writer committed since
    const size_t k = options.k ? options.k : impl_->opt.top_k;
    const SearchMode mode = options.mode.value_or(impl_->opt.search_mode);
    check_mode(mode, impl_->ks->has_dense(), "SearchOptions::mode");
    for (const auto& h : impl_->ks->search(query, k, to_internal(mode, impl_->ks->has_dense()))) {
      out.push_back(to_passage(h));
    }
  });
  if (!s.ok()) return s;
  return out;
}

Result<Answer> Engine::Ask(const std::string& question, const AskOptions& options) {
  return impl_->ask(question, nullptr, options);
}

Result<Answer> Engine::AskStreaming(const std::string& question, const TokenCallback& on_token,
                                    const AskOptions& options) {
  if (!on_token) return Status::InvalidArgument("AskStreaming: the token callback is empty");
  return impl_->ask(question, &on_token, options);
}

Result<Answer> Engine::Impl::ask(const std::string& question, const TokenCallback* on_token,
                                 const AskOptions& options) {
  Answer a;
  Status s = guard(on_token ? "AskStreaming" : "Ask", [&] {
    const auto t0 = Clock::now();
    if (question.find_first_not_of(" \t\r\n") == std::string::npos) {
      throw_status(Status::InvalidArgument("the question is empty"));
    }
    ks->catch_up();  // a read-only Engine: what the writer committed since
    const size_t k = options.k ? options.k : opt.top_k;
    const SearchMode mode = options.mode.value_or(opt.search_mode);
    check_mode(mode, ks->has_dense(), "AskOptions::mode");
    const bool no_compress = options.no_compress.value_or(opt.no_compress);
    const GenerationOptions gen = options.generation.value_or(opt.generation);
    check_generation(gen, options.generation ? "AskOptions::generation" : "Options::generation");

    const model::CocomModel& m = ks->loaded_model();
    if (!no_compress) {
      check_budget(m, question, k, ks->store().manifest().embeddings_per_passage,
                   options.k ? "AskOptions::k" : "Options::top_k", gen);
    }
    engine::Retrieval r = ks->retrieve(question, k, to_internal(mode, ks->has_dense()),
                                       /*with_embeddings=*/!no_compress);
    if (r.hits.empty()) {
      throw_status(Status::NotFound(
          "no stored passage matches the question" +
          std::string(
              ks->has_dense()
                  ? ""
                  : " (BM25 needs a shared word; a dense retriever would always find some)") +
          "; ingest documents first or rephrase it"));
    }
    a.compressed = !no_compress;
    for (const auto& h : r.hits) a.sources.push_back(to_passage(h));
    if (options.on_sources) options.on_sources(a.sources);

    generate::AnswerRequest req;
    req.question = question;
    double load_ms = 0;
    if (no_compress) {
      const auto t_load = Clock::now();
      for (const auto& h : r.hits) req.passages.push_back(h.passage.text);
      load_ms = ms_since(t_load);
    } else {
      load_ms = r.load_seconds * 1e3;
      const int64_t n = r.embeddings_per_passage, h = r.embedding_dim;
      at::Tensor emb = at::empty({static_cast<int64_t>(r.hits.size()), n, h}, at::kFloat);
      for (size_t i = 0; i < r.embeddings.size(); ++i) {
        std::copy(r.embeddings[i].begin(), r.embeddings[i].end(),
                  emb[static_cast<int64_t>(i)].data_ptr<float>());
      }
      req.contexts = emb.to(m.decoder().device());
    }
    generate::Batcher* batcher = nullptr;
    {
      std::lock_guard<std::mutex> lock(model_mu);
      if (model) batcher = InternalAccess::batcher(*model);
    }
    AnswerRun run = run_answer(m, std::move(req), gen, on_token, batcher);
    a.text = std::move(run.text);
    a.cancelled = run.cancelled;
    a.timings = run.timings;
    a.timings.retrieve_ms = r.retrieve_seconds * 1e3;
    a.timings.load_embeddings_ms = load_ms;
    a.timings.total_ms = ms_since(t0);
    questions.fetch_add(1);
  });
  if (!s.ok()) return s;
  return a;
}

Result<EngineStats> Engine::Stats() const {
  EngineStats st;
  Status s = guard("Stats", [&] {
    impl_->ks->catch_up();
    Json info = impl_->ks->info();
    const storage::Manifest& mf = impl_->ks->store().manifest();
    st.db_path = impl_->opt.db_path;
    st.model_dir = info.value("model", std::string());
    st.retriever_dir = info.value("retriever", std::string());
    st.documents = info.value("documents", int64_t{0});
    st.passages = info.value("passages", int64_t{0});
    st.compression_rate = mf.compr_rate;
    st.embeddings_per_passage = mf.embeddings_per_passage;
    st.embedding_dim = mf.embedding_dim;
    st.embedding_dtype = to_public(mf.embedding_dtype);
    st.index_factory = mf.index_factory;
    st.bm25_analyzer = mf.analyzer.empty() ? "words" : mf.analyzer;
    st.embedding_bytes = info.value("embeddings", int64_t{0}) * mf.embeddings_per_passage *
                         mf.embedding_dim * dtype_bytes(mf.embedding_dtype);
    st.has_dense_retriever = impl_->ks->has_dense();
    st.model_loaded = impl_->ks->model_loaded();
    st.questions_answered = impl_->questions.load();
    info["embedding_bytes"] = st.embedding_bytes;
    info["bm25_analyzer"] = st.bm25_analyzer;
    info["model_loaded"] = st.model_loaded;
    info["questions_answered"] = st.questions_answered;
    info["has_dense_retriever"] = st.has_dense_retriever;
    info["version"] = Version();
    st.json = info.dump(2, ' ', false, Json::error_handler_t::replace);
  });
  if (!s.ok()) return s;
  return st;
}

// ---------------------------------------------------------------------------------------------
// Shards

Result<IngestStats> IngestShard(const Options& options, const std::vector<std::string>& paths,
                                const ShardOptions& shard, const IngestOptions& ingest) {
  namespace fs = std::filesystem;
  IngestStats out;
  Status s = guard("IngestShard", [&] {
    if (shard.count < 1 || shard.count > static_cast<int>(storage::kMaxShards) || shard.index < 0 ||
        shard.index >= shard.count) {
      throw_status(Status::InvalidArgument(
          "ShardOptions " + std::to_string(shard.index) + "/" + std::to_string(shard.count) +
          " (--shard I/N): expected 0 <= I < N <= " + std::to_string(storage::kMaxShards)));
    }
    if (shard.export_dir.empty()) {
      throw_status(Status::InvalidArgument(
          "ShardOptions::export_dir is empty (--export-sst DIR): name where the shard goes"));
    }
    check_paths(paths);
    const ingest::ReadOptions ro = read_options(ingest);
    const fs::path dir(shard.export_dir);
    const fs::path work = dir / "work";
    std::error_code ec;
    if (fs::exists(dir / "shard.json", ec)) {
      throw_status(Status::InvalidArgument(
          "--export-sst " + shard.export_dir +
          ": holds a finished shard already (shard.json); use another directory"));
    }
    if (fs::exists(dir, ec)) {
      if (!fs::is_directory(dir, ec)) {
        throw_status(
            Status::InvalidArgument("--export-sst " + shard.export_dir + ": is not a directory"));
      }
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.path().filename() != "work") {
          throw_status(Status::InvalidArgument(
              "--export-sst " + shard.export_dir + ": is not empty (it holds " +
              e.path().filename().string() + "); a shard goes into a new directory"));
        }
      }
    }
    fs::remove_all(work, ec);  // what a killed worker left
    Options o = options;
    o.db_path = work.string();
    o.create_if_missing = true;
    o.read_only = false;
    o.load_model_eagerly = true;
    std::unique_ptr<Engine> engine;
    Status st = Engine::Open(o, &engine);
    if (!st.ok()) throw_status(st);
    out = to_stats(InternalAccess::knowledge_store(*engine).ingest_shard(
        paths, ro, progress_fn(ingest), shard.index, shard.count, shard.export_dir));
    engine.reset();
    fs::remove_all(work, ec);
  });
  if (!s.ok()) return s;
  return out;
}

Result<ImportStats> ImportShards(const std::string& db_path,
                                 const std::vector<std::string>& shard_dirs) {
  ImportStats out;
  Status s = guard("ImportShards", [&] {
    if (db_path.empty())
      throw_status(Status::InvalidArgument("the store directory is empty (--db)"));
    if (shard_dirs.empty()) {
      throw_status(Status::InvalidArgument("no shard directories given"));
    }
    const engine::ImportSummary sum = engine::KnowledgeStore::import_shards(db_path, shard_dirs);
    out.imported = sum.result.imported;
    out.already_imported = sum.result.already;
    out.documents = sum.result.documents;
    out.passages = sum.result.passages;
    out.index_vectors = sum.index_vectors;
    out.seconds = sum.seconds;
  });
  if (!s.ok()) return s;
  return out;
}

}  // namespace cocom
