// Resident weight formats for the decoder's linear layers: fp32 (the reference path), bf16
// (half the bytes, widened to fp32 inside the kernels) and int8 with one fp32 scale per
// output channel (a quarter of the bytes).
//
// Kernel variants, chosen at run time from the CPU (kernel_isa()):
// - "avx512" (AVX-512 F/BW/VNNI): int8 products run on the integer dot-product instruction.
//   Each activation row is quantised on the fly to 16 bits with one scale per row
//   (|error| <= max|x| / 65534 per element, about 256 times finer than the int8 weights)
//   and split into two byte planes, so a product costs two VPDPBUSD per 64 weights and the
//   sums are exact integers. This path serves every row count (decode and prefill). bf16
//   weights are widened 16 at a time.
// - "avx2" (AVX2 + FMA): int8 and bf16 weights are widened to fp32 eight at a time; activations
//   stay fp32.
// - "generic": portable loops.
// Without the avx512 variant, many-row int8 products (prefill) and every many-row bf16
// product widen a block of output channels at a time into a reusable fp32 scratch and call
// the fp32 BLAS GEMM, so no full fp32 copy of a matrix is ever made.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cocom::model {

// int8: one scale per output channel. int8g: one scale per group of kInt8GroupSize consecutive
// inputs of each output channel (finer steps where a row mixes large and small weights; 1/32
// more bytes).
enum class WeightFormat { fp32, bf16, int8, int8g };
constexpr int64_t kInt8GroupSize = 64;
int64_t int8_groups(int64_t K);  // ceil(K / kInt8GroupSize)

const char* weight_format_name(WeightFormat f);  // "fp32", "bf16", "int8", "int8g"
// Accepts fp32/float32, bf16/bfloat16, int8/q8, int8g/int8-g64; nullopt otherwise.
std::optional<WeightFormat> parse_weight_format(const std::string& s);
// Bytes per stored weight (4, 2, 1; the int8 scales are not counted).
double weight_format_bytes(WeightFormat f);

// Symmetric per-row (output channel) int8 quantisation of an fp32 matrix [N, K]:
// scale[n] = max_k |w[n,k]| / 127, q = round(w / scale) in [-127, 127] (a zero row gets
// scale 0 and q 0). The rounding error of every element is at most scale[n] / 2. The codes
// are written into resident memory (empty_hugepage); a row holding inf or NaN is an error.
struct Int8Matrix {
  at::Tensor q;      // int8 [N, K]
  at::Tensor scale;  // fp32 [N]
};
Int8Matrix quantize_int8_rows(const at::Tensor& w);
// The same with one scale per group of kInt8GroupSize inputs: scale is fp32 [N, G], G =
// int8_groups(K) (the last group may be shorter); error at most half its group's scale.
Int8Matrix quantize_int8_groups(const at::Tensor& w);
// fp32 [N, K]; scale [N] (per row) or [N, G] (per group).
at::Tensor dequantize_int8_rows(const at::Tensor& q, const at::Tensor& scale);

// n bf16 values (raw bytes, any alignment) widened to fp32 (exact), in parallel.
void widen_bf16(const void* src, float* dst, int64_t n);

// fp32 -> bf16 with round-to-nearest-even (kBFloat16 tensor of the same shape, in resident
// memory).
at::Tensor to_bf16(const at::Tensor& w);

// Kernels: y[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]) for row-major x [M, K], y [M, N].
// W is int8 with per-row scales, or bf16 given as raw uint16 bit patterns. Parallel over
// output channels with `threads` threads (0 = the kernel thread count, see below).
// `row_sums` (optional, int8 only) holds sum_k q[n, k] for every row (int8_row_sums); the
// avx512 variant needs them and computes them itself when none are given.
// The avx512 int8 variant quantises x (see above) unless a row holds inf or NaN, in which
// case the call runs the fp32-activation kernel instead.
void gemv_int8(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scale, int64_t N,
               const float* bias, float* y, int threads = 0, const int32_t* row_sums = nullptr);
void gemv_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
               const float* bias, float* y, int threads = 0);
// fp32 weights: a few rows of x (a decoder step of several sequences) read W once, where
// BLAS GEMM on 2-8 rows streams it at a fraction of the bandwidth (ENVIRONMENT.md trap 6).
void gemv_f32(const float* x, int64_t M, int64_t K, const float* w, int64_t N, const float* bias,
              float* y, int threads = 0);
// int8 with group scales gscale [N, int8_groups(K)]: the avx512 variant as gemv_int8 (16-bit
// activation planes, exact integer sums per group); every other variant runs the portable
// loop with fp32 activations.
// `offsets` (optional) are int8g_offsets of the matrix; computed when not given.
void gemv_int8g(const float* x, int64_t M, int64_t K, const int8_t* q, const float* gscale,
                int64_t N, const float* bias, float* y, int threads = 0,
                const double* offsets = nullptr);
// 32768 * sum_g gscale[n, g] * sum(codes of group g of row n), for each row: what the avx512
// int8g kernel's unsigned activation planes add to a row's sum.
std::vector<double> int8g_offsets(const int8_t* q, const float* gscale, int64_t N, int64_t K);
// sum_k q[n, k] for each of the N rows of an int8 [N, K] matrix.
std::vector<int32_t> int8_row_sums(const int8_t* q, int64_t N, int64_t K);

// Kernel variants. force_kernel_isa() makes every later call use the given variant, or the
// best one below it that the CPU has (tests and benchmarks compare them); automatic (the
// default) picks the best the CPU has. kernel_isa() names the variant in effect.
enum class KernelIsa { automatic, generic, avx2, avx512 };
const char* kernel_isa();
KernelIsa active_kernel_isa();  // never automatic
const char* kernel_isa_name(KernelIsa isa);
void force_kernel_isa(KernelIsa isa);
// The variants this CPU can run, best first (always ends with generic).
std::vector<KernelIsa> available_kernel_isas();

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

// An uninitialised CPU tensor; from 4 MiB up in fresh anonymous memory advised for transparent
// huge pages: resident weights (streams read ~1.5x faster here than over 4 KiB pages) and the
// large transients of loading (one page fault per 2 MiB instead of 512). Smaller ones come
// from at::empty.
at::Tensor empty_hugepage(at::IntArrayRef shape, at::ScalarType dtype);

// A linear layer y = x W^T + b whose weight is resident in one of the formats.
class Linear {
 public:
  Linear() = default;
  // `w` is fp32 [out, in]; it is converted (and may be released by the caller afterwards).
  static Linear make(const at::Tensor& w, const at::Tensor& bias, WeightFormat format);
  // Shares an existing bf16 matrix (e.g. the tied embedding table stored in bf16).
  static Linear from_bf16(const at::Tensor& w_bf16, const at::Tensor& bias = {});

  // x [..., in] fp32 -> [..., out] fp32. Rows <= kGemvMaxRows use the matrix-vector kernels,
  // as do any number of rows of an int8 layer under the avx512 variant; more rows otherwise
  // take the blocked widen + GEMM path.
  at::Tensor forward(const at::Tensor& x) const;

  WeightFormat format() const { return format_; }
  int64_t out_features() const { return out_; }
  int64_t in_features() const { return in_; }
  bool defined() const { return w_.defined(); }
  // Bytes held by the weight (+ scales, row sums, bias); shared storage is counted by each
  // user.
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
  at::Tensor scale_;  // int8: fp32 [out]; int8g: fp32 [out, groups]
  at::Tensor sums_;   // int8: int32 [out], sum of each row's codes; int8g: fp64 [out],
                      // int8g_offsets (both for the avx512 kernels)
  at::Tensor bias_;   // optional fp32 [out]
};

}  // namespace cocom::model
