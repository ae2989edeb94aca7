// `cocom bench runtime`: prefill and decode speed of the decoder runtime, next to the
// machine's measured fp32 matmul rate and memory read bandwidth (same run), so each figure
// is reported as a fraction of its limit. Prints numbers; never fails on time.
#pragma once

#include <cstdint>
#include <string>

namespace cocom::bench {

struct RuntimeBenchOptions {
  std::string config;         // decoder config.json; empty = TinyLlama shape
  std::string model;          // checkpoint directory to load instead of random weights
  int64_t prompt_tokens = 0;  // 0 = both 656 and 56 (COCOM's uncompressed vs x16 prompts)
  int64_t new_tokens = 32;
  int repeat = 3;
  uint64_t seed = 0;
  bool json = false;
  std::string device = "cpu";
  std::string weights = "fp32";  // resident format of the linear layers: fp32, bf16, int8
  // Comma list of kernel variants to measure one after the other on the same model:
  // auto, avx512, avx2, generic (see model/quant.h).
  std::string kernels = "auto";
};

int run_runtime_bench(const RuntimeBenchOptions& opt);

}  // namespace cocom::bench
