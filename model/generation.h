// Batched autoregressive generation with a KV cache, with the semantics of Hugging Face
// generate(): left-padded prompts, cumsum position ids, rows that hit EOS padded afterwards,
// stop when every row has finished or max_new_tokens is reached.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "model/mistral.h"

namespace cocom::model {

struct SamplingOptions {
  int64_t max_new_tokens = 20;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
  std::optional<int64_t> eos_id;  // default: config eos_token_id
  std::optional<int64_t> pad_id;  // written after a row's EOS; default: eos
  bool keep_step_logits = false;  // return the next-token logits of every step
  // Only ids below this are ever chosen (0 = the whole vocabulary). For random-weight shapes
  // whose vocabulary is wider than the tokenizer that reads their text (bench efficiency).
  int64_t vocab_limit = 0;
};

struct GenerationResult {
  at::Tensor tokens;       // [B, T'] int64, new tokens only
  at::Tensor step_logits;  // [B, T', V] when keep_step_logits
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // all steps after the first token
};

// Called after each step with the new token of every row (int64 [B]); return false to stop.
using TokenCallback = std::function<bool(int64_t step, const at::Tensor& next_tokens)>;

GenerationResult generate(const MistralModel& model, const at::Tensor& inputs_embeds,
                          const at::Tensor& attention_mask, const SamplingOptions& opt,
                          const TokenCallback& on_token = nullptr);
GenerationResult generate_from_ids(const MistralModel& model, const at::Tensor& input_ids,
                                   const at::Tensor& attention_mask, const SamplingOptions& opt,
                                   const TokenCallback& on_token = nullptr);

// Picks the next token per row from logits [B, V]: greedy argmax, or temperature / top-k /
// top-p filtering (in that order, as Hugging Face's warpers) then sampling with `gen`.
at::Tensor select_next_tokens(const at::Tensor& logits, const SamplingOptions& opt,
                              at::Generator* gen);

}  // namespace cocom::model
