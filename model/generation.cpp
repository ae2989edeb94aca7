#include "model/generation.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace cocom::model {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check_options(const SamplingOptions& opt, int64_t vocab) {
  if (opt.max_new_tokens < 0) fail("--max-new-tokens ", opt.max_new_tokens, ": must be >= 0");
  if (opt.temperature < 0 || !std::isfinite(opt.temperature)) {
    fail("--temperature: must be a finite number >= 0 (0 = greedy)");
  }
  if (opt.top_k < 0) fail("--top-k ", opt.top_k, ": must be >= 0 (0 = off)");
  if (!(opt.top_p > 0 && opt.top_p <= 1)) fail("--top-p: must be in (0, 1]");
  if (opt.eos_id && (*opt.eos_id < 0 || *opt.eos_id >= vocab)) {
    fail("eos token id ", *opt.eos_id, " is outside the vocabulary (", vocab, ")");
  }
}
}  // namespace

at::Tensor select_next_tokens(const at::Tensor& logits, const SamplingOptions& opt,
                              at::Generator* gen) {
  if (opt.temperature == 0.0) return logits.argmax(-1);
  at::Tensor scores = logits.to(at::kFloat) / opt.temperature;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t V = scores.size(-1);
  if (opt.top_k > 0 && opt.top_k < V) {
    at::Tensor kth = std::get<0>(scores.topk(opt.top_k, -1)).narrow(-1, opt.top_k - 1, 1);
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (opt.top_p < 1.0) {
    // Drop the low-probability tail whose total mass is at most 1 - top_p; always keep the
    // most likely token.
    auto sorted = scores.sort(-1, /*descending=*/false);
    at::Tensor sorted_scores = std::get<0>(sorted), order = std::get<1>(sorted);
    at::Tensor cum = sorted_scores.softmax(-1).cumsum(-1);
    at::Tensor remove_sorted = cum <= (1.0 - opt.top_p);
    remove_sorted.narrow(-1, V - 1, 1).fill_(false);
    at::Tensor remove = at::zeros_like(remove_sorted).scatter(-1, order, remove_sorted);
    scores = scores.masked_fill(remove, neg_inf);
  }
  at::Tensor probs = scores.softmax(-1);
  at::Tensor cpu_probs = probs.to(at::kCPU);
  return at::multinomial(cpu_probs, 1, false, *gen).squeeze(-1).to(logits.device());
}

GenerationResult generate(const MistralModel& model, const at::Tensor& inputs_embeds,
                          const at::Tensor& attention_mask, const SamplingOptions& opt,
                          const TokenCallback& on_token) {
  const DecoderConfig& cfg = model.config();
  check_options(opt, cfg.vocab_size);
  if (inputs_embeds.dim() != 3) fail("inputs_embeds: expected [batch, length, hidden]");
  const int64_t B = inputs_embeds.size(0), L = inputs_embeds.size(1);
  if (L == 0) fail("generate: the prompt is empty (at least one token is needed)");
  const int64_t eos = opt.eos_id.value_or(cfg.eos_token_id);
  const int64_t pad = opt.pad_id.value_or(eos);
  const c10::Device dev = model.device();
  at::Tensor mask = attention_mask.to(dev, at::kLong);
  if (mask.sizes().vec() != std::vector<int64_t>{B, L}) {
    fail("attention_mask: expected shape [", B, ",", L, "], got ", shape_str(mask.sizes()));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed);

  GenerationResult res;
  res.prompt_tokens = mask.sum().item<int64_t>();
  std::vector<at::Tensor> tokens, logits_steps;
  if (opt.max_new_tokens == 0) {
    res.tokens = at::empty({B, 0}, at::kLong);
    return res;
  }
  KVCache cache = model.make_cache(B, L + opt.max_new_tokens);
  DecoderForwardOptions fo;
  fo.last_logits_only = true;
  auto t0 = std::chrono::steady_clock::now();
  at::Tensor pos = MistralModel::cumsum_positions(mask);
  DecoderOutput out = model.forward_embeds(inputs_embeds, mask, pos, &cache, fo);
  at::Tensor unfinished = at::ones({B}, at::TensorOptions().dtype(at::kLong).device(dev));
  at::Tensor last_pos = pos.select(1, L - 1);
  at::Tensor one_mask = at::ones({B, 1}, at::TensorOptions().dtype(at::kLong).device(dev));
  std::chrono::steady_clock::time_point t1;
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    at::Tensor step_logits = out.logits.select(1, 0);  // [B, V]
    if (opt.keep_step_logits) logits_steps.push_back(step_logits.to(at::kCPU));
    at::Tensor next = select_next_tokens(
        opt.vocab_limit > 0 && opt.vocab_limit < step_logits.size(-1)
            ? step_logits.narrow(-1, 0, opt.vocab_limit)
            : step_logits,
        opt, &gen);
    next = next * unfinished + pad * (1 - unfinished);
    tokens.push_back(next.to(at::kCPU));
    if (step == 0) {
      res.prefill_seconds = seconds_since(t0);
      t1 = std::chrono::steady_clock::now();
    }
    unfinished = unfinished * (next != eos).to(at::kLong);
    bool go_on = !on_token || on_token(step, next);
    if (!go_on || unfinished.max().item<int64_t>() == 0 || step + 1 == opt.max_new_tokens) break;
    last_pos = last_pos + 1;
    out = model.forward(next.unsqueeze(1), one_mask, last_pos.unsqueeze(1), &cache, fo);
  }
  res.decode_seconds = seconds_since(t1);
  res.tokens = at::stack(tokens, 1);
  if (opt.keep_step_logits) res.step_logits = at::stack(logits_steps, 1);
  return res;
}

GenerationResult generate_from_ids(const MistralModel& model, const at::Tensor& input_ids,
                                   const at::Tensor& attention_mask, const SamplingOptions& opt,
                                   const TokenCallback& on_token) {
  return generate(model, model.embed(input_ids), attention_mask, opt, on_token);
}

}  // namespace cocom::model
