// Internal to model/ (not a public header): the entry points of the matrix-vector kernels, one
// family per instruction set, and what they share. The variant in effect is chosen in
// kernels.cpp (the dispatch); the public API is model/quant.h.
//
// - kernels_scalar.cpp: portable loops (the "generic" variant and every variant's tails).
// - kernels_avx2.cpp: AVX2 + FMA (int8 / bf16 / fp32 weights widened to fp32, 8 at a time).
// - kernels_avx512.cpp: AVX-512 F/BW/VNNI (int8 on VPDPBUSD with 16-bit activation planes,
//   bf16 widened 16 at a time, quantisation and bf16 widening of whole rows).
//
// Each kernel computes output channels [n0, n1) for all M rows of x: groups of four channels
// share every load of x, and a group's weights (4 x K) stay in cache while the M rows are
// processed, so the weights are read from memory once per call.
#pragma once

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "common/float16.h"

#define COCOM_AVX2 __attribute__((target("avx2,fma")))
#define COCOM_AVX512_LOAD __attribute__((target("avx2,fma,avx512f,avx512bw")))
#define COCOM_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))

namespace cocom::model::kernels {

// One weight as fp32 (exact for every format).
inline float scalar_weight(float v) { return v; }
inline float scalar_weight(int8_t v) { return static_cast<float>(v); }
inline float scalar_weight(uint16_t v) { return f16::bf16_to_float(v); }

// Runs f(begin, end) over [0, n) on `threads` threads that take chunks of `chunk` items from a
// shared counter until none is left, so that a thread the OS schedules late (a busy machine)
// delays the call by its current chunk only, not by a fixed share of the work. The OpenMP
// thread count of the calling thread is raised to `threads` for the call (decode steps lower
// it to 1 for ATen's element-wise work) and restored afterwards.
template <typename F>
void parallel_over(int64_t n, int threads, int64_t chunk, const F& f) {
  if (n <= 0) return;
  if (threads <= 1 || n <= chunk) {
    f(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  const int saved = omp_get_max_threads();
  if (saved != threads) omp_set_num_threads(threads);
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(chunk); b < n; b = next.fetch_add(chunk)) {
      f(b, std::min(n, b + chunk));
    }
  });
  if (saved != threads) omp_set_num_threads(saved);
}

// One row's int8 codes: q[k] = clamp(round_half_even(w[k] / divisor), -127, 127).
using QuantizeRowFn = void (*)(const float* w, int64_t K, float divisor, int8_t* q);
// The variant in effect's row quantiser (the same codes from every variant).
QuantizeRowFn quantize_row_kernel();

// The explicit instantiation of a block kernel (block_generic, block_avx2) for weights of type T,
// in the kernel's source file.
#define COCOM_INSTANTIATE_BLOCK(kernel, T)                                                 \
  template void kernel<T>(const float*, int64_t, int64_t, const T*, const float*, int64_t, \
                          const float*, float*, int64_t, int64_t)

// ---------------------------------------------------------------------------------------------
// kernels_scalar.cpp

void quantize_row_generic(const float* w, int64_t K, float divisor, int8_t* q);
// n bf16 values at `src` (raw bytes, any alignment) widened to fp32.
void widen_bf16_generic(const uint8_t* src, float* dst, int64_t n);
// y[m, n] = (sum_k x[m, k] * W[n, k]) * scale[n] (when given) + bias[n] (when given), for
// T = int8_t, uint16_t (bf16 bit patterns) and float.
template <typename T>
void block_generic(const float* x, int64_t M, int64_t K, const T* w, const float* scale, int64_t N,
                   const float* bias, float* y, int64_t n0, int64_t n1);
// int8 with gscale [N, G], one scale per group of kInt8GroupSize inputs; fp32 activations.
void block_int8g_generic(const float* x, int64_t M, int64_t K, const int8_t* w, const float* gscale,
                         int64_t G, int64_t N, const float* bias, float* y, int64_t n0, int64_t n1);

// ---------------------------------------------------------------------------------------------
// kernels_avx2.cpp

// As block_generic, eight weights at a time.
template <typename T>
COCOM_AVX2 void block_avx2(const float* x, int64_t M, int64_t K, const T* w, const float* scale,
                           int64_t N, const float* bias, float* y, int64_t n0, int64_t n1);

// ---------------------------------------------------------------------------------------------
// kernels_avx512.cpp

COCOM_AVX512_LOAD void quantize_row_avx512(const float* w, int64_t K, float divisor, int8_t* q);
// n bf16 values (2-byte aligned) widened to fp32.
COCOM_AVX512_LOAD void widen_bf16_avx512(const uint16_t* src, float* dst, int64_t n);
// bf16 weights (no scale), sixteen at a time.
COCOM_AVX512 void block_bf16_avx512(const float* x, int64_t M, int64_t K, const uint16_t* w,
                                    int64_t N, const float* bias, float* y, int64_t n0, int64_t n1);

// The integer sums of the VNNI kernels cannot overflow for K up to this.
constexpr int64_t kMaxVnniK = int64_t{1} << 19;
// gemv_int8 / gemv_int8g (model/quant.h) on the VNNI kernels, x quantised to 16-bit planes in
// chunks of up to 256 rows (bounding the planes' memory); false when x holds inf or NaN, in
// which case the caller recomputes all of y. `sums` / `offsets` are computed when null.
bool gemv_int8_vnni(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scale,
                    int64_t N, const float* bias, float* y, int threads, const int32_t* sums);
bool gemv_int8g_vnni(const float* x, int64_t M, int64_t K, const int8_t* q, const float* gscale,
                     int64_t N, const float* bias, float* y, int threads, const double* offsets);

}  // namespace cocom::model::kernels
