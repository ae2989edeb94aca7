// cocom ingest / search / rm / info --db: the knowledge store from the command line.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common/error.h"
#include "engine/knowledge_store.h"
#include "model/quant.h"
#include "model/runtime.h"
#include "storage/store.h"
#include "tools/commands.h"

namespace cocom::cli {

namespace {

engine::KnowledgeStoreOptions store_options(const GlobalOptions& g, const StoreArgs& a) {
  engine::KnowledgeStoreOptions o;
  o.db = a.db;
  o.model_dir = a.model;
  o.retriever_dir = a.retriever;
  if (!a.index_factory.empty()) o.index_factory = a.index_factory;
  if (!a.embedding_dtype.empty()) o.embedding_dtype = a.embedding_dtype;
  o.cocom.device = model::parse_device(g.device);
  o.cocom.decoder_tokenizer = a.decoder_tokenizer;
  o.cocom.compressor_tokenizer = a.compressor_tokenizer;
  const auto wf = model::parse_weight_format(a.weights);
  if (!wf) fail("--weights ", a.weights, ": expected fp32, bf16, int8 or int8g");
  o.cocom.decoder_weights = *wf;
  o.query_prefix = a.query_prefix;
  o.passage_prefix = a.passage_prefix;
  return o;
}

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
  setup_runtime(g);
  if (a.paths.empty()) fail("ingest: give at least one file or directory");
  engine::KnowledgeStoreOptions o = store_options(g, a.store);
  o.need_model = true;
  o.chunk.overlap_tokens = a.overlap;
  auto ks = engine::KnowledgeStore::open(o);
  {
    // An existing store keeps the dtype it was made with; say so instead of ignoring the flag.
    const std::string stored = ks->info()["embedding_dtype"].get<std::string>();
    auto want = storage::parse_embedding_dtype(a.store.embedding_dtype);
    if (!a.store.embedding_dtype.empty() && !want) {
      fail("--embedding-dtype ", a.store.embedding_dtype, ": expected fp16, bf16, fp32 or int8");
    }
    if (want && stored != storage::embedding_dtype_name(*want)) {
      fail("--embedding-dtype ", a.store.embedding_dtype, ": the store at ", a.store.db, " keeps ",
           stored, " embeddings; a store's dtype cannot change (ingest into a new --db)");
    }
  }
  print_storage_estimate(ks->info(), o.context_max_length, a.paths);
  engine::ReadOptions ro;
  ro.include = a.include;
  ro.exclude = a.exclude;
  const bool tty = ::isatty(2) && !a.json && !a.progress_lines;
  auto progress = [&](const engine::IngestProgress& p) {
    if (!tty && !a.progress_lines) return;
    double rate = p.seconds > 0 ? double(p.passages_done) / p.seconds : 0;
    double per_doc = p.documents_done ? p.seconds / double(p.documents_done) : 0;
    std::fprintf(stderr, "%s%zu/%zu documents  %lld passages  %.1f passages/s  ETA %s%s",
                 tty ? "\r  " : "ingest: ", p.documents_done, p.documents_total,
                 static_cast<long long>(p.passages_done), rate,
                 eta(per_doc * double(p.documents_total - p.documents_done)).c_str(),
                 tty ? "   " : "\n");
    std::fflush(stderr);
  };
  engine::IngestSummary s = ks->ingest(a.paths, ro, progress);
  if (tty) std::fprintf(stderr, "\n");
  for (const auto& w : s.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (a.json) {
    Json j = s.to_json();
    j["store"] = ks->info();
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::string skipped;
  for (const auto& k : s.skipped) skipped += "\n  skipped " + k.path + ": " + k.reason;
  std::printf(
      "%lld added, %lld unchanged, %lld replaced, %zu skipped; %lld passages in %.1f s (%.1f "
      "passages/s)%s\n",
      static_cast<long long>(s.added), static_cast<long long>(s.unchanged),
      static_cast<long long>(s.replaced), s.skipped.size(), static_cast<long long>(s.passages),
      s.seconds, s.seconds > 0 ? double(s.passages) / s.seconds : 0.0, skipped.c_str());
  return 0;
}

int cmd_search(const GlobalOptions& g, const SearchArgs& a) {
  setup_runtime(g);
  engine::KnowledgeStoreOptions o = store_options(g, a.store);
  o.need_model = false;
  auto ks = engine::KnowledgeStore::open(o);
  const std::string mode_name = a.mode.empty() ? (ks->has_dense() ? "hybrid" : "bm25") : a.mode;
  engine::SearchMode mode = engine::parse_search_mode(mode_name);
  if (a.k < 1) fail("--k ", a.k, ": must be at least 1");
  std::vector<engine::SearchHit> hits = ks->search(a.query, size_t(a.k), mode);
  if (a.json) {
    Json arr = Json::array();
    for (const auto& h : hits) {
      arr.push_back({{"passage_id", h.passage_id},
                     {"score", h.score},
                     {"doc_id", h.passage.doc_id},
                     {"title", h.title},
                     {"source", h.source},
                     {"index", h.passage.index},
                     {"text", h.passage.text}});
    }
    std::cout << Json({{"query", a.query}, {"mode", mode_name}, {"hits", arr}})
                     .dump(2, ' ', false, Json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  if (hits.empty()) std::printf("no passages found\n");
  int rank = 0;
  for (const auto& h : hits) {
    std::string excerpt = h.passage.text.substr(0, 200);
    std::printf("%d. [%.4f] %s (%s, passage %lld)\n   %s\n", ++rank, h.score, h.title.c_str(),
                h.source.c_str(), static_cast<long long>(h.passage.index), excerpt.c_str());
  }
  return 0;
}

int cmd_rm(const GlobalOptions& g, const RmArgs& a) {
  setup_runtime(g);
  engine::KnowledgeStoreOptions o = store_options(g, a.store);
  o.need_model = false;
  auto ks = engine::KnowledgeStore::open(o);
  int rc = 0;
  for (const auto& t : a.targets) {
    int64_t n = ks->remove(t);
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
  setup_runtime(g);
  engine::KnowledgeStoreOptions o = store_options(g, a);
  o.need_model = false;
  if (!dir_exists(a.db)) fail("--db ", a.db, ": no such store");
  auto ks = engine::KnowledgeStore::open(o);
  Json j = ks->info();
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
      "documents:   %lld\npassages:    %lld\nembeddings:  %lld\nBM25 docs:   %lld\nindex:       "
      "%lld vectors (%s)\n",
      static_cast<long long>(j["documents"].get<int64_t>()),
      static_cast<long long>(j["passages"].get<int64_t>()),
      static_cast<long long>(j["embeddings"].get<int64_t>()),
      static_cast<long long>(j["bm25_documents"].get<int64_t>()),
      static_cast<long long>(j["index_vectors"].get<int64_t>()),
      j["index_factory"].get<std::string>().c_str());
  return 0;
}

}  // namespace cocom::cli
