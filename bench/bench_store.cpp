#include "bench/bench_store.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/json_util.h"
#include "compress/compressor.h"
#include "engine/knowledge_store.h"
#include "index/bm25.h"
#include "index/dense_index.h"
#include "model/cocom.h"
#include "model/runtime.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "storage/shard.h"
#include "storage/store.h"

#ifndef COCOM_SOURCE_DIR
#define COCOM_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;

namespace cocom::bench {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Latency {
  double p50 = 0, p99 = 0, mean = 0;
};

Latency summarize(std::vector<double> ms) {
  Latency l;
  if (ms.empty()) return l;
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  l.p50 = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  size_t i99 = static_cast<size_t>(std::ceil(0.99 * double(n)));
  l.p99 = ms[std::min(n - 1, i99 == 0 ? 0 : i99 - 1)];
  double s = 0;
  for (double v : ms) s += v;
  l.mean = s / double(n);
  return l;
}

Json latency_json(const Latency& l) {
  return Json{{"p50_ms", l.p50}, {"p99_ms", l.p99}, {"mean_ms", l.mean}};
}

// The fixture tokenizers: from the working directory when run from the source tree, else from
// the source directory the binary was built from.
std::string fixture_tokenizers() {
  for (const char* root : {".", COCOM_SOURCE_DIR}) {
    std::string d = std::string(root) + "/tests/data/fixtures/tokenizer";
    if (fs::exists(d + "/llama/tokenizer.model") && fs::exists(d + "/bert/vocab.txt")) return d;
  }
  fail(
      "bench store: fixture tokenizers not found (tests/data/fixtures/tokenizer under the "
      "working directory or ",
      COCOM_SOURCE_DIR, ")");
}

// Deterministic English-like text from a fixed word list.
const std::vector<std::string>& english_words() {
  static const std::vector<std::string> w = {
      "the",        "of",       "and",       "to",         "in",       "a",          "is",
      "that",       "for",      "it",        "as",         "was",      "with",       "be",
      "by",         "on",       "not",       "he",         "this",     "are",        "or",
      "his",        "from",     "at",        "which",      "but",      "have",       "an",
      "had",        "they",     "you",       "were",       "their",    "one",        "all",
      "we",         "can",      "her",       "has",        "there",    "been",       "if",
      "more",       "when",     "will",      "would",      "who",      "so",         "no",
      "river",      "city",     "history",   "century",    "people",   "government", "school",
      "world",      "water",    "system",    "company",    "music",    "language",   "science",
      "north",      "south",    "mountain",  "island",     "village",  "church",     "king",
      "army",       "war",      "station",   "railway",    "album",    "film",       "season",
      "team",       "league",   "player",    "university", "student",  "research",   "theory",
      "energy",     "light",    "species",   "plant",      "animal",   "forest",     "coast",
      "population", "census",   "district",  "province",   "county",   "capital",    "border",
      "built",      "founded",  "known",     "called",     "named",    "located",    "used",
      "played",     "released", "published", "written",    "elected",  "served",     "became",
      "early",      "large",    "small",     "major",      "national", "local",      "public",
      "several",    "many",     "first",     "second",     "later",    "during",     "after",
      "before",     "between",  "under",     "about",      "into",     "through",    "against",
      "1990",       "2004",     "1871",      "twelve",     "hundred",  "thousand",   "million"};
  return w;
}

std::string sentence(std::mt19937_64& rng) {
  const auto& w = english_words();
  std::uniform_int_distribution<size_t> pick(0, w.size() - 1);
  std::uniform_int_distribution<int> len(6, 14);
  int n = len(rng);
  std::string s;
  for (int i = 0; i < n; ++i) {
    std::string x = w[pick(rng)];
    if (i == 0) x[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(x[0])));
    if (i) s += (i == n / 2 && n > 9) ? ", " : " ";
    s += x;
  }
  return s + ".";
}

// Synthetic word r of the BM25 vocabulary: four syllables (base-20 digits of r), unique.
std::string synthetic_word(int64_t r) {
  static const char* syl[20] = {"ka", "lo", "mi", "nu", "pe", "ra", "so", "ti", "vu", "we",
                                "ba", "de", "fi", "go", "hu", "ja", "ke", "li", "mo", "ne"};
  std::string s;
  for (int i = 0; i < 4; ++i) {
    s += syl[r % 20];
    r /= 20;
  }
  return s;
}

class Zipf {
 public:
  Zipf(int64_t n, double s) : cdf_(static_cast<size_t>(n)) {
    double acc = 0;
    for (int64_t r = 0; r < n; ++r) {
      acc += 1.0 / std::pow(double(r + 1), s);
      cdf_[static_cast<size_t>(r)] = acc;
    }
    for (double& c : cdf_) c /= acc;
  }
  int64_t operator()(std::mt19937_64& rng) const {
    double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    return std::min<int64_t>(int64_t(it - cdf_.begin()), int64_t(cdf_.size()) - 1);
  }

 private:
  std::vector<double> cdf_;
};

std::vector<float> random_unit_vectors(int64_t n, int64_t dim, std::mt19937_64& rng) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i) {
    float* p = v.data() + i * dim;
    double s = 0;
    for (int64_t j = 0; j < dim; ++j) {
      p[j] = g(rng);
      s += double(p[j]) * p[j];
    }
    float inv = static_cast<float>(1.0 / std::sqrt(std::max(s, 1e-30)));
    for (int64_t j = 0; j < dim; ++j) p[j] *= inv;
  }
  return v;
}

std::string make_work_dir(const std::string& keep) {
  if (!keep.empty()) {
    std::error_code ec;
    fs::create_directories(keep, ec);
    if (ec) fail("--keep-dir ", keep, ": cannot create (", ec.message(), ")");
    return keep;
  }
  std::string tmpl = (fs::temp_directory_path() / "cocom-bench-store-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) fail(tmpl, ": cannot create a temporary directory");
  return std::string(buf.data());
}

void remove_all_quiet(const std::string& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

struct CheckpointSpec {
  std::string name, label;
  bool light = false;
  Json spec;
};

}  // namespace

int run_store_bench(const StoreBenchOptions& opt) {
  bool do_ingest = false, do_search = false, do_import = false;
  {
    std::stringstream ss(opt.what);
    std::string part;
    while (std::getline(ss, part, ',')) {
      if (part == "ingest") {
        do_ingest = true;
      } else if (part == "search") {
        do_search = true;
      } else if (part == "import") {
        do_import = true;
      } else if (!part.empty()) {
        fail("--what ", opt.what, ": unknown part '", part, "' (expected ingest, search, import)");
      }
    }
  }
  if (!do_ingest && !do_search && !do_import) fail("--what ", opt.what, ": nothing to run");
  if (opt.import_passages < 1)
    fail("--import-passages ", opt.import_passages, ": must be at least 1");
  if (opt.passages < 1) fail("--passages ", opt.passages, ": must be at least 1");
  if (opt.dim < 1) fail("--dim ", opt.dim, ": must be at least 1");
  if (opt.queries < 1) fail("--queries ", opt.queries, ": must be at least 1");
  if (opt.ingest_passages < 1)
    fail("--ingest-passages ", opt.ingest_passages, ": must be at least 1");
  c10::Device dev = model::parse_device(opt.device);
  const int threads = at::get_num_threads();
  auto log = [&](const std::string& s) {
    if (!opt.json) std::fprintf(stderr, "%s\n", s.c_str());
  };
  char line[512];
  const std::string work = make_work_dir(opt.keep_dir);
  const bool keep = !opt.keep_dir.empty();
  std::snprintf(line, sizeof line, "bench store: %d threads (%u hardware), work directory %s",
                threads, std::thread::hardware_concurrency(), work.c_str());
  log(line);

  Json out;
  out["threads"] = threads;
  out["hardware_threads"] = std::thread::hardware_concurrency();
  out["device"] = opt.device;
  out["seed"] = opt.seed;
  out["note"] =
      "random weights; small fixture tokenizers (llama 1000 pieces, bert 1000 WordPieces), so "
      "vocabulary sizes are the tokenizers' and the text is tokenized into more pieces than a "
      "real tokenizer would make; speed only, outputs are meaningless";

  struct IngestRow {
    std::string label;
    int64_t params = 0;
    double write_s = 0, load_s = 0, compress_s = 0, open_s = 0, ingest_s = 0;
    int64_t passages = 0, tokens = 0, ingest_passages = 0, documents = 0;
  };
  std::vector<IngestRow> ingest_rows;

  try {
    if (do_ingest) {
      const std::string tokdir = fixture_tokenizers();
      const int64_t llama_vocab = model::load_tokenizer(tokdir + "/llama")->size();
      const int64_t bert_vocab = model::load_tokenizer(tokdir + "/bert")->size();
      Json tinyllama = {{"model_type", "llama"},    {"vocab_size", llama_vocab},
                        {"hidden_size", 2048},      {"intermediate_size", 5632},
                        {"num_hidden_layers", 16},  {"num_attention_heads", 32},
                        {"num_key_value_heads", 8}, {"max_position_embeddings", 2048},
                        {"rms_norm_eps", 1e-5},     {"rope_theta", 10000.0}};
      std::vector<CheckpointSpec> cks;
      {
        CheckpointSpec c;
        c.name = "cocom-light";
        c.label = "COCOM-light (BERT-base compressor)";
        c.light = true;
        Json dec = tinyllama;
        dec["num_hidden_layers"] = 1;  // unused by compression; the projection needs its width
        c.spec = {{"compr_rate", 16},
                  {"sep", true},
                  {"lora_r", 16},
                  {"compr_linear_type", "concat"},
                  {"generation_top_k", 5},
                  {"decoder", dec},
                  {"decoder_tokenizer", tokdir + "/llama"},
                  {"compressor",
                   {{"vocab_size", bert_vocab},
                    {"hidden_size", 768},
                    {"intermediate_size", 3072},
                    {"num_hidden_layers", 12},
                    {"num_attention_heads", 12},
                    {"max_position_embeddings", 512}}},
                  {"compressor_tokenizer", tokdir + "/bert"}};
        cks.push_back(c);
      }
      {
        CheckpointSpec c;
        c.name = "cocom";
        c.label = "COCOM (TinyLlama-size decoder compressor)";
        c.spec = {{"compr_rate", 16},     {"sep", true},
                  {"lora_r", 16},         {"generation_top_k", 5},
                  {"decoder", tinyllama}, {"decoder_tokenizer", tokdir + "/llama"}};
        cks.push_back(c);
      }
      Json ij = Json::array();
      for (const CheckpointSpec& ck : cks) {
        IngestRow row;
        row.label = ck.label;
        const std::string ckdir = work + "/" + ck.name;
        if (keep && fs::exists(ckdir + "/config.json") &&
            fs::exists(ckdir + "/model.safetensors")) {
          log(ck.name + ": reusing the checkpoint in " + ckdir);
        } else {
          log(ck.name + ": writing a random bf16 checkpoint to " + ckdir + " ...");
          write_json_file(work + "/" + ck.name + ".json", ck.spec);
          double t0 = now_s();
          row.params = model::write_random_cocom(ck.spec, work + "/" + ck.name + ".json", ck.light,
                                                 ckdir, opt.seed, model::DType::BF16);
          row.write_s = now_s() - t0;
        }
        model::CocomLoadOptions lo;
        lo.device = dev;
        double t0 = now_s();
        auto m = model::CocomModel::load(ckdir, lo);
        row.load_s = now_s() - t0;
        if (row.params == 0) {
          row.params = m->decoder().config().parameter_count();
        }
        const model::Tokenizer& tok =
            ck.light ? *m->compressor_tokenizer() : m->decoder_tokenizer();
        auto count = [&](const std::string& t) -> int64_t {
          return static_cast<int64_t>(tok.encode(t, ck.light).size()) + (ck.light ? 0 : 3);
        };
        // Passages of ~128 compressor tokens (whole sentences; compression truncates at 128).
        std::mt19937_64 rng(opt.seed * 7919 + (ck.light ? 1 : 2));
        std::vector<std::string> passages;
        for (int64_t i = 0; i < opt.ingest_passages; ++i) {
          std::string p = sentence(rng);
          while (count(p) < 116) p += " " + sentence(rng);
          passages.push_back(p);
          row.tokens += std::min<int64_t>(count(p), 128);
        }
        std::snprintf(line, sizeof line,
                      "%s: %.1fM parameters, loaded in %.2f s; compressing %lld passages ...",
                      ck.name.c_str(), double(row.params) / 1e6, row.load_s,
                      static_cast<long long>(passages.size()));
        log(line);
        compress::compress_passages(*m, {passages[0]}, 128, 8);  // warm-up
        t0 = now_s();
        at::Tensor emb = compress::compress_passages(*m, passages, 128, 8);
        row.compress_s = now_s() - t0;
        row.passages = emb.size(0);
        m.reset();

        // The whole ingestion: .txt documents of ~4 passages each, through KnowledgeStore.
        const std::string docs = work + "/" + ck.name + "-docs";
        const std::string db = work + "/" + ck.name + "-db";
        remove_all_quiet(docs);
        remove_all_quiet(db);
        fs::create_directories(docs);
        for (size_t i = 0; i < passages.size(); i += 4) {
          char name[64];
          std::snprintf(name, sizeof name, "/doc_%05zu.txt", i / 4);
          std::ofstream f(docs + name);
          for (size_t j = i; j < std::min(passages.size(), i + 4); ++j) f << passages[j] << "\n\n";
          ++row.documents;
        }
        engine::KnowledgeStoreOptions so;
        so.db = db;
        so.model_dir = ckdir;
        so.need_model = true;
        so.cocom.device = dev;
        t0 = now_s();
        auto ks = engine::KnowledgeStore::open(so);
        row.open_s = now_s() - t0;
        log(ck.name + ": ingesting " + std::to_string(row.documents) + " documents ...");
        engine::IngestSummary sum = ks->ingest({docs}, ingest::ReadOptions{});
        row.ingest_s = sum.seconds > 0 ? sum.seconds : 0;
        row.ingest_passages = sum.passages;
        ks.reset();
        std::snprintf(line, sizeof line,
                      "%s: compress %.1f passages/s; ingest %lld passages in %.2f s = %.1f "
                      "passages/s (store open with model load %.2f s)",
                      ck.name.c_str(), double(row.passages) / row.compress_s,
                      static_cast<long long>(row.ingest_passages), row.ingest_s,
                      double(row.ingest_passages) / row.ingest_s, row.open_s);
        log(line);
        if (!keep) {
          remove_all_quiet(ckdir);
          remove_all_quiet(docs);
          remove_all_quiet(db);
        }
        Json r;
        r["checkpoint"] = ck.name;
        r["label"] = ck.label;
        r["parameters"] = row.params;
        r["write_seconds"] = row.write_s;
        r["load_seconds"] = row.load_s;
        r["compress_passages"] = row.passages;
        r["compress_tokens"] = row.tokens;
        r["compress_seconds"] = row.compress_s;
        r["compress_passages_per_s"] = double(row.passages) / row.compress_s;
        r["compress_tokens_per_s"] = double(row.tokens) / row.compress_s;
        r["store_open_seconds"] = row.open_s;
        r["ingest_documents"] = row.documents;
        r["ingest_passages"] = row.ingest_passages;
        r["ingest_seconds"] = row.ingest_s;
        r["ingest_passages_per_s"] = double(row.ingest_passages) / row.ingest_s;
        ij.push_back(r);
        ingest_rows.push_back(row);
      }
      out["ingest"] = ij;
      out["ingest_settings"] = {{"context_max_length", 128},
                                {"batch_size", 8},
                                {"compr_rate", 16},
                                {"checkpoint_dtype", "bf16"},
                                {"decoder_vocab", llama_vocab},
                                {"bert_vocab", bert_vocab}};
    }

    if (do_search) {
      std::mt19937_64 rng(opt.seed * 104729 + 3);
      // (a) Dense: random unit vectors.
      log("dense: generating " + std::to_string(opt.passages) + " unit vectors of " +
          std::to_string(opt.dim) + " dimensions ...");
      std::vector<float> base = random_unit_vectors(opt.passages, opt.dim, rng);
      std::vector<float> qs = random_unit_vectors(opt.queries, opt.dim, rng);
      std::vector<uint64_t> ids(static_cast<size_t>(opt.passages));
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = i;
      Json dj = Json::array();
      std::vector<std::vector<uint64_t>> flat_top;
      std::vector<std::string> factories;
      {
        std::stringstream fs_(opt.factories);
        for (std::string f; std::getline(fs_, f, ',');) {
          if (!f.empty()) factories.push_back(f);
        }
      }
      for (const std::string& factory : factories) {
        auto idx = index::DenseIndex::create(factory, opt.dim);
        log("dense " + factory + ": building ...");
        double t0 = now_s();
        idx->add(ids, base);
        const double build_s = now_s() - t0;
        std::vector<double> ms;
        int64_t found = 0, wanted = 0;
        std::vector<float> q(qs.begin(), qs.begin() + opt.dim);
        idx->search(q, 5);  // warm-up
        for (int64_t i = 0; i < opt.queries; ++i) {
          std::copy(qs.begin() + i * opt.dim, qs.begin() + (i + 1) * opt.dim, q.begin());
          double a = now_s();
          auto hits = idx->search(q, 5);
          ms.push_back((now_s() - a) * 1e3);
          std::vector<uint64_t> top;
          for (const auto& h : hits) top.push_back(h.first);
          if (factory == std::string("Flat")) {
            flat_top.push_back(top);
          } else if (static_cast<size_t>(i) < flat_top.size()) {  // recall needs Flat first
            const auto& ref = flat_top[static_cast<size_t>(i)];
            for (uint64_t id : ref) found += std::count(top.begin(), top.end(), id);
            wanted += static_cast<int64_t>(ref.size());
          }
        }
        Latency l = summarize(ms);
        Json r = latency_json(l);
        r["index"] = factory;
        r["build_seconds"] = build_s;
        if (wanted > 0) r["recall_at_5_vs_flat"] = double(found) / double(wanted);
        dj.push_back(r);
        std::snprintf(line, sizeof line,
                      "dense %s: built in %.2f s; search p50 %.3f ms, p99 %.3f ms, mean %.3f ms",
                      factory.c_str(), build_s, l.p50, l.p99, l.mean);
        log(line);
      }
      base.clear();
      base.shrink_to_fit();
      out["dense"] = dj;

      // (b) BM25 over a RocksDB store of synthetic passages (Zipf vocabulary of 20k words).
      const int64_t vocab = 20000;
      Zipf zipf(vocab, 1.0);
      std::vector<std::string> words(static_cast<size_t>(vocab));
      for (int64_t r = 0; r < vocab; ++r) words[static_cast<size_t>(r)] = synthetic_word(r);
      const std::string db = work + "/bm25-db";
      remove_all_quiet(db);
      storage::Manifest man;
      man.compressor_fingerprint = "bench-store-synthetic";
      man.compr_rate = 16;
      man.embeddings_per_passage = 1;
      man.embedding_dim = 8;
      man.embedding_dtype = storage::EmbeddingDType::F16;
      auto store = storage::Store::open(db, man);
      log("bm25: filling the store with " + std::to_string(opt.passages) + " passages ...");
      std::uniform_int_distribution<int> plen(80, 120);
      double t0 = now_s();
      int64_t total_words = 0;
      for (int64_t p0 = 0, d = 0; p0 < opt.passages; p0 += 10, ++d) {
        storage::DocumentRecord doc;
        doc.id = "doc-" + std::to_string(d);
        doc.source = doc.id + ".txt";
        doc.title = doc.id;
        doc.content_hash = std::to_string(d);
        doc.meta_json = "{}";
        std::vector<storage::NewPassage> np;
        int64_t offset = 0;
        for (int64_t p = p0; p < std::min(opt.passages, p0 + 10); ++p) {
          storage::NewPassage x;
          const int n = plen(rng);
          std::string text;
          for (int w = 0; w < n; ++w) {
            if (w) text += (w % 12 == 0) ? ". " : " ";
            text += words[static_cast<size_t>(zipf(rng))];
          }
          text += ".";
          total_words += n;
          x.record.doc_id = doc.id;
          x.record.index = p - p0;
          x.record.char_begin = offset;
          x.record.char_end = offset + static_cast<int64_t>(text.size());
          offset = x.record.char_end + 1;
          x.terms = index::analyze(text);
          x.record.text = std::move(text);
          x.embeddings.assign(8, 0.125f);
          np.push_back(std::move(x));
        }
        store->put_document(std::move(doc), std::move(np));
      }
      const double fill_s = now_s() - t0;
      std::vector<double> ms;
      std::uniform_int_distribution<int> qlen(3, 5);
      for (int64_t i = 0; i < opt.queries; ++i) {
        std::string q;
        const int n = qlen(rng);
        for (int w = 0; w < n; ++w) q += (w ? " " : "") + words[static_cast<size_t>(zipf(rng))];
        std::vector<std::string> terms = index::analyze(q);
        double a = now_s();
        auto hits = index::bm25_search(*store, terms, 5);
        ms.push_back((now_s() - a) * 1e3);
      }
      Latency l = summarize(ms);
      store.reset();
      uintmax_t db_bytes = 0;
      for (const auto& e : fs::recursive_directory_iterator(db)) {
        if (e.is_regular_file()) db_bytes += e.file_size();
      }
      if (!keep) remove_all_quiet(db);
      Json bj = latency_json(l);
      bj["passages"] = opt.passages;
      bj["documents"] = (opt.passages + 9) / 10;
      bj["vocabulary"] = vocab;
      bj["zipf_exponent"] = 1.0;
      bj["mean_passage_words"] = double(total_words) / double(opt.passages);
      bj["fill_seconds"] = fill_s;
      bj["fill_passages_per_s"] = double(opt.passages) / fill_s;
      bj["db_bytes"] = db_bytes;
      out["bm25"] = bj;
      std::snprintf(line, sizeof line,
                    "bm25: filled in %.2f s (%.0f passages/s); search p50 %.3f ms, p99 %.3f ms, "
                    "mean %.3f ms",
                    fill_s, double(opt.passages) / fill_s, l.p50, l.p99, l.mean);
      log(line);
      out["search_settings"] = {
          {"passages", opt.passages}, {"dim", opt.dim}, {"queries", opt.queries}, {"k", 5}};
    }
    if (do_import) {
      // Sharded bulk ingestion's merge against the ordinary write path, on the same rows:
      // documents of 10 passages with random context embeddings [8, 512] fp16 (8 KiB, the
      // size of x16 embeddings at hidden 512) and ~100-word texts with their postings.
      const int64_t n = opt.import_passages;
      storage::Manifest man;
      man.compressor_fingerprint = "bench-store-synthetic";
      man.compr_rate = 16;
      man.embeddings_per_passage = 8;
      man.embedding_dim = 512;
      man.embedding_dtype = storage::EmbeddingDType::F16;
      man.context_max_length = 128;
      man.chunk_overlap_tokens = 0;
      man.has_prefixes = true;
      std::normal_distribution<float> gauss(0.f, 1.f);
      auto rows = [&](int64_t d0) {  // one document's passages, the same for every store
        std::mt19937_64 drng(opt.seed * 1000003 + static_cast<uint64_t>(d0));
        std::vector<storage::NewPassage> np;
        for (int64_t p = 0; p < 10; ++p) {
          storage::NewPassage x;
          std::string text;
          for (int w = 0; w < 100; ++w)
            text += (w ? " " : "") + synthetic_word(int64_t(drng() % 20000));
          x.record.index = p;
          x.terms = index::analyze(text);
          x.record.text = std::move(text);
          x.embeddings.resize(8 * 512);
          for (float& v : x.embeddings) v = gauss(drng);
          np.push_back(std::move(x));
        }
        return np;
      };
      auto doc_of = [](int64_t d) {
        storage::DocumentRecord doc;
        doc.id = "doc-" + std::to_string(d);
        doc.source = doc.id + ".txt";
        doc.title = doc.id;
        doc.content_hash = std::to_string(d);
        doc.meta_json = "{}";
        return doc;
      };
      const int64_t docs = (n + 9) / 10;
      auto fill = [&](storage::Store& st) {
        double t = now_s();
        for (int64_t d = 0; d < docs; ++d) st.put_document(doc_of(d), rows(d));
        return now_s() - t;
      };
      // The row generation alone, to take it out of the write times.
      double t0 = now_s();
      for (int64_t d = 0; d < docs; ++d) (void)rows(d);
      const double gen_s = now_s() - t0;
      const std::string plain_db = work + "/import-plain", worker_db = work + "/import-worker",
                        shard_dir = work + "/import-shard", merged_db = work + "/import-merged";
      for (const auto& d : {plain_db, worker_db, shard_dir, merged_db}) remove_all_quiet(d);
      log("import: " + std::to_string(docs * 10) + " passages through put_document ...");
      double write_s = 0;
      uintmax_t plain_bytes = 0;
      {
        auto st = storage::Store::open(plain_db, man);
        write_s = fill(*st) - gen_s;
      }
      for (const auto& e : fs::recursive_directory_iterator(plain_db)) {
        if (e.is_regular_file()) plain_bytes += e.file_size();
      }
      double export_s = 0;
      {
        auto st = storage::Store::open(worker_db, man);
        st->set_first_passage_id(storage::shard_first_passage_id(opt.seed, 0));
        fill(*st);
        t0 = now_s();
        st->export_shard(shard_dir, 0, 1);
        export_s = now_s() - t0;
      }
      log("import: validating and importing the shard ...");
      t0 = now_s();
      storage::ShardContents sc = storage::read_shard(shard_dir);
      const double validate_s = now_s() - t0;
      double link_s = 0;
      {
        auto st = storage::Store::open(merged_db, man);
        t0 = now_s();
        st->import_shards({sc});
        link_s = now_s() - t0;
      }
      if (!keep) {
        for (const auto& d : {plain_db, worker_db, shard_dir, merged_db}) remove_all_quiet(d);
      }
      const double pn = double(docs * 10);
      Json ij;
      ij["passages"] = docs * 10;
      ij["embedding_shape"] = {8, 512};
      ij["embedding_dtype"] = "fp16";
      ij["store_bytes"] = plain_bytes;
      ij["write_path_seconds"] = write_s;
      ij["write_path_passages_per_s"] = pn / write_s;
      ij["export_seconds"] = export_s;
      ij["validate_seconds"] = validate_s;
      ij["link_seconds"] = link_s;
      ij["import_passages_per_s"] = pn / (validate_s + link_s);
      ij["link_passages_per_s"] = pn / link_s;
      out["import"] = ij;
      std::snprintf(line, sizeof line,
                    "import: write path %.0f passages/s; shard export %.2f s; import %.0f "
                    "passages/s (validation %.2f s + link %.2f s)",
                    pn / write_s, export_s, pn / (validate_s + link_s), validate_s, link_s);
      log(line);
    }
  } catch (...) {
    if (!keep) remove_all_quiet(work);
    throw;
  }
  if (!keep) remove_all_quiet(work);

  if (opt.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  // The readable table.
  std::printf("\ncocom bench store  (%d threads; %s)\n", threads, opt.device.c_str());
  std::printf(
      "NOTE: random weights and the small fixture tokenizers (llama 1000 pieces, bert "
      "1000 WordPieces):\n      vocabularies are the tokenizers' sizes; speed only.\n");
  if (!ingest_rows.empty()) {
    std::printf(
        "\nIngestion (bf16 checkpoints, passages of ~128 compressor tokens, batch 8, "
        "compr_rate 16)\n");
    std::printf("%-44s %8s %8s %12s %12s %10s\n", "checkpoint", "params", "load s", "compress p/s",
                "ingest p/s", "open s");
    for (const IngestRow& r : ingest_rows) {
      std::printf("%-44s %7.0fM %8.2f %12.2f %12.2f %10.2f\n", r.label.c_str(),
                  double(r.params) / 1e6, r.load_s, double(r.passages) / r.compress_s,
                  double(r.ingest_passages) / r.ingest_s, r.open_s);
    }
    std::printf(
        "(compress: %lld passages, compress_passages alone; ingest: whole KnowledgeStore "
        "ingest of .txt documents, ~4 passages each)\n",
        static_cast<long long>(opt.ingest_passages));
  }
  if (out.contains("dense")) {
    std::printf("\nSearch, %lld passages, %lld queries, k=5\n",
                static_cast<long long>(opt.passages), static_cast<long long>(opt.queries));
    std::printf("%-28s %10s %10s %10s %10s %s\n", "index", "build s", "p50 ms", "p99 ms", "mean ms",
                "");
    for (const Json& r : out["dense"]) {
      std::string extra;
      if (r.contains("recall_at_5_vs_flat")) {
        char b[64];
        std::snprintf(b, sizeof b, "recall@5 vs Flat %.3f", r["recall_at_5_vs_flat"].get<double>());
        extra = b;
      }
      std::printf(
          "%-28s %10.2f %10.3f %10.3f %10.3f %s\n",
          ("FAISS " + r["index"].get<std::string>() + ", dim " + std::to_string(opt.dim)).c_str(),
          r["build_seconds"].get<double>(), r["p50_ms"].get<double>(), r["p99_ms"].get<double>(),
          r["mean_ms"].get<double>(), extra.c_str());
    }
    const Json& b = out["bm25"];
    std::printf("%-28s %10.2f %10.3f %10.3f %10.3f fill %.0f passages/s, %.1f MB on disk\n",
                "BM25 (RocksDB postings)", b["fill_seconds"].get<double>(),
                b["p50_ms"].get<double>(), b["p99_ms"].get<double>(), b["mean_ms"].get<double>(),
                b["fill_passages_per_s"].get<double>(),
                double(b["db_bytes"].get<uintmax_t>()) / 1e6);
  }
  if (out.contains("import")) {
    const Json& m = out["import"];
    std::printf(
        "\nImport of a shard vs the ordinary write path, %lld passages of [8, 512] fp16 "
        "embeddings (%.1f MB store)\n",
        static_cast<long long>(m["passages"].get<int64_t>()),
        double(m["store_bytes"].get<uintmax_t>()) / 1e6);
    std::printf("%-44s %10.2f s %12.0f passages/s\n", "write path (put_document per document)",
                m["write_path_seconds"].get<double>(),
                m["write_path_passages_per_s"].get<double>());
    std::printf("%-44s %10.2f s\n", "worker: export as SST files",
                m["export_seconds"].get<double>());
    std::printf("%-44s %10.2f s %12.0f passages/s\n", "import: validation + IngestExternalFiles",
                m["validate_seconds"].get<double>() + m["link_seconds"].get<double>(),
                m["import_passages_per_s"].get<double>());
    std::printf("%-44s %10.2f s %12.0f passages/s\n", "  of which IngestExternalFiles",
                m["link_seconds"].get<double>(), m["link_passages_per_s"].get<double>());
  }
  return 0;
}

}  // namespace cocom::bench
