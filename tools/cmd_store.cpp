// cocom ingest / search / rm / info --db: the knowledge store from the command line, through
// the public C++ API only (include/cocom/cocom.h), like ask and console.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cocom/cocom.h"
#include "common/error.h"
#include "common/json_util.h"
#include "storage/store.h"
#include "tools/commands.h"

namespace cocom::cli {

namespace {

// A failed call of the public API ends the command with its message.
void check(const Status& s) {
  if (!s.ok()) fail(cli_terms(s.ToString()));
}
template <class T>
T value_of(Result<T> r) {
  check(r.status());
  return std::move(r).value();
}

}  // namespace

Status open_for_reading(Options o, std::unique_ptr<Engine>* engine) {
  Status s = Engine::Open(o, engine);
  if (s.ok() || s.code() != Status::Code::kIOError ||
      s.message().find("is locked") == std::string::npos) {
    return s;
  }
  o.read_only = true;
  s = Engine::Open(o, engine);
  if (s.ok()) {
    std::fprintf(stderr,
                 "cocom: note: %s is being written by another process; reading what it had "
                 "committed when this command started\n",
                 o.db_path.c_str());
  }
  return s;
}

cocom::WeightFormat weights_flag(const std::string& value) {
  const auto f = ParseWeightFormat(value);
  if (!f) fail("--weights ", value, ": expected fp32, bf16, int8 or int8g");
  return *f;
}

cocom::EmbeddingDType embedding_dtype_flag(const std::string& value) {
  const auto d = ParseEmbeddingDType(value);
  if (!d) fail("--embedding-dtype ", value, ": expected fp16, bf16, fp32 or int8");
  return *d;
}

namespace {

Options store_options(const GlobalOptions& g, const StoreArgs& a) {
  Options o;
  o.db_path = a.db;
  o.model_dir = a.model;
  o.retriever_dir = a.retriever;
  if (!a.index_factory.empty()) o.index_factory = a.index_factory;
  if (!a.language.empty()) o.bm25_language = a.language;
  if (!a.embedding_dtype.empty()) o.embedding_dtype = embedding_dtype_flag(a.embedding_dtype);
  o.device = g.device;
  o.threads = g.threads;
  o.verbose = g.verbose;
  o.log_level = g.verbose ? LogLevel::kDebug : LogLevel::kWarn;
  o.decoder_tokenizer = a.decoder_tokenizer;
  o.compressor_tokenizer = a.compressor_tokenizer;
  o.weights = weights_flag(a.weights);
  // Empty flags leave the store's settings as they are.
  if (!a.query_prefix.empty()) o.query_prefix = a.query_prefix;
  if (!a.passage_prefix.empty()) o.passage_prefix = a.passage_prefix;
  return o;
}

std::unique_ptr<Engine> open_engine(const Options& o) {
  std::unique_ptr<Engine> e;
  check(Engine::Open(o, &e));
  return e;
}

std::unique_ptr<Engine> open_engine_for_reading(const Options& o) {
  std::unique_ptr<Engine> e;
  check(open_for_reading(o, &e));
  return e;
}

Json stats_json(const Engine& e) { return parse_json_text(value_of(e.Stats()).json, "Stats"); }

std::string eta(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "?";
  char buf[32];
  int s = static_cast<int>(seconds + 0.5);
  std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
  return buf;
}

// Size of the input before ingesting it: bytes and files under `paths` (directories walked;
// entries that cannot be read are skipped; --include/--exclude are not applied).
struct InputSize {
  uint64_t bytes = 0, files = 0;
};
InputSize input_size(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  InputSize in;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) {
      in.bytes += fs::file_size(p, ec);
      in.files += 1;
      continue;
    }
    if (!fs::is_directory(p, ec)) continue;
    for (fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec),
         end;
         !ec && it != end; it.increment(ec)) {
      std::error_code ec2;
      if (!it->is_regular_file(ec2)) continue;
      const uintmax_t sz = it->file_size(ec2);
      if (ec2) continue;
      in.bytes += sz;
      in.files += 1;
    }
  }
  return in;
}

// A large input (> 1000 files or > 50 MB) gets an estimate of what its context embeddings
// will take, on stderr, before any work starts.
void print_storage_estimate(const Json& info, int64_t context_tokens,
                            const std::vector<std::string>& paths) {
  const InputSize in = input_size(paths);
  if (in.files <= 1000 && in.bytes <= 50000000) return;
  const int64_t r = info["compr_rate"].get<int64_t>();
  const int64_t H = info["embedding_shape"][1].get<int64_t>();
  const std::string dt = info["embedding_dtype"].get<std::string>();
  auto dtype = storage::parse_embedding_dtype(dt);
  if (r < 1 || H < 1 || !dtype) return;
  const storage::StorageEstimate e =
      storage::estimate_embedding_storage(in.bytes, context_tokens, r, H, *dtype, in.files);
  std::fprintf(stderr,
               "ingest: %s in %llu files: about %lld passages x %lld vectors x %lld values (%s) "
               "= about %s of context embeddings (estimated at ~4 bytes per token of %lld-token "
               "passages, at least one per file; text, postings and the index come on top)\n",
               storage::human_bytes(in.bytes).c_str(), static_cast<unsigned long long>(in.files),
               static_cast<long long>(e.passages), static_cast<long long>(e.vectors_per_passage),
               static_cast<long long>(H), dt.c_str(), storage::human_bytes(e.total_bytes).c_str(),
               static_cast<long long>(context_tokens));
  std::fflush(stderr);
}

}  // namespace

int cmd_ingest(const GlobalOptions& g, const IngestArgs& a) {
  if (a.paths.empty()) fail("ingest: give at least one file or directory");
  // A mistyped path is an error before anything is opened, so it never creates a store.
  for (const auto& p : a.paths) {
    std::error_code ec;
    if (!std::filesystem::exists(p, ec)) fail("ingest: ", p, ": no such file or directory");
  }
  const bool sharded = !a.shard.empty() || !a.export_sst.empty();
  ShardOptions so;
  if (sharded) {
    if (a.shard.empty() || a.export_sst.empty()) {
      fail("--shard I/N and --export-sst DIR go together (a worker of a sharded ingestion)");
    }
    if (!a.store.db.empty()) {
      fail("--db ", a.store.db, ": a worker with --export-sst writes no store; merge the shards ",
           "with cocom store import --db DIR SHARD_DIR...");
    }
    const size_t slash = a.shard.find('/');
    try {
      size_t used = 0, used2 = 0;
      if (slash == std::string::npos) throw std::invalid_argument("no slash");
      so.index = std::stoi(a.shard.substr(0, slash), &used);
      so.count = std::stoi(a.shard.substr(slash + 1), &used2);
      if (used != slash || used2 != a.shard.size() - slash - 1) throw std::invalid_argument("");
    } catch (const std::exception&) {
      fail("--shard ", a.shard, ": expected I/N, e.g. 0/3");
    }
    so.export_dir = a.export_sst;
  } else if (a.store.db.empty()) {
    fail("--db: a store directory is required");
  }
  Options o = store_options(g, a.store);
  o.load_model_eagerly = true;  // fail before reading anything when the model cannot load
  if (a.overlap >= 0) o.chunk_overlap_tokens = static_cast<int>(a.overlap);
  if (a.passages_per_batch < 1 || a.passages_per_batch > 1000000) {
    fail("--passages-per-batch ", a.passages_per_batch, ": must be between 1 and 1000000");
  }
  o.passages_per_batch = static_cast<int>(a.passages_per_batch);
  // A setting other than the store's own (dtype, index, overlap, prefixes) is refused by Open.
  std::unique_ptr<Engine> engine;
  if (!sharded) {
    engine = open_engine(o);
    const Json info = stats_json(*engine);
    print_storage_estimate(info, info.value("context_max_length", int64_t{128}), a.paths);
  }
  IngestOptions io;
  io.include = a.include;
  io.exclude = a.exclude;
  if (a.max_file_mb < 0 || a.max_file_mb > (int64_t{1} << 30)) {
    fail("--max-file-mb ", a.max_file_mb, ": must be between 0 (no limit) and 2^30");
  }
  if (a.max_nesting_depth < 1) fail("--max-nesting-depth ", a.max_nesting_depth, ": must be >= 1");
  io.max_file_bytes = a.max_file_mb << 20;
  if (a.max_unpacked_mb < 0 || a.max_unpacked_mb > (int64_t{1} << 30)) {
    fail("--max-unpacked-mb ", a.max_unpacked_mb, ": must be between 0 (no limit) and 2^30");
  }
  io.max_unpacked_bytes = a.max_unpacked_mb << 20;
  io.max_nesting_depth = a.max_nesting_depth;
  const bool tty = ::isatty(2) && !a.json && !a.progress_lines;
  // Ctrl-C stops after the document being written; what was committed stays.
  SigintScope sigint;
  io.progress = [&](const IngestProgress& p) {
    if (SigintScope::interrupted()) return false;
    if (!tty && !a.progress_lines) return true;
    double rate = p.seconds > 0 ? double(p.passages_done) / p.seconds : 0;
    double per_doc = p.documents_done ? p.seconds / double(p.documents_done) : 0;
    std::fprintf(stderr, "%s%zu/%zu documents  %lld passages  %.1f passages/s  ETA %s%s",
                 tty ? "\r  " : "ingest: ", p.documents_done, p.documents_total,
                 static_cast<long long>(p.passages_done), rate,
                 eta(per_doc * double(p.documents_total - p.documents_done)).c_str(),
                 tty ? "   " : "\n");
    std::fflush(stderr);
    return true;
  };
  IngestStats s =
      sharded ? value_of(IngestShard(o, a.paths, so, io)) : value_of(engine->Ingest(a.paths, io));
  if (tty) std::fprintf(stderr, "\n");
  for (const auto& w : s.warnings) std::fprintf(stderr, "cocom: warning: %s\n", w.c_str());
  if (s.stopped_early) {
    std::fprintf(stderr, "cocom: interrupted: the documents committed before Ctrl-C are kept\n");
  }
  // Every named input skipped (nothing readable, every file filtered out): a failure.
  const bool nothing = s.added + s.unchanged + s.replaced == 0 && !s.skipped.empty();
  const int rc = s.stopped_early ? 130 : nothing ? 1 : 0;
  if (a.json) {
    Json j;
    j["added"] = s.added;
    j["unchanged"] = s.unchanged;
    j["replaced"] = s.replaced;
    j["passages"] = s.passages;
    j["seconds"] = s.seconds;
    Json sk = Json::array();
    for (const auto& k : s.skipped) sk.push_back({{"path", k.path}, {"reason", k.reason}});
    j["skipped"] = sk;
    j["warnings"] = s.warnings;
    j["formats"] = s.formats;
    j["stopped_early"] = s.stopped_early;
    if (engine) j["store"] = stats_json(*engine);
    if (sharded && !s.stopped_early) j["shard"] = so.export_dir;
    std::cout << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    return rc;
  }
  std::string skipped;
  if (!s.formats.empty()) {  // what was read, by format
    skipped += "\n  read:";
    for (const auto& [format, files] : s.formats) {
      skipped += (skipped.back() == ':' ? " " : ", ") + std::to_string(files) + " " + format;
    }
  }
  for (const auto& k : s.skipped) skipped += "\n  skipped " + k.path + ": " + k.reason;
  std::printf(
      "%lld added, %lld unchanged, %lld replaced, %zu skipped; %lld passages in %.1f s (%.1f "
      "passages/s)%s\n",
      static_cast<long long>(s.added), static_cast<long long>(s.unchanged),
      static_cast<long long>(s.replaced), s.skipped.size(), static_cast<long long>(s.passages),
      s.seconds, s.seconds > 0 ? double(s.passages) / s.seconds : 0.0, skipped.c_str());
  if (sharded && !s.stopped_early) {
    std::printf("shard %d/%d written to %s (merge with: cocom store import --db DIR %s ...)\n",
                so.index, so.count, so.export_dir.c_str(), so.export_dir.c_str());
  }
  if (nothing) std::fprintf(stderr, "cocom: error: nothing ingested: every input was skipped\n");
  return rc;
}

int cmd_store_import(const GlobalOptions& g, const ImportArgs& a) {
  (void)g;
  ImportStats s = value_of(ImportShards(a.db, a.shards));
  if (a.json) {
    Json j;
    j["imported"] = s.imported;
    j["already_imported"] = s.already_imported;
    j["documents"] = s.documents;
    j["passages"] = s.passages;
    j["index_vectors"] = s.index_vectors;
    j["seconds"] = s.seconds;
    std::cout << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    return 0;
  }
  for (const auto& d : s.already_imported) {
    std::printf("%s: imported before, skipped\n", d.c_str());
  }
  std::printf(
      "%zu shard(s) imported into %s: %lld documents, %lld passages in %.2f s (%.0f "
      "passages/s)%s\n",
      s.imported.size(), a.db.c_str(), static_cast<long long>(s.documents),
      static_cast<long long>(s.passages), s.seconds,
      s.seconds > 0 ? double(s.passages) / s.seconds : 0.0,
      s.index_vectors > 0
          ? ("; dense index rebuilt: " + std::to_string(s.index_vectors) + " vectors").c_str()
          : "");
  return 0;
}

int cmd_search(const GlobalOptions& g, const SearchArgs& a) {
  Options o = store_options(g, a.store);
  o.create_if_missing = false;  // a mistyped --db is an error, not a new empty store
  if (a.k < 1) fail("--k ", a.k, ": must be at least 1");
  SearchOptions so;
  so.k = static_cast<size_t>(a.k);
  if (a.mode == "dense") {
    so.mode = SearchMode::kDense;
  } else if (a.mode == "bm25") {
    so.mode = SearchMode::kBm25;
  } else if (a.mode == "hybrid") {
    so.mode = SearchMode::kHybrid;
  } else if (!a.mode.empty()) {
    fail("--mode ", a.mode, ": expected dense, bm25 or hybrid");
  }
  std::unique_ptr<Engine> engine = open_engine_for_reading(o);
  const bool dense = value_of(engine->Stats()).has_dense_retriever;
  const std::string mode_name = a.mode.empty() ? (dense ? "hybrid" : "bm25") : a.mode;
  std::vector<Passage> hits = value_of(engine->Search(a.query, so));
  if (a.json) {
    Json arr = Json::array();
    for (const auto& h : hits) {
      arr.push_back({{"passage_id", h.id},
                     {"score", h.score},
                     {"document_id", h.document_id},
                     {"title", h.title},
                     {"source", h.source},
                     {"index", h.index},
                     {"text", h.text}});
    }
    std::cout << Json({{"query", a.query}, {"mode", mode_name}, {"hits", arr}})
                     .dump(2, ' ', false, Json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  if (hits.empty()) std::printf("no passages found\n");
  int rank = 0;
  for (const auto& h : hits) {
    std::string excerpt = h.text.substr(0, 200);
    std::printf("%d. [%.4f] %s (%s, passage %lld)\n   %s\n", ++rank, h.score, h.title.c_str(),
                h.source.c_str(), static_cast<long long>(h.index), excerpt.c_str());
  }
  return 0;
}

int cmd_rm(const GlobalOptions& g, const RmArgs& a) {
  Options o = store_options(g, a.store);
  o.create_if_missing = false;
  std::unique_ptr<Engine> engine = open_engine(o);
  int rc = 0;
  for (const auto& t : a.targets) {
    const int64_t n = value_of(engine->Remove(t));
    if (n == 0) {
      std::fprintf(stderr, "cocom: nothing stored under '%s'\n", t.c_str());
      rc = 1;
    } else {
      std::printf("removed %lld document(s) for %s\n", static_cast<long long>(n), t.c_str());
    }
  }
  return rc;
}

int cmd_store_info(const GlobalOptions& g, const StoreArgs& a, bool json) {
  Options o = store_options(g, a);
  o.create_if_missing = false;
  if (!dir_exists(a.db)) fail("--db ", a.db, ": no such store");
  std::unique_ptr<Engine> engine = open_engine_for_reading(o);
  Json j = stats_json(*engine);
  if (json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("store:       %s\n", j["db"].get<std::string>().c_str());
  std::printf("model:       %s (compression x%lld, %s embeddings [%lld, %lld])\n",
              j["model"].get<std::string>().c_str(),
              static_cast<long long>(j["compr_rate"].get<int64_t>()),
              j["embedding_dtype"].get<std::string>().c_str(),
              static_cast<long long>(j["embedding_shape"][0].get<int64_t>()),
              static_cast<long long>(j["embedding_shape"][1].get<int64_t>()));
  std::printf("retriever:   %s\n", j["retriever"].get<std::string>().empty()
                                       ? "none (BM25 only)"
                                       : j["retriever"].get<std::string>().c_str());
  std::printf(
      "documents:   %lld\npassages:    %lld\nembeddings:  %lld\nBM25 docs:   %lld (analyzer %s)\n"
      "index:       %lld vectors (%s)\n",
      static_cast<long long>(j["documents"].get<int64_t>()),
      static_cast<long long>(j["passages"].get<int64_t>()),
      static_cast<long long>(j["embeddings"].get<int64_t>()),
      static_cast<long long>(j["bm25_documents"].get<int64_t>()),
      j.value("bm25_analyzer", std::string("words")).c_str(),
      static_cast<long long>(j["index_vectors"].get<int64_t>()),
      j["index_factory"].get<std::string>().c_str());
  return 0;
}

}  // namespace cocom::cli
