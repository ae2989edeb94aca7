#include "bench/bench_runtime.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <vector>

#include "common/error.h"
#include "common/json_util.h"
#include "common/strings.h"
#include "model/mistral.h"
#include "model/quant.h"
#include "model/runtime.h"

namespace cocom::bench {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best time of `reps` runs of fn (after one warm-up).
template <typename F>
double best_time(int reps, F&& fn) {
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    double t0 = now_s();
    fn();
    best = std::min(best, now_s() - t0);
  }
  return best;
}

// FLOPs of a prefill over n tokens computing logits for the last position only.
double prefill_flops(const model::DecoderConfig& c, double n) {
  double H = double(c.hidden_size), I = double(c.intermediate_size);
  double q = double(c.num_attention_heads * c.head_dim),
         kv = double(c.num_key_value_heads * c.head_dim);
  double per_tok_layer = 2 * (H * q + 2 * H * kv + q * H + 3 * H * I);
  // Scores and weighted sum over all n keys (the engine computes the full square, masked).
  double attn_layer = 2 * 2 * n * n * q;
  return double(c.num_hidden_layers) * (per_tok_layer * n + attn_layer) +
         2 * double(c.vocab_size) * H;
}

// Streams `data` once with all threads (8 independent accumulators per thread so the adds
// never limit the rate); returns the sum so the compiler cannot drop the reads.
float stream_read(const float* data, int64_t n) {
  const int64_t threads = at::get_num_threads();
  std::vector<float> partial(static_cast<size_t>(threads), 0.f);
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b = n * t / threads, e = n * (t + 1) / threads;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = b;
      for (; i + 8 <= e; i += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += data[i + j];
      }
      for (; i < e; ++i) acc[0] += data[i];
      float s = 0;
      for (float a : acc) s += a;
      partial[static_cast<size_t>(t)] = s;
    }
  });
  float s = 0;
  for (float p : partial) s += p;
  return s;
}

model::KernelIsa parse_kernel_isa(const std::string& name) {
  if (name == "auto" || name == "automatic") return model::KernelIsa::automatic;
  for (model::KernelIsa isa :
       {model::KernelIsa::avx512, model::KernelIsa::avx2, model::KernelIsa::generic}) {
    if (name == model::kernel_isa_name(isa)) return isa;
  }
  fail("--kernels ", name, ": expected auto, avx512, avx2 or generic");
}

}  // namespace

int run_runtime_bench(const RuntimeBenchOptions& opt) {
  if (opt.repeat < 1) fail("--repeat ", opt.repeat, ": must be at least 1");
  if (opt.new_tokens < 2) fail("--new-tokens ", opt.new_tokens, ": must be at least 2");
  c10::Device dev = model::parse_device(opt.device);
  const auto wf_opt = model::parse_weight_format(opt.weights);
  if (!wf_opt) fail("--weights ", opt.weights, ": expected fp32, bf16, int8 or int8g");
  const model::WeightFormat wf = *wf_opt;
  // The kernel variants, checked before anything is measured.
  std::vector<model::KernelIsa> variants;
  for (const std::string& name : split_list(opt.kernels)) {
    model::KernelIsa isa = parse_kernel_isa(name);
    if (isa != model::KernelIsa::automatic) {
      const auto avail = model::available_kernel_isas();
      if (std::find(avail.begin(), avail.end(), isa) == avail.end()) {
        fail("--kernels ", name, ": this CPU cannot run that variant (it has ",
             model::kernel_isa_name(avail.front()), ")");
      }
    }
    variants.push_back(isa);
  }
  if (variants.empty()) fail("--kernels '", opt.kernels, "': name at least one variant");
  const int threads = at::get_num_threads();
  auto log = [&](const std::string& s) {
    if (!opt.json) std::fprintf(stderr, "%s\n", s.c_str());
  };

  // 1. The machine's limits, measured now.
  const int64_t M = 656, K = 2048, N = 5632;
  at::Tensor a = at::randn({M, K}), w = at::randn({N, K});
  double t_mm = best_time(5, [&] { at::linear(a, w); });
  const double matmul_gflops = 2.0 * M * K * N / t_mm / 1e9;
  at::Tensor big = at::ones({int64_t(256) << 20});  // 1 GiB of fp32, far beyond the caches
  volatile float sink = 0;
  double t_rd =
      best_time(5, [&] { sink = sink + stream_read(big.data_ptr<float>(), big.numel()); });
  const double stream_gbs = double(big.numel()) * 4 / t_rd / 1e9;
  // The matrix-vector kernel decode uses, on a 1 GiB matrix: on this VM it sometimes streams
  // faster than the plain loop, so the bandwidth limit is the best of the two.
  at::Tensor vec = at::randn({8192});
  double t_mv = best_time(5, [&] { at::mv(big.view({-1, 8192}), vec); });
  const double mv_gbs = double(big.numel()) * 4 / t_mv / 1e9;
  big = at::Tensor();
  // The same loop over memory advised for huge pages, where the resident bf16/int8 weights
  // live (model::empty_hugepage): the bound counts it too, so a format does not beat the
  // bound by its pages alone.
  at::Tensor bigh = model::empty_hugepage({int64_t(256) << 20}, at::kFloat).fill_(1.0f);
  double t_rh =
      best_time(5, [&] { sink = sink + stream_read(bigh.data_ptr<float>(), bigh.numel()); });
  const double huge_gbs = double(bigh.numel()) * 4 / t_rh / 1e9;
  bigh = at::Tensor();
  const double read_gbs = std::max({stream_gbs, mv_gbs, huge_gbs});
  char line[256];
  std::snprintf(line, sizeof line,
                "machine: %d threads, fp32 matmul %.1f GFLOP/s, read bandwidth %.1f GB/s "
                "(streaming loop %.1f, over huge pages %.1f, at::mv %.1f)",
                threads, matmul_gflops, read_gbs, stream_gbs, huge_gbs, mv_gbs);
  log(line);

  // 2. The model.
  std::unique_ptr<model::MistralModel> m;
  std::string source;
  double t0 = now_s();
  if (!opt.model.empty()) {
    m = model::MistralModel::load(opt.model, dev, {}, wf);
    source = opt.model;
  } else {
    model::DecoderConfig cfg = opt.config.empty() ? model::named_decoder_shape("tinyllama")
                                                  : model::DecoderConfig::load(opt.config);
    model::RandomWeights rnd(opt.seed);
    m = model::MistralModel::from_weights(cfg, rnd, dev, wf);
    source = opt.config.empty() ? "random TinyLlama shape" : "random weights, " + opt.config;
  }
  const model::DecoderConfig& cfg = m->config();
  std::snprintf(line, sizeof line,
                "model: %s (%d layers, hidden %d, %.0fM params), %s weights (%.2f GB resident), "
                "built in %.1f s",
                source.c_str(), int(cfg.num_hidden_layers), int(cfg.hidden_size),
                cfg.parameter_count() / 1e6, model::weight_format_name(wf),
                m->resident_weight_bytes() / 1e9, now_s() - t0);
  log(line);

  // 3. Each kernel variant asked for, on the same model: prefill at each prompt length, then
  // decode after the first one.
  std::vector<int64_t> lengths;
  if (opt.prompt_tokens > 0)
    lengths = {opt.prompt_tokens};
  else
    lengths = {656, 56};
  // Weights read once per decoded token: the linear layers and lm_head in their resident
  // format (+ int8 scales and row sums); embedding rows are not counted.
  const double bytes_per_token = static_cast<double>(m->decode_weight_bytes());
  const double bound_tps = read_gbs * 1e9 / bytes_per_token;
  Json results = Json::array();
  for (model::KernelIsa isa : variants) {
    model::force_kernel_isa(isa);
    const std::string kname = model::kernel_isa();
    Json prefill = Json::array();
    double decode_tps = 0;
    for (int64_t n : lengths) {
      if (n + opt.new_tokens > cfg.max_position_embeddings) {
        log("note: prompt + new tokens exceed max_position_embeddings; positions extrapolate");
      }
      at::Tensor ids = at::randint(3, cfg.vocab_size, {1, n}, at::kLong);
      at::Tensor mask = at::ones({1, n}, at::kLong);
      at::Tensor pos = model::MistralModel::arange_positions(mask);
      model::DecoderForwardOptions fo;
      fo.last_logits_only = true;
      double t_prefill = best_time(opt.repeat, [&] {
        model::KVCache cache = m->make_cache(1, n + opt.new_tokens);
        m->forward(ids, mask, pos, &cache, fo);
      });
      double flops = prefill_flops(cfg, double(n));
      Json p;
      p["prompt_tokens"] = n;
      p["seconds"] = t_prefill;
      p["tokens_per_s"] = double(n) / t_prefill;
      p["gflops"] = flops / t_prefill / 1e9;
      p["fraction_of_peak"] = flops / t_prefill / 1e9 / matmul_gflops;
      prefill.push_back(p);
      std::snprintf(line, sizeof line,
                    "[%s] prefill %5lld tokens: %.3f s, %.1f tok/s, %.1f GFLOP/s = %.0f%% of the "
                    "matmul rate",
                    kname.c_str(), static_cast<long long>(n), t_prefill, double(n) / t_prefill,
                    flops / t_prefill / 1e9, 100.0 * flops / t_prefill / 1e9 / matmul_gflops);
      log(line);
      if (n != lengths.front()) continue;
      // Decode: one token at a time after this prompt, KV cache in place.
      model::KVCache cache = m->make_cache(1, n + opt.new_tokens + 1);
      model::DecoderOutput o = m->forward(ids, mask, pos, &cache, fo);
      at::Tensor next = o.logits.select(1, 0).argmax(-1).view({1, 1});
      at::Tensor one = at::ones({1, 1}, at::kLong);
      // `repeat` runs of new_tokens steps from the same prompt (the cache is rewound to it);
      // in each the first step is a warm-up and the rest are timed. The best run counts, as
      // the best of 5 counts for the bandwidth it is compared with.
      const at::Tensor first = next;
      for (int r = 0; r < opt.repeat; ++r) {
        cache.length = n;
        next = first;
        double td0 = 0;
        for (int64_t s = 0; s < opt.new_tokens; ++s) {
          if (s == 1) td0 = now_s();
          at::Tensor p1 = at::full({1, 1}, n + s, at::kLong);
          o = m->forward(next, one, p1, &cache, fo);
          next = o.logits.select(1, 0).argmax(-1).view({1, 1});
        }
        decode_tps = std::max(decode_tps, double(opt.new_tokens - 1) / (now_s() - td0));
      }
    }
    std::snprintf(line, sizeof line,
                  "[%s] decode: %.2f tok/s; bound %.2f tok/s (%.2f GB of %s weights per token) = "
                  "%.0f%% of the bound",
                  kname.c_str(), decode_tps, bound_tps, bytes_per_token / 1e9,
                  model::weight_format_name(wf), 100.0 * decode_tps / bound_tps);
    log(line);
    Json r;
    r["kernels"] = kname;
    r["prefill"] = prefill;
    r["prefill_tokens_per_s"] = prefill[0]["tokens_per_s"];
    r["prefill_fraction_of_peak"] = prefill[0]["fraction_of_peak"];
    r["decode_tokens_per_s"] = decode_tps;
    r["decode_fraction_of_bound"] = decode_tps / bound_tps;
    results.push_back(r);
  }
  model::force_kernel_isa(model::KernelIsa::automatic);
  for (size_t i = 1; i < results.size(); ++i) {
    const Json& a = results[0];
    const Json& b = results[i];
    std::snprintf(
        line, sizeof line, "%s vs %s, same run: decode %.2fx, prefill %.2fx",
        a["kernels"].get<std::string>().c_str(), b["kernels"].get<std::string>().c_str(),
        a["decode_tokens_per_s"].get<double>() / b["decode_tokens_per_s"].get<double>(),
        a["prefill_tokens_per_s"].get<double>() / b["prefill_tokens_per_s"].get<double>());
    log(line);
  }
  Json out;
  out["threads"] = threads;
  out["device"] = opt.device;
  out["model"] = source;
  out["weights"] = model::weight_format_name(wf);
  out["resident_weight_bytes"] = m->resident_weight_bytes();
  out["matmul_gflops"] = matmul_gflops;
  out["read_bandwidth_gbs"] = read_gbs;
  out["stream_bandwidth_gbs"] = stream_gbs;
  out["mv_bandwidth_gbs"] = mv_gbs;
  out["huge_page_stream_bandwidth_gbs"] = huge_gbs;
  out["decode_bound_tokens_per_s"] = bound_tps;
  out["weight_bytes_per_token"] = bytes_per_token;
  // The first variant's figures at the top level; every variant under "variants".
  for (const char* key : {"kernels", "prefill", "prefill_tokens_per_s", "prefill_fraction_of_peak",
                          "decode_tokens_per_s", "decode_fraction_of_bound"}) {
    out[key] = results[0][key];
  }
  out["variants"] = results;
  if (opt.json) std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace cocom::bench
