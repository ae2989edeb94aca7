// Resident weight formats for the decoder's linear layers: fp32 (the reference path), bf16
// (half the bytes, widened to fp32 inside the kernels) and weight-only int8 with one fp32
// scale per output channel (a quarter of the bytes; activations stay fp32).
//
// One-row products (decode) run matrix-vector kernels that read the stored format directly
// (AVX2 + FMA when the CPU has them, chosen at run time; a portable loop otherwise), in
// parallel over output channels. Many-row products (prefill) widen a block of output
// channels at a time into a reusable fp32 scratch and call the fp32 BLAS GEMM, so no full
// fp32 copy of a matrix is ever made.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

namespace cocom::model {

enum class WeightFormat { fp32, bf16, int8 };

const char* weight_format_name(WeightFormat f);  // "fp32", "bf16", "int8"
// Accepts fp32/float32, bf16/bfloat16, int8/q8; nullopt otherwise.
std::optional<WeightFormat> parse_weight_format(const std::string& s);
// Bytes per stored weight (4, 2, 1; the int8 scales are not counted).
double weight_format_bytes(WeightFormat f);

// Symmetric per-row (output channel) int8 quantisation of an fp32 matrix [N, K]:
// scale[n] = max_k |w[n,k]| / 127, q = round(w / scale) in [-127, 127] (a zero row gets
// scale 0 and q 0). The rounding error of every element is at most scale[n] / 2.
struct Int8Matrix {
  at::Tensor q;      // int8 [N, K]
  at::Tensor scale;  // fp32 [N]
};
Int8Matrix quantize_int8_rows(const at::Tensor& w);
at::Tensor dequantize_int8_rows(const at::Tensor& q, const at::Tensor& scale);  // fp32 [N, K]

// fp32 -> bf16 with round-to-nearest-even (kBFloat16 tensor of the same shape).
at::Tensor to_bf16(const at::Tensor& w);

// Kernels: y[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]) for row-major x [M, K], y [M, N].
// W is int8 with per-row scales, or bf16 given as raw uint16 bit patterns. Parallel over
// output channels with `threads` threads (0 = the kernel thread count, see below).
void gemv_int8(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scale, int64_t N,
               const float* bias, float* y, int threads = 0);
void gemv_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
               const float* bias, float* y, int threads = 0);

// Which kernel variant runs: "avx2" or "generic". set_generic_kernels(true) forces the
// portable loops (tests compare both).
const char* kernel_isa();
void set_generic_kernels(bool generic);

// Thread count the kernels use. Decode steps keep ATen's element-wise work on one thread
// (see mistral.cpp); this scope tells the kernels how many threads they may still use.
int kernel_threads();
class KernelThreadsScope {
 public:
  explicit KernelThreadsScope(int threads);
  ~KernelThreadsScope();
  KernelThreadsScope(const KernelThreadsScope&) = delete;
  KernelThreadsScope& operator=(const KernelThreadsScope&) = delete;

 private:
  int saved_;
};

// A linear layer y = x W^T + b whose weight is resident in one of the formats.
class Linear {
 public:
  Linear() = default;
  // `w` is fp32 [out, in]; it is converted (and may be released by the caller afterwards).
  static Linear make(const at::Tensor& w, const at::Tensor& bias, WeightFormat format);
  // Shares an existing bf16 matrix (e.g. the tied embedding table stored in bf16).
  static Linear from_bf16(const at::Tensor& w_bf16, const at::Tensor& bias = {});

  // x [..., in] fp32 -> [..., out] fp32. Rows <= kGemvMaxRows use the matrix-vector kernels,
  // more rows the blocked widen + GEMM path.
  at::Tensor forward(const at::Tensor& x) const;

  WeightFormat format() const { return format_; }
  int64_t out_features() const { return out_; }
  int64_t in_features() const { return in_; }
  bool defined() const { return w_.defined(); }
  // Bytes held by the weight (+ scales); shared storage is counted by each user.
  int64_t resident_bytes() const;
  // The weight as fp32 [out, in] (a full copy; tests and debugging only).
  at::Tensor dequantized() const;
  const at::Tensor& stored_weight() const { return w_; }
  const at::Tensor& scales() const { return scale_; }

  static constexpr int64_t kGemvMaxRows = 8;

 private:
  // Writes rows [n0, n0 + nb) of the fp32 weight into dst (row-major, nb x in).
  void widen_rows(int64_t n0, int64_t nb, float* dst) const;

  WeightFormat format_ = WeightFormat::fp32;
  int64_t out_ = 0, in_ = 0;
  at::Tensor w_;      // fp32 / kBFloat16 / int8 [out, in]
  at::Tensor scale_;  // int8: fp32 [out]
  at::Tensor bias_;   // optional fp32 [out]
};

}  // namespace cocom::model
