// Turning checkpoint tensors into owned libtorch tensors: dtype conversion (compute in fp32),
// name prefixes, PEFT LoRA merge, and the bookkeeping that reports missing and unexpected
// tensors with the file and tensor name.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/safetensors.h"

namespace cocom::model {

// Copies one tensor out of the (mmap'd) file into owned memory, converted to `target`
// (kFloat for float weights; kLong for integer buffers). Throws naming file and tensor.
at::Tensor read_tensor(const CheckpointFiles& files, const std::string& name,
                       at::ScalarType target = at::kFloat);
at::Tensor read_tensor(const SafetensorsFile& file, const std::string& name,
                       at::ScalarType target = at::kFloat);

// Where a model's parameters come from: a checkpoint (WeightSource) or a random
// initialiser (RandomWeights). Names are Hugging Face parameter names.
class TensorProvider {
 public:
  virtual ~TensorProvider() = default;
  virtual bool has(const std::string& name) const = 0;
  // Returns the fp32 tensor `name` with exactly `shape` on `device`, or throws.
  virtual at::Tensor get(const std::string& name, const std::vector<int64_t>& shape,
                         c10::Device device) = 0;
  // Marks a tensor as known but unused (e.g. rotary inv_freq buffers).
  virtual void ignore(const std::string& /*name*/) {}
  // Where the tensors come from, for error messages.
  virtual std::string origin() const = 0;
};

// Random parameters like a freshly initialised Hugging Face model: normal(0, std) for
// matrices and embeddings, ones for norm weights, zeros for biases. Deterministic per seed
// and call order.
class RandomWeights : public TensorProvider {
 public:
  explicit RandomWeights(uint64_t seed, double std = 0.02);
  bool has(const std::string& name) const override;
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape,
                 c10::Device device) override;
  std::string origin() const override { return "random weights"; }

 private:
  at::Generator gen_;
  double std_;
};

// LoRA adapters in PEFT layout: `X.base_layer.weight`, `X.lora_A.<adapter>.weight` [r,in],
// `X.lora_B.<adapter>.weight` [out,r], merged as W + scale * B @ A with scale = alpha / r.
struct LoraSettings {
  std::string adapter = "default";
  std::optional<double> alpha;  // lora_alpha; when unset, read adapter_config.json
  std::optional<int64_t> r;     // when unset, taken from the lora_A shape
  // false (training): the base weight is returned as stored and the adapter is kept apart
  // (WeightSource::take_adapters) instead of merged.
  bool merge = true;
};

// An adapter read apart from its base weight: a [r, in], b [out, r], and its scale alpha / r.
struct StoredLoraAdapter {
  at::Tensor a, b;
  double scale = 0;
};

class WeightSource : public TensorProvider {
 public:
  // `prefix` is prepended to every name (e.g. "decoder.base_model.model.").
  WeightSource(const CheckpointFiles& files, std::string prefix, LoraSettings lora = {});

  const CheckpointFiles& files() const { return files_; }
  const std::string& prefix() const { return prefix_; }
  bool has(const std::string& name) const override;
  // Loads `prefix+name` in fp32 on `device`, checks the shape, merges LoRA when the tensor is
  // stored as base_layer + lora_A/lora_B. Throws naming the file and tensor.
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape,
                 c10::Device device) override;
  void ignore(const std::string& name) override;
  std::string origin() const override {
    return files_.dir() + (prefix_.empty() ? "" : " (tensors under '" + prefix_ + "')");
  }
  // Throws listing tensors under the prefix that were never read (unless their name starts
  // with one of `ignorable_prefixes`, relative to the prefix).
  void check_all_used(const std::vector<std::string>& ignorable_prefixes = {}) const;
  int64_t lora_merged() const { return lora_merged_; }
  // With LoraSettings::merge false: the adapters met so far, by module name relative to the
  // prefix ("model.layers.0.self_attn.q_proj"); the map is moved out.
  std::map<std::string, StoredLoraAdapter> take_adapters() { return std::move(adapters_); }
  std::set<std::string> dtypes_seen() const { return dtypes_; }

 private:
  double lora_scale(const std::string& full_name, int64_t r);
  const CheckpointFiles& files_;
  std::string prefix_;
  LoraSettings lora_;
  std::optional<double> adapter_alpha_;  // from adapter_config.json, read once
  bool adapter_config_read_ = false;
  std::set<std::string> used_;
  std::set<std::string> dtypes_;
  int64_t lora_merged_ = 0;
  std::map<std::string, StoredLoraAdapter> adapters_;
};

// The tensors of a torch.save file (the zip format Python's torch.save writes): a dict of
// tensors, or a dict of such dicts (e.g. PISCO's adapters.pth, {adapter: {key: tensor}}),
// flattened as "outer/inner", floats as fp32 and integers as int64, on the CPU. Throws naming
// the file for anything else. `max_bytes` bounds the file's size.
std::map<std::string, at::Tensor> read_torch_save(const std::string& path,
                                                  int64_t max_bytes = int64_t{64} << 30);

std::string shape_str(const std::vector<int64_t>& shape);
std::string shape_str(at::IntArrayRef shape);

// Equal-length rows of token ids (or masks) as an int64 tensor [rows, length].
at::Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows);

}  // namespace cocom::model
