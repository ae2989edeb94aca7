// BERT encoder in the Hugging Face formulation (BertModel): word + position + token-type
// embeddings, post-LayerNorm transformer layers, exact (erf) GELU, optional pooler.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/forward_hooks.h"
#include "model/weights.h"

namespace cocom::model {

struct BertOutput {
  at::Tensor last_hidden_state;           // [B, T, H] (every position, padding included)
  std::vector<at::Tensor> hidden_states;  // num_layers + 1 when requested
  at::Tensor pooler_output;               // [B, H] when the checkpoint has a pooler
};

class BertModel {
 public:
  static std::unique_ptr<BertModel> load(const std::string& dir, c10::Device device = c10::kCPU);
  // `src` names are relative to the BertModel root (e.g. "embeddings.word_embeddings.weight").
  static std::unique_ptr<BertModel> from_weights(const BertConfig& cfg, TensorProvider& src,
                                                 c10::Device device = c10::kCPU);

  const BertConfig& config() const { return cfg_; }
  c10::Device device() const { return device_; }
  bool has_pooler() const { return pooler_w_.defined(); }

  // input_ids / attention_mask [B, T]; token_type_ids may be undefined (zeros). `hooks`
  // (train/) adds BERT's dropout where Hugging Face applies it.
  BertOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                     const at::Tensor& token_type_ids = {}, bool output_hidden_states = false,
                     const ForwardHooks* hooks = nullptr) const;

  // The weights as the forward uses them (Hugging Face names relative to BertModel, except the
  // stacked "encoder.layer.N.attention.self.qkv.weight" / ".bias": query, key, value rows).
  // The tensors share the model's storage.
  NamedTensorList parameters() const;
  // Every tensor under its Hugging Face name (query/key/value as row views), for saving.
  NamedTensorList hf_tensors() const;

  // Sentence embeddings for retrieval: the [CLS] row, or the mean over real tokens.
  static at::Tensor cls_pool(const at::Tensor& last_hidden_state);
  static at::Tensor mean_pool(const at::Tensor& last_hidden_state,
                              const at::Tensor& attention_mask);

 private:
  struct Layer {
    at::Tensor wqkv, bqkv, wo, bo, ln1_w, ln1_b, wi, bi, wout, bout, ln2_w, ln2_b;
  };
  BertModel() = default;
  BertConfig cfg_;
  c10::Device device_ = c10::kCPU;
  at::Tensor word_, pos_, type_, emb_ln_w_, emb_ln_b_;
  at::Tensor pooler_w_, pooler_b_;
  std::vector<Layer> layers_;
};

}  // namespace cocom::model
