// What may be added to the forward passes of model/mistral and model/bert without changing their
// weights: low-rank adapters applied on the fly (PEFT LoRA, y = W x + scale * B A dropout(x))
// and dropout. The trainer (train/) passes them to the same forward the engine runs; a forward
// given nothing computes exactly what it did without them.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace cocom::model {

using NamedTensorList = std::vector<std::pair<std::string, at::Tensor>>;

// One adapter: a [r, in], b [out, r]. Undefined tensors = no adapter on that module.
struct LoraAdapter {
  at::Tensor a, b;
  bool defined() const { return a.defined(); }
};

// The decoder's linear modules that PEFT's 'all-linear' LoRA adapts, in the order of a layer's
// forward pass.
enum LoraSlot : int { kLoraQ, kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp, kLoraDown, kLoraSlots };
// "self_attn.q_proj", ..., "mlp.down_proj" (the module names under model.layers.N.).
const char* lora_module_name(int slot);

// Returns x with inverted dropout of rate p applied (masks drawn by the caller's generator).
using DropoutFn = std::function<at::Tensor(const at::Tensor& x, double p)>;

struct ForwardHooks {
  // Per decoder layer, an adapter per slot; empty = no adapters.
  std::vector<std::array<LoraAdapter, kLoraSlots>> decoder_lora;
  double lora_scale = 0;    // alpha / r
  double lora_dropout = 0;  // on an adapter's input
  // BERT (COCOM-light's compressor): hidden_dropout_prob and attention_probs_dropout_prob.
  double bert_hidden_dropout = 0, bert_attention_dropout = 0;
  DropoutFn dropout;  // empty: no dropout at all (evaluation)

  at::Tensor apply_dropout(const at::Tensor& x, double p) const {
    return dropout && p > 0 ? dropout(x, p) : x;
  }
};

}  // namespace cocom::model
