// Mistral / Llama decoder in the Hugging Face formulation (MistralForCausalLM): RMSNorm,
// rotate-half RoPE, grouped-query attention with optional sliding window, SwiGLU MLP,
// tied or untied lm_head. Compute is fp32 on CPU; the linear layers' weights are resident in
// fp32 (default), bf16 or int8 (model/quant.h), chosen at load.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/forward_hooks.h"
#include "model/quant.h"
#include "model/weights.h"

namespace cocom::model {

// Pre-allocated key/value cache. Positions are slots in the padded sequence: a batch that
// was left-padded keeps its pads as masked slots, as Hugging Face does.
struct KVCache {
  std::vector<at::Tensor> k, v;  // per layer [B, KV, capacity, head_dim]
  at::Tensor key_mask;           // [B, capacity] int64, 1 = real token
  int64_t length = 0;            // slots filled
  int64_t capacity() const { return key_mask.defined() ? key_mask.size(1) : 0; }
};

struct DecoderOutput {
  at::Tensor logits;                      // [B, T, V] (or [B, 1, V] with last_logits_only)
  std::vector<at::Tensor> hidden_states;  // num_layers + 1 entries when requested
  at::Tensor last_hidden_state;           // [B, T, H] after the final norm
};

struct DecoderForwardOptions {
  bool output_hidden_states = false;
  bool last_logits_only = false;  // only the final position's logits (generation)
  bool compute_logits = true;     // false: hidden states only (compressor)
  // LoRA adapters applied on the fly and dropout (train/); the adapters' contributions are
  // computed in fp32 beside the resident weights, whatever their format. decode_step() takes
  // none.
  const ForwardHooks* hooks = nullptr;
};

class MistralModel {
 public:
  // Loads `dir` (config.json + safetensors). LoRA in PEFT layout is merged on load.
  // `weights` picks the resident format of the linear layers and lm_head (bf16 and int8 are
  // CPU only; with them the embedding table is held in bf16). Tensors are converted one at
  // a time, so no full fp32 copy of the model is ever made.
  static std::unique_ptr<MistralModel> load(const std::string& dir, c10::Device device = c10::kCPU,
                                            const LoraSettings& lora = {},
                                            WeightFormat weights = WeightFormat::fp32);
  // Builds from an explicit config and weight source (e.g. a COCOM checkpoint's decoder part).
  static std::unique_ptr<MistralModel> from_weights(const DecoderConfig& cfg, TensorProvider& src,
                                                    c10::Device device = c10::kCPU,
                                                    WeightFormat weights = WeightFormat::fp32);

  const DecoderConfig& config() const { return cfg_; }
  c10::Device device() const { return device_; }
  int64_t parameter_count() const;
  WeightFormat weight_format() const { return format_; }
  // Bytes of weights held in memory (embedding, layers, norms, lm_head; shared storage once).
  int64_t resident_weight_bytes() const;
  // Bytes of weights read per decoded token: every linear layer and lm_head, in their format.
  int64_t decode_weight_bytes() const;

  // Token embeddings for ids [B, T] (ids are checked against the vocabulary).
  at::Tensor embed(const at::Tensor& input_ids) const;

  // Forward over inputs_embeds [B, T, H] with attention_mask [B, T] (1 = token, 0 = pad) and
  // position_ids [B, T]. With a cache, the T new slots are appended after cache->length and
  // attend to everything cached. Without one, attention covers the T slots only.
  DecoderOutput forward_embeds(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                               const at::Tensor& position_ids, KVCache* cache = nullptr,
                               const DecoderForwardOptions& opt = {}) const;
  DecoderOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                        const at::Tensor& position_ids, KVCache* cache = nullptr,
                        const DecoderForwardOptions& opt = {}) const;

  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // lm_head over hidden states [..., H] -> logits [..., V].
  at::Tensor logits(const at::Tensor& hidden) const;

  // The weights as the forward uses them (fp32 models only, for training): Hugging Face names,
  // except the stacked matrices "model.layers.N.self_attn.qkv_proj.weight" (q, k, v rows; and
  // .bias with attention_bias) and "model.layers.N.mlp.gate_up_proj.weight" (gate, up rows);
  // a tied lm_head is not listed apart. The tensors share the model's storage.
  NamedTensorList parameters() const;
  // Every tensor under its Hugging Face name (the stacked matrices as row views), for saving.
  NamedTensorList hf_tensors() const;

  // One decoder step for B independent sequences (continuous batching): tokens [B] and their
  // positions [B]; caches[b] is sequence b's own one-row cache, already prefilled, which gets
  // the new token appended. The linear layers read their weights once for all B rows;
  // attention runs per sequence over its own cache. Returns the next-token logits [B, V].
  at::Tensor decode_step(const at::Tensor& tokens, const at::Tensor& positions,
                         const std::vector<KVCache*>& caches) const;

  // Position ids as Hugging Face computes them: plain forward uses 0..T-1 for every row
  // (pads counted); generate() uses cumsum(mask) - 1 with pads set to 1.
  static at::Tensor arange_positions(const at::Tensor& attention_mask);
  static at::Tensor cumsum_positions(const at::Tensor& attention_mask);

 private:
  struct Layer {
    at::Tensor input_norm, post_norm;
    Linear qkv;           // [(H + 2KV) * d, hidden]  q, k and v stacked (+ optional bias)
    at::Tensor qkv_bias;  // the bias qkv holds (attention_bias), shared, for parameters()
    Linear o;             // [hidden, H * d]
    Linear gate_up;       // [2 * I, hidden]
    Linear down;          // [hidden, I]
  };
  MistralModel() = default;
  at::Tensor attention(const Layer& L, const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin, const at::Tensor& mask_bias, KVCache* cache,
                       size_t layer_index, int64_t start, const ForwardHooks* hooks) const;
  // softmax(q k^T / sqrt(d)) v with grouped-query heads; q [B, nh, T, d], keys/values
  // [B, nkv, S, d], allowed broadcastable to [B, nkv, G, T, S]. Returns [B, T, nh * d].
  at::Tensor attend(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                    const at::Tensor& allowed) const;

  DecoderConfig cfg_;
  c10::Device device_ = c10::kCPU;
  WeightFormat format_ = WeightFormat::fp32;
  at::Tensor embed_tokens_;  // [V, H] fp32, or bf16 when the linear layers are bf16/int8
  at::Tensor final_norm_;
  Linear lm_head_;  // [V, H] (shares embed_tokens_'s storage when tied, except in int8)
  bool tied_ = false;
  at::Tensor inv_freq_;
  std::vector<Layer> layers_;
};

// y = x W^T (+ b) choosing the kernel that streams weights fastest for one-row inputs
// (ENVIRONMENT.md trap 6).
at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

}  // namespace cocom::model
