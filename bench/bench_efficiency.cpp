#include "bench/bench_efficiency.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "cocom/cocom.h"
#include "common/error.h"
#include "common/json_util.h"
#include "common/strings.h"
#include "compress/compressor.h"
#include "generate/cocom_generate.h"
#include "model/bert.h"
#include "model/cocom.h"
#include "model/generation.h"
#include "model/mistral.h"
#include "model/runtime.h"
#include "model/weights.h"
#include "storage/store.h"

namespace cocom::bench {

// ---------------------------------------------------------------------------------------
// Analytic FLOPs (formulas in bench_efficiency.h and docs/benchmarks.md)

namespace {

double linear_flops_per_token(const model::DecoderConfig& c) {
  const double H = double(c.hidden_size), I = double(c.intermediate_size);
  const double q = double(c.num_attention_heads * c.head_dim);
  const double kv = double(c.num_key_value_heads * c.head_dim);
  return 2 * (H * q + 2 * H * kv + q * H + 3 * H * I);
}

double head_width(const model::DecoderConfig& c) {
  return double(c.num_attention_heads * c.head_dim);
}

}  // namespace

double generation_flops(const model::DecoderConfig& c, int64_t prompt, int64_t new_tokens) {
  const double N = double(c.num_hidden_layers), P = double(prompt), q = head_width(c);
  const double lin = linear_flops_per_token(c);
  const double head = 2 * double(c.vocab_size) * double(c.hidden_size);
  double f = N * (lin * P + 4 * P * P * q) + head;
  for (int64_t j = 1; j < new_tokens; ++j) f += N * (lin + 4 * (P + double(j)) * q) + head;
  return f;
}

double decoder_compression_flops(const model::DecoderConfig& c, int64_t length) {
  const double L = double(length);
  return double(c.num_hidden_layers) * (linear_flops_per_token(c) * L + 4 * L * L * head_width(c));
}

double bert_compression_flops(const model::BertConfig& b, int64_t length, int64_t n,
                              int64_t proj_in, int64_t hidden) {
  const double L = double(length), Hb = double(b.hidden_size), Ib = double(b.intermediate_size);
  const double layers =
      double(b.num_hidden_layers) * (2 * L * (4 * Hb * Hb + 2 * Hb * Ib) + 4 * L * L * Hb);
  return layers + 2 * double(n) * double(proj_in) * double(hidden);
}

namespace {

// ---------------------------------------------------------------------------------------
// small helpers

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / double(v.size());
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void progress(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "bench efficiency: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  va_end(ap);
}

// A "Name:   123 kB" field of /proc/self/status, in bytes (-1 when absent).
int64_t proc_status_bytes(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, field.size(), field) == 0 && line.size() > field.size() &&
        line[field.size()] == ':') {
      return std::atoll(line.c_str() + field.size() + 1) * 1024;
    }
  }
  return -1;
}

// The 1, 5 and 15 minute load averages.
std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string first_line_of(const std::string& path, const std::string& prefix = "") {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (prefix.empty()) return line;
    if (line.compare(0, prefix.size(), prefix) == 0) {
      auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  }
  return "";
}

// Peak resident memory of one configuration. Preferred: reset the kernel's high-water mark
// (writing "5" to /proc/self/clear_refs, Linux >= 4.0) before it and read VmHWM after it --
// exact, and costs nothing while timing. Where the reset is refused, a thread samples VmRSS
// every millisecond (it may miss spikes shorter than that and takes a little CPU).
class PeakMeter {
 public:
  void start() {
    // Hand memory freed by earlier configurations back to the system first, so that the
    // resident size before this one is not inflated by the allocator's caches.
    malloc_trim(0);
    before_ = proc_status_bytes("VmRSS");
    sampled_peak_ = before_;
    method_ = "VmHWM reset via /proc/self/clear_refs";
    if (!reset_hwm()) {
      method_ = "VmRSS sampled every 1 ms";
      stop_ = false;
      sampler_ = std::thread([this] {
        while (!stop_.load()) {
          const int64_t r = proc_status_bytes("VmRSS");
          int64_t p = sampled_peak_.load();
          while (r > p && !sampled_peak_.compare_exchange_weak(p, r)) {
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      });
    }
  }
  // Returns {peak bytes, peak - resident before start}.
  std::pair<int64_t, int64_t> stop() {
    int64_t peak;
    if (sampler_.joinable()) {
      stop_ = true;
      sampler_.join();
      peak = std::max(sampled_peak_.load(), proc_status_bytes("VmRSS"));
    } else {
      peak = proc_status_bytes("VmHWM");
    }
    return {peak, peak - before_};
  }
  const std::string& method() const { return method_; }

 private:
  static bool reset_hwm() {
    std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    const bool wrote = std::fputs("5", f) >= 0;
    const bool closed = std::fclose(f) == 0;
    if (!wrote || !closed) return false;
    // The reset worked when the mark came down to (about) the current resident size.
    const int64_t hwm = proc_status_bytes("VmHWM"), rss = proc_status_bytes("VmRSS");
    return hwm >= 0 && rss >= 0 && hwm <= rss + (int64_t(4) << 20);
  }
  int64_t before_ = 0;
  std::atomic<int64_t> sampled_peak_{0};
  std::atomic<bool> stop_{false};
  std::thread sampler_;
  std::string method_;
};

// ---------------------------------------------------------------------------------------
// named shapes

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------
// The model measured: a COCOM checkpoint, or random weights of a named shape built in memory
// with real tokenizers. Either way a model::CocomModel, compressed and answered through the
// same compress/ and generate/ functions as the engine (no layout of its own here).

struct GenRun {
  model::GenerationResult gen;
  int64_t prompt_length = 0;  // padded prompt length (what the decoder computes over)
};

// Stored records -> the context-embedding tensor [N, n, H] the decoder reads, as the
// knowledge store serves them (storage::decode_embedding of each passage's record).
at::Tensor decode_records(const std::vector<std::string>& records, int64_t n, int64_t H) {
  at::Tensor out = at::empty({int64_t(records.size()), n, H}, at::kFloat);
  for (size_t i = 0; i < records.size(); ++i) {
    std::vector<float> v = storage::decode_embedding(records[i], nullptr, "benchmark record");
    if (int64_t(v.size()) != n * H) fail("benchmark record ", i, " has ", v.size(), " values");
    std::memcpy(out[int64_t(i)].data_ptr<float>(), v.data(), v.size() * sizeof(float));
  }
  return out;
}

std::string existing_dir(const std::string& dir, const std::string& file) {
  return !dir.empty() && file_exists(join_path(dir, file)) ? dir : std::string();
}

// The tokenizers a random-weight shape reads its text with: the flags, else the default
// model's (decoder) or the source tree's test BERT vocabulary (COCOM-light).
std::string shape_decoder_tokenizer(const EfficiencyBenchOptions& o) {
  if (!o.decoder_tokenizer.empty()) return o.decoder_tokenizer;
  const std::string dflt = DefaultModelDir();
  std::string d = dflt.empty() ? "" : existing_dir(join_path(dflt, "base_decoder"), "tokenizer.model");
  if (d.empty()) {
    d = existing_dir(std::string(COCOM_SOURCE_DIR) + "/tests/data/fixtures/cocom/base_decoder",
                     "tokenizer.model");
  }
  if (d.empty()) fail("no decoder tokenizer found for the random-weight shape: pass --decoder-tokenizer DIR");
  return d;
}

std::string shape_compressor_tokenizer(const EfficiencyBenchOptions& o) {
  if (!o.compressor_tokenizer.empty()) return o.compressor_tokenizer;
  std::string d =
      existing_dir(std::string(COCOM_SOURCE_DIR) + "/tests/data/fixtures/bert/tokenizer", "vocab.txt");
  if (d.empty()) fail("no BERT tokenizer found for --compressor bert-base: pass --compressor-tokenizer DIR");
  return d;
}

void check_memory(const model::DecoderConfig& cfg, const std::string& weights,
                  const std::string& shape_name) {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit) {
    if (key == "MemAvailable:") break;
  }
  const model::WeightFormat wf = *model::parse_weight_format(weights);
  const double bytes_per_value = wf == model::WeightFormat::fp32   ? 4
                                 : wf == model::WeightFormat::bf16 ? 2
                                                                   : 1;
  const double need = double(cfg.parameter_count()) * bytes_per_value;
  if (key == "MemAvailable:" && need > 0.9 * double(kb) * 1024) {
    fail("the ", shape_name, " shape needs ~", storage::human_bytes(uint64_t(need)), " of ", weights,
         " weights, but only ", storage::human_bytes(uint64_t(kb) * 1024),
         " of memory is available (try --weights bf16 or int8)");
  }
}

// Synthetic English-like text: words appended until the tokenizer counts `tokens` tokens.
std::string text_of_tokens(const model::Tokenizer& tok, int64_t tokens, uint64_t seed) {
  static const char* const words[] = {
      "the",     "river",  "valley", "was",     "settled", "in",      "early",   "centuries",
      "by",      "people", "who",    "farmed",  "grain",   "and",     "traded",  "salt",
      "along",   "roads",  "that",   "crossed", "high",    "passes",  "between", "towns",
      "history", "of",     "the",    "region",  "records", "several", "wars",    "a",
      "new",     "bridge", "opened", "later",   "museum",  "holds",   "old",     "maps"};
  std::mt19937_64 rng(seed);
  std::string s;
  std::string last = s;
  while (int64_t(tok.encode(s, false).size()) < tokens) {
    last = s;
    s += (s.empty() ? "" : " ") + std::string(words[rng() % (sizeof words / sizeof words[0])]);
  }
  return int64_t(tok.encode(s, false).size()) == tokens || last.empty() ? s : last;
}

class Backend {
 public:
  Backend(const EfficiencyBenchOptions& o, c10::Device dev) : o_(o) {
    if (!o.model.empty()) {
      model::CocomLoadOptions lo;
      lo.decoder_tokenizer = o.decoder_tokenizer;
      lo.compressor_tokenizer = o.compressor_tokenizer;
      lo.device = dev;
      lo.decoder_weights = *model::parse_weight_format(o.weights);
      progress("loading %s...", o.model.c_str());
      base_ = model::CocomModel::load(o.model, lo);
      progress("loaded in %.1f s", base_->load_seconds());
    } else {
      model::RandomCocomSpec spec;
      spec.decoder = o.config.empty() ? model::named_decoder_shape(o.shape)
                                      : model::DecoderConfig::load(o.config);
      if (spec.decoder.vocab_size < 8) {
        fail("the decoder vocabulary is too small for the benchmark (", spec.decoder.vocab_size, ")");
      }
      shape_name_ = o.config.empty() ? o.shape : o.config;
      if (o.compressor == "bert-base") {
        spec.bert = o.compressor_config.empty() ? model::bert_base_config()
                                                : model::BertConfig::load(o.compressor_config);
        spec.compressor_tokenizer = shape_compressor_tokenizer(o);
      } else if (o.compressor != "decoder") {
        fail("--compressor ", o.compressor, ": expected decoder or bert-base");
      }
      spec.decoder_tokenizer = shape_decoder_tokenizer(o);
      spec.config.compr_rate = 16;  // the other rates share everything but the projection
      spec.seed = o.seed;
      spec.device = dev;
      spec.decoder_weights = *model::parse_weight_format(o.weights);
      check_memory(spec.decoder, o.weights, shape_name_);
      progress("building %s-shaped decoder with random weights (%.0fM parameters, %s)...",
               shape_name_.c_str(), double(spec.decoder.parameter_count()) / 1e6, o.weights.c_str());
      base_ = model::CocomModel::random(spec);
      progress("built in %.1f s", base_->load_seconds());
    }
    const model::Tokenizer& ct =
        base_->config().light() ? *base_->compressor_tokenizer() : base_->decoder_tokenizer();
    // A passage is doc_length compressor tokens (the decoder compressor's text carries
    // <ENC><s> ... </s>; BERT's [CLS] ... [SEP]).
    for (int64_t i = 0; i < 64; ++i) {
      passages_.push_back(efficiency_passage(ct, base_->config().light(), o.doc_length, i));
      text_passages_.push_back(text_of_tokens(base_->decoder_tokenizer(), o.doc_length, 17 + uint64_t(i)));
    }
  }

  bool from_checkpoint() const { return !o_.model.empty(); }
  int64_t checkpoint_rate() const { return base_->config().compr_rate; }
  const model::MistralModel& decoder() const { return base_->decoder(); }

  Json describe() const {
    Json j;
    j["source"] = from_checkpoint() ? o_.model : "random weights (in memory)";
    if (!from_checkpoint()) j["shape"] = shape_name_;
    j["decoder"] = base_->decoder().config().to_json();
    j["decoder_parameters"] = base_->decoder().parameter_count();
    j["decoder_tokenizer"] = base_->decoder_source();
    j["compressor"] = base_->config().light() ? "bert" : "decoder";
    if (base_->bert()) j["bert"] = base_->bert()->config().to_json();
    if (from_checkpoint()) j["compr_rate"] = base_->config().compr_rate;
    j[from_checkpoint() ? "load_seconds" : "build_seconds"] = base_->load_seconds();
    return j;
  }

  // Tokens per passage the compressor computes over: doc_length padded to a multiple of r,
  // plus the <MEM> slots for the decoder compressor.
  int64_t compression_length(int64_t r) const {
    const int64_t n = ceil_div(o_.doc_length, r), L = n * r;
    return base_->config().light() ? L : L + n;
  }
  double compression_flops(int64_t r) const {
    const int64_t n = ceil_div(o_.doc_length, r);
    if (base_->bert()) {
      const model::BertConfig& b = base_->bert()->config();
      const int64_t in = base_->config().compr_linear_type == "concat" ? r * b.hidden_size : b.hidden_size;
      return bert_compression_flops(b, compression_length(r), n, in,
                                    base_->decoder().config().hidden_size);
    }
    return decoder_compression_flops(base_->decoder().config(), compression_length(r));
  }

  // Context embeddings [N, n, H] of N passages, as ingestion makes them.
  at::Tensor compress(int64_t N, int64_t r) {
    std::vector<std::string> ps;
    for (int64_t i = 0; i < N; ++i) ps.push_back(passages_[size_t(i) % passages_.size()]);
    return compress::compress_passages(at_rate(r), ps, o_.doc_length, N);
  }

  // B questions answered from their k stored records each (question-major order): one
  // question is what `cocom ask` runs (generate::answer); more are one batch.
  GenRun answer(const std::vector<std::string>& records, int64_t B, int64_t k, int64_t n,
                const model::SamplingOptions& so) {
    at::Tensor ctx = decode_records(records, n, base_->decoder().config().hidden_size);
    const model::CocomModel& m = *base_;  // the prompt does not depend on the rate
    GenRun r;
    if (B == 1) {
      generate::AnswerResult a = generate::answer(m, efficiency_question(m.decoder_tokenizer(), o_.query_length, 0), ctx, so);
      r.gen = std::move(a.generation);
      r.prompt_length = r.gen.prompt_tokens;
      return r;
    }
    std::vector<std::string> qs;
    for (int64_t b = 0; b < B; ++b) qs.push_back(efficiency_question(m.decoder_tokenizer(), o_.query_length, b));
    generate::DecoderInputs in = generate::decoder_prompts(m, qs, k, n);
    at::Tensor embeds = generate::embed_with_contexts(m, in, ctx, k);
    r.gen = generate::generate_answers(m, embeds, in.attention_mask, so).generation;
    r.prompt_length = in.input_ids.size(1);
    return r;
  }

  // The uncompressed baseline: B questions, each with the text of k passages.
  GenRun answer_uncompressed(int64_t B, int64_t k, const model::SamplingOptions& so) {
    std::vector<std::vector<std::string>> contexts;
    std::vector<std::string> qs;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<std::string> c;
      for (int64_t j = 0; j < k; ++j) {
        c.push_back(text_passages_[size_t(b * k + j) % text_passages_.size()]);
      }
      contexts.push_back(c);
      qs.push_back(efficiency_question(base_->decoder_tokenizer(), o_.query_length, b));
    }
    generate::TextGenerationOptions to;
    to.sampling = so;
    to.context_max_length = o_.doc_length;
    generate::TextGeneration t = generate::generate_uncompressed(*base_, contexts, qs, to);
    GenRun r;
    r.gen = std::move(t.answers.generation);
    r.prompt_length = t.decoder.input_ids.size(1);
    return r;
  }

  // A token a forward pass practically never picks (stands in for EOS so that every run
  // decodes exactly label_length tokens).
  int64_t never_eos() const { return base_->ae_id(); }
  int64_t tokenizer_size() const { return base_->decoder_tokenizer().size(); }

 private:
  const model::CocomModel& at_rate(int64_t r) {
    if (r == base_->config().compr_rate) return *base_;
    if (from_checkpoint()) fail("rate ", r, " is not this checkpoint's (", base_->config().compr_rate, ")");
    auto it = rated_.find(r);
    if (it == rated_.end()) it = rated_.emplace(r, base_->with_rate(r, o_.seed)).first;
    return *it->second;
  }

  const EfficiencyBenchOptions& o_;
  std::string shape_name_;
  std::unique_ptr<model::CocomModel> base_;
  std::map<int64_t, std::unique_ptr<model::CocomModel>> rated_;
  std::vector<std::string> passages_, text_passages_;
};

// ---------------------------------------------------------------------------------------
// measurement

struct Timed {
  std::vector<double> total, prefill, decode;
  int64_t peak = 0, peak_delta = 0;
  std::string peak_method;
};

Json latency_json(const std::vector<double>& s) {
  std::vector<double> ms;
  for (double x : s) ms.push_back(x * 1e3);
  return {{"mean", mean_of(ms)},
          {"median", median_of(ms)},
          {"min", ms.empty() ? 0 : *std::min_element(ms.begin(), ms.end())},
          {"runs", ms}};
}

// Compares greedy answers decoded from lossy stored embeddings with the fp32 ones: the
// fraction of (row, step) positions with the same token, and the largest logit difference
// over the steps whose earlier tokens all agreed (later steps condition on different text).
Json agreement_json(const model::GenerationResult& ref, const model::GenerationResult& got) {
  const int64_t B = ref.tokens.size(0);
  const int64_t T = std::min(ref.tokens.size(1), got.tokens.size(1));
  int64_t same = 0, total = 0;
  double max_err = 0, max_abs = 0;
  for (int64_t b = 0; b < B; ++b) {
    bool prefix_agrees = true;
    for (int64_t t = 0; t < T; ++t) {
      if (prefix_agrees) {
        at::Tensor a = ref.step_logits[b][t], g = got.step_logits[b][t];
        max_err = std::max(max_err, (a - g).abs().max().item<double>());
        max_abs = std::max(max_abs, a.abs().max().item<double>());
      }
      const bool eq = ref.tokens[b][t].item<int64_t>() == got.tokens[b][t].item<int64_t>();
      same += eq;
      total += 1;
      prefix_agrees = prefix_agrees && eq;
    }
  }
  return {{"token_agreement", total ? double(same) / double(total) : 1.0},
          {"max_logit_error", max_err},
          {"max_abs_logit", max_abs}};
}

std::vector<std::string> encode_records(const at::Tensor& ctx, storage::EmbeddingDType dt) {
  std::vector<std::string> out;
  at::Tensor c = ctx.contiguous();
  const int64_t n = c.size(1), H = c.size(2);
  for (int64_t i = 0; i < c.size(0); ++i) {
    const float* p = c[i].data_ptr<float>();
    out.push_back(storage::encode_embedding(std::vector<float>(p, p + n * H), {n, H}, dt));
  }
  return out;
}

}  // namespace

std::string efficiency_passage(const model::Tokenizer& compressor_tokenizer, bool light,
                               int64_t doc_length, int64_t i) {
  // The compressor adds <ENC> <s> ... </s> (decoder) or [CLS] ... [SEP] (BERT) itself.
  return text_of_tokens(compressor_tokenizer, doc_length - (light ? 2 : 3), 17 + uint64_t(i));
}

std::string efficiency_question(const model::Tokenizer& decoder_tokenizer, int64_t query_length,
                                int64_t b) {
  return text_of_tokens(decoder_tokenizer, query_length, 99 + uint64_t(b));
}

Json run_efficiency(const EfficiencyBenchOptions& o) {
  if (o.repeat < 1) fail("--repeat ", o.repeat, ": must be at least 1");
  if (o.batch_size < 1) fail("--batch-size ", o.batch_size, ": must be at least 1");
  if (o.top_k < 1) fail("--top-k ", o.top_k, ": must be at least 1");
  if (o.doc_length < 4) fail("--doc-length ", o.doc_length, ": must be at least 4");
  if (o.query_length < 1) fail("--query-length ", o.query_length, ": must be at least 1");
  if (o.label_length < 1) fail("--label-length ", o.label_length, ": must be at least 1");
  if (o.collection_size < 0) fail("--collection-size must not be negative");
  if (!model::parse_weight_format(o.weights)) {
    fail("--weights ", o.weights, ": expected fp32, bf16, int8 or int8g");
  }
  bool gen_mode = false, comp_mode = false;
  for (const auto& m : split_list(o.mode)) {
    if (m == "generation") {
      gen_mode = true;
    } else if (m == "compression") {
      comp_mode = true;
    } else {
      fail("--mode ", m, ": expected generation, compression or both (comma list)");
    }
  }
  if (!gen_mode && !comp_mode) fail("--mode: nothing to measure");
  std::vector<int64_t> rates;
  for (const auto& s : split_list(o.rates)) {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() || *end != '\0' || v < 0) {
      fail("--compression-rate ", s, ": expected a non-negative integer (0 = uncompressed)");
    }
    if (std::find(rates.begin(), rates.end(), v) == rates.end()) rates.push_back(v);
  }
  if (rates.empty()) fail("--compression-rate: give at least one rate");
  auto store_dtype = storage::parse_embedding_dtype(o.embedding_dtype);
  if (!store_dtype)
    fail("--embedding-dtype ", o.embedding_dtype, ": expected fp16, bf16, fp32 or int8");

  const c10::Device dev = model::parse_device(o.device);
  const std::string load_before = load_average();
  auto be = std::make_unique<Backend>(o, dev);
  if (be->from_checkpoint()) {
    const int64_t r = be->checkpoint_rate();
    std::vector<int64_t> kept;
    for (int64_t x : rates) {
      if (x == 0 || x == r) {
        kept.push_back(x);
      } else {
        progress("skipping rate %lld: the checkpoint compresses x%lld", static_cast<long long>(x),
                 static_cast<long long>(r));
      }
    }
    rates = kept;
  }
  const model::DecoderConfig& dc = be->decoder().config();
  const int64_t H = dc.hidden_size, B = o.batch_size, k = o.top_k, N = B * k;

  model::SamplingOptions so;
  so.max_new_tokens = o.label_length;
  so.eos_id = be->never_eos();  // every run decodes exactly label_length tokens
  // A random shape's vocabulary may be wider than the tokenizer its answers are decoded with.
  so.vocab_limit = be->tokenizer_size();

  Json gen = Json::array(), comp = Json::array();
  std::string peak_method;
  auto time_runs = [&](const char* what, const std::function<void(Timed*)>& run) {
    Timed t;
    PeakMeter pm;
    pm.start();
    progress("%s: warm-up", what);
    run(nullptr);
    for (int i = 0; i < o.repeat; ++i) run(&t);
    std::tie(t.peak, t.peak_delta) = pm.stop();
    t.peak_method = pm.method();
    peak_method = t.peak_method;
    progress("%s: mean %.1f ms over %d runs", what, mean_of(t.total) * 1e3, o.repeat);
    return t;
  };
  // Times answers produced by `answer` (prompt length and new tokens recorded from the last).
  auto time_answers = [&](const char* what, const std::function<GenRun()>& answer, int64_t* L,
                          int64_t* T) {
    return time_runs(what, [&](Timed* rec) {
      const double t0 = now_s();
      GenRun g = answer();
      const double dt = now_s() - t0;
      *L = g.prompt_length;
      *T = g.gen.tokens.size(1);
      if (rec) {
        rec->total.push_back(dt);
        rec->prefill.push_back(g.gen.prefill_seconds);
        rec->decode.push_back(g.gen.decode_seconds);
      }
    });
  };
  // One generation configuration's JSON entry (the terminal table is printed from these).
  auto generation_json = [&](int64_t rate, int64_t L, int64_t T, const Timed& t, Json storage) {
    const double flops = double(B) * generation_flops(dc, L, T);
    const double total = mean_of(t.total), prefill = mean_of(t.prefill), decode = mean_of(t.decode);
    return Json{{"mode", "generation"},
                {"compression_rate", rate},
                {"prompt_tokens", L},
                {"new_tokens", T},
                {"latency_ms", latency_json(t.total)},
                {"stages_ms",
                 {{"prompt_assembly", (total - prefill - decode) * 1e3},
                  {"prefill", prefill * 1e3},
                  {"decode", decode * 1e3}}},
                {"gflops", flops / 1e9},
                {"gflops_per_s", flops / 1e9 / total},
                {"peak_rss_bytes", t.peak},
                {"peak_rss_delta_bytes", t.peak_delta},
                {"storage", std::move(storage)}};
  };
  auto storage_json = [&](int64_t n, storage::EmbeddingDType dt) {
    const uint64_t per = storage::embedding_payload_bytes(n, H, dt);
    return Json{{"dtype", storage::embedding_dtype_name(dt)},
                {"vectors_per_passage", n},
                {"bytes_per_passage", per},
                {"collection_bytes", per * uint64_t(o.collection_size)},
                {"collection", storage::human_bytes(per * uint64_t(o.collection_size))}};
  };

  for (int64_t r : rates) {
    char label[64];
    if (r == 0) {
      if (!gen_mode) continue;
      std::snprintf(label, sizeof label, "generation, uncompressed");
      int64_t L = 0, T = 0;
      Timed t = time_answers(
          label, [&] { return be->answer_uncompressed(B, k, so); }, &L, &T);
      Json e = generation_json(0, L, T, t, nullptr);
      gen.push_back(e);
      continue;
    }
    const int64_t n = ceil_div(o.doc_length, r);
    at::Tensor ctx;
    if (comp_mode) {
      std::snprintf(label, sizeof label, "compression x%lld, %lld passages",
                    static_cast<long long>(r), static_cast<long long>(N));
      Timed t = time_runs(label, [&](Timed* rec) {
        const double t0 = now_s();
        ctx = be->compress(N, r);
        if (rec) rec->total.push_back(now_s() - t0);
      });
      const double flops = double(N) * be->compression_flops(r);
      comp.push_back({{"mode", "compression"},
                      {"compression_rate", r},
                      {"passages", N},
                      {"tokens_per_passage", be->compression_length(r)},
                      {"latency_ms", latency_json(t.total)},
                      {"passages_per_s", double(N) / mean_of(t.total)},
                      {"gflops", flops / 1e9},
                      {"gflops_per_s", flops / 1e9 / mean_of(t.total)},
                      {"peak_rss_bytes", t.peak},
                      {"peak_rss_delta_bytes", t.peak_delta},
                      {"storage", storage_json(n, *store_dtype)}});
    }
    if (!gen_mode) continue;
    if (!ctx.defined()) {
      progress("compressing %lld passages at x%lld (generation inputs)", static_cast<long long>(N),
               static_cast<long long>(r));
      ctx = be->compress(N, r);
    }
    if (ctx.size(1) != n || ctx.size(2) != H) {
      fail("compressor returned ", model::shape_str(ctx.sizes()), ", expected [", N, ", ", n, ", ",
           H, "]");
    }
    const std::vector<std::string> records = encode_records(ctx, *store_dtype);
    std::snprintf(label, sizeof label, "generation x%lld from %s records",
                  static_cast<long long>(r), storage::embedding_dtype_name(*store_dtype));
    int64_t L = 0, T = 0;
    Timed t = time_answers(
        label, [&] { return be->answer(records, B, k, n, so); }, &L, &T);
    Json e = generation_json(r, L, T, t, storage_json(n, *store_dtype));
    if (o.compare_dtypes) {
      progress("x%lld: answers from fp32 / fp16 / bf16 / int8 records", static_cast<long long>(r));
      model::SamplingOptions keep = so;
      keep.keep_step_logits = true;
      const model::GenerationResult ref =
          be->answer(encode_records(ctx, storage::EmbeddingDType::F32), B, k, n, keep).gen;
      Json effects = Json::array();
      for (auto dt : {storage::EmbeddingDType::F32, storage::EmbeddingDType::F16,
                      storage::EmbeddingDType::BF16, storage::EmbeddingDType::I8}) {
        Json a = storage_json(n, dt);
        const model::GenerationResult got =
            dt == storage::EmbeddingDType::F32
                ? ref
                : be->answer(encode_records(ctx, dt), B, k, n, keep).gen;
        const Json agreement = agreement_json(ref, got);
        for (auto it = agreement.begin(); it != agreement.end(); ++it) a[it.key()] = it.value();
        effects.push_back(a);
      }
      e["dtype_effect"] = effects;
    }
    gen.push_back(e);
  }
  // Speed-up over the uncompressed configuration of this run.
  double base_ms = 0;
  for (const auto& e : gen) {
    if (e["compression_rate"] == 0) base_ms = e["latency_ms"]["mean"].get<double>();
  }
  for (auto& e : gen) {
    const double ms = e["latency_ms"]["mean"].get<double>();
    e["speedup_vs_uncompressed"] = base_ms > 0 && ms > 0 ? Json(base_ms / ms) : Json(nullptr);
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  Json out;
  out["benchmark"] = "efficiency";
  out["model"] = be->describe();
  out["settings"] = {{"batch_size", B},
                     {"top_k", k},
                     {"doc_length", o.doc_length},
                     {"query_length", o.query_length},
                     {"label_length", o.label_length},
                     {"repeat", o.repeat},
                     {"collection_size", o.collection_size},
                     {"embedding_dtype", storage::embedding_dtype_name(*store_dtype)},
                     {"weights", o.weights},
                     {"decoding", "greedy; EOS disabled so every answer has label_length tokens"}};
  out["machine"] = {{"cpu", first_line_of("/proc/cpuinfo", "model name")},
                    {"threads", at::get_num_threads()},
                    {"loadavg_before", load_before},
                    {"loadavg_after", load_average()},
                    {"process_peak_rss_bytes", int64_t(ru.ru_maxrss) * 1024},
                    {"peak_rss_method", peak_method}};
  out["generation"] = gen;
  out["compression"] = comp;
  return out;
}

int run_efficiency_bench(const EfficiencyBenchOptions& o) {
  const Json j = run_efficiency(o);
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  const Json& s = j["settings"];
  auto mb = [](const Json& v) { return double(v.get<int64_t>()) / 1e6; };
  std::printf("cocom bench efficiency -- %s, %d threads, load %s -> %s\n",
              j["machine"]["cpu"].get<std::string>().c_str(), j["machine"]["threads"].get<int>(),
              j["machine"]["loadavg_before"].get<std::string>().c_str(),
              j["machine"]["loadavg_after"].get<std::string>().c_str());
  std::printf(
      "batch %lld, top-k %lld, passages of %lld tokens, question %lld tokens, %lld new tokens, "
      "%d timed runs; store dtype %s; collection %lld passages\n",
      static_cast<long long>(s["batch_size"].get<int64_t>()),
      static_cast<long long>(s["top_k"].get<int64_t>()),
      static_cast<long long>(s["doc_length"].get<int64_t>()),
      static_cast<long long>(s["query_length"].get<int64_t>()),
      static_cast<long long>(s["label_length"].get<int64_t>()), s["repeat"].get<int>(),
      s["embedding_dtype"].get<std::string>().c_str(),
      static_cast<long long>(s["collection_size"].get<int64_t>()));
  if (!j["generation"].empty()) {
    std::printf("\ngeneration (stored embeddings -> answer)\n");
    std::printf("%-6s %7s %9s %9s %8s %9s %9s %9s %8s %10s %10s %12s %10s\n", "rate", "prompt",
                "mean ms", "median ms", "speedup", "assemble", "prefill", "decode", "GFLOPs",
                "peak MB", "+MB", "bytes/pass.", "collection");
    for (const auto& e : j["generation"]) {
      const int64_t r = e["compression_rate"].get<int64_t>();
      std::string rate = r == 0 ? "none" : "x" + std::to_string(r);
      const Json& st = e["storage"];
      std::printf(
          "%-6s %7lld %9.1f %9.1f %8s %9.1f %9.1f %9.1f %8.1f %10.0f %10.0f %12s %10s\n",
          rate.c_str(), static_cast<long long>(e["prompt_tokens"].get<int64_t>()),
          e["latency_ms"]["mean"].get<double>(), e["latency_ms"]["median"].get<double>(),
          e["speedup_vs_uncompressed"].is_null()
              ? "-"
              : (std::to_string(e["speedup_vs_uncompressed"].get<double>()).substr(0, 4) + "x")
                    .c_str(),
          e["stages_ms"]["prompt_assembly"].get<double>(), e["stages_ms"]["prefill"].get<double>(),
          e["stages_ms"]["decode"].get<double>(), e["gflops"].get<double>(),
          mb(e["peak_rss_bytes"]), mb(e["peak_rss_delta_bytes"]),
          st.is_null() ? "text only"
                       : std::to_string(st["bytes_per_passage"].get<uint64_t>()).c_str(),
          st.is_null() ? "-" : st["collection"].get<std::string>().c_str());
    }
    bool header = false;
    for (const auto& e : j["generation"]) {
      if (!e.contains("dtype_effect")) continue;
      if (!header) {
        std::printf("\nstored dtype vs fp32 (same embeddings, greedy answers)\n");
        std::printf("%-6s %-6s %12s %12s %10s %16s %14s\n", "rate", "dtype", "bytes/pass.",
                    "collection", "agreement", "max logit error", "max |logit|");
        header = true;
      }
      for (const auto& a : e["dtype_effect"]) {
        std::printf("x%-5lld %-6s %12llu %12s %9.1f%% %16.3g %14.3g\n",
                    static_cast<long long>(e["compression_rate"].get<int64_t>()),
                    a["dtype"].get<std::string>().c_str(),
                    static_cast<unsigned long long>(a["bytes_per_passage"].get<uint64_t>()),
                    a["collection"].get<std::string>().c_str(),
                    100 * a["token_agreement"].get<double>(), a["max_logit_error"].get<double>(),
                    a["max_abs_logit"].get<double>());
      }
    }
  }
  if (!j["compression"].empty()) {
    std::printf("\ncompression (batch x top-k passages)\n");
    std::printf("%-6s %8s %7s %9s %9s %10s %8s %8s %10s %10s\n", "rate", "passages", "tokens",
                "mean ms", "median ms", "passages/s", "GFLOPs", "GFLOP/s", "peak MB", "+MB");
    for (const auto& e : j["compression"]) {
      std::printf("x%-5lld %8lld %7lld %9.1f %9.1f %10.2f %8.1f %8.1f %10.0f %10.0f\n",
                  static_cast<long long>(e["compression_rate"].get<int64_t>()),
                  static_cast<long long>(e["passages"].get<int64_t>()),
                  static_cast<long long>(e["tokens_per_passage"].get<int64_t>()),
                  e["latency_ms"]["mean"].get<double>(), e["latency_ms"]["median"].get<double>(),
                  e["passages_per_s"].get<double>(), e["gflops"].get<double>(),
                  e["gflops_per_s"].get<double>(), mb(e["peak_rss_bytes"]),
                  mb(e["peak_rss_delta_bytes"]));
    }
  }
  std::printf(
      "\npeak memory: %s (peak MB includes the weights; +MB is above the resident size "
      "before the configuration)\n",
      j["machine"]["peak_rss_method"].get<std::string>().c_str());
  return 0;
}

}  // namespace cocom::bench
