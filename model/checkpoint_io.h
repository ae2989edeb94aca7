// Writing libtorch tensors to safetensors, and random-weight checkpoints in Hugging Face
// layout (for tests and benchmarks at any size).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/json_util.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace cocom::model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Float tensors are written as `float_dtype` (F32, F16 or BF16; bf16 rounds to nearest
// even), integer tensors as I64. Atomic (temporary file + rename).
void write_tensors(const std::string& path, const NamedTensors& tensors,
                   DType float_dtype = DType::F32);

// Reads every tensor of a safetensors file (floats as fp32, integers as int64).
NamedTensors read_all_tensors(const std::string& path);

// A float tensor of a checkpoint that is made only when it is written (write_streaming).
struct LazyTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::function<at::Tensor()> make;  // returns a float tensor of `shape`
};
// Writes `tensors` in order to a safetensors file, each one made, converted to `float_dtype`
// (F32, F16 or BF16, rounding to nearest even) and written before the next is made, so memory
// holds one tensor at a time whatever the checkpoint's size. Atomic (temporary file + rename).
void write_streaming(const std::string& path, const std::vector<LazyTensor>& tensors,
                     DType float_dtype,
                     const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

using TensorSpecs = std::vector<std::pair<std::string, std::vector<int64_t>>>;
TensorSpecs decoder_tensor_specs(const DecoderConfig& cfg);
TensorSpecs bert_tensor_specs(const BertConfig& cfg, bool with_pooler = true);

// Writes `<dir>/config.json` and `<dir>/model.safetensors` with random weights
// (normal(0, 0.02) matrices, unit norms, zero biases), in `dtype`, streaming tensor by tensor
// (any size fits in memory). Creates `dir`.
// Returns the number of parameters written.
int64_t write_random_decoder(const DecoderConfig& cfg, const std::string& dir, uint64_t seed,
                             DType dtype);
int64_t write_random_bert(const BertConfig& cfg, const std::string& dir, uint64_t seed,
                          DType dtype);

}  // namespace cocom::model
