#include "model/quant.h"

#include <ATen/Parallel.h>

// GCC 12's AVX-512 headers build "undefined" vectors by self-assignment and warn about it
// wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "common/float16.h"
#include "model/mistral.h"

namespace cocom::model {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::fp32:
      return "fp32";
    case WeightFormat::bf16:
      return "bf16";
    case WeightFormat::int8:
      return "int8";
    case WeightFormat::int8g:
      return "int8g";
  }
  return "?";
}

std::optional<WeightFormat> parse_weight_format(const std::string& s) {
  if (s == "fp32" || s == "float32" || s == "f32") return WeightFormat::fp32;
  if (s == "bf16" || s == "bfloat16") return WeightFormat::bf16;
  if (s == "int8" || s == "q8") return WeightFormat::int8;
  if (s == "int8g" || s == "int8-g64") return WeightFormat::int8g;
  return std::nullopt;
}

double weight_format_bytes(WeightFormat f) {
  switch (f) {
    case WeightFormat::fp32:
      return 4.0;
    case WeightFormat::bf16:
      return 2.0;
    case WeightFormat::int8:
      return 1.0;
    case WeightFormat::int8g:
      return 1.0 + 4.0 / static_cast<double>(kInt8GroupSize);  // + the group scales
  }
  return 0.0;
}

int64_t int8_groups(int64_t K) { return (K + kInt8GroupSize - 1) / kInt8GroupSize; }

namespace {
KernelIsa active_isa();

#define COCOM_AVX512_LOAD __attribute__((target("avx2,fma,avx512f,avx512bw")))

// q[k] = clamp(round_half_even(w[k] / divisor), -127, 127) for one row.
void quantize_row_generic(const float* w, int64_t K, float divisor, int8_t* q) {
  // |w / divisor| <= 127 (plus rounding), so adding and subtracting 1.5 * 2^23 rounds it to
  // the nearest integer, ties to even, exactly as nearbyint does.
  constexpr float kMagic = 12582912.0f;
  for (int64_t k = 0; k < K; ++k) {
    const float t = (w[k] / divisor + kMagic) - kMagic;
    q[k] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, t)));
  }
}

COCOM_AVX512_LOAD void quantize_row_avx512(const float* w, int64_t K, float divisor, int8_t* q) {
  const __m512 d = _mm512_set1_ps(divisor);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    // Division (not a reciprocal) and the default rounding mode, nearest even: the same codes
    // as the portable loop.
    __m512i v = _mm512_cvtps_epi32(_mm512_div_ps(_mm512_loadu_ps(w + k), d));
    v = _mm512_max_epi32(_mm512_min_epi32(v, hi), lo);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(v));
  }
  quantize_row_generic(w + k, K - k, divisor, q + k);
}

COCOM_AVX512_LOAD void widen_bf16_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  }
  for (; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &bits, 4);
  }
}
}  // namespace

void widen_bf16(const void* src, float* dst, int64_t n) {
  const uint8_t* bytes = static_cast<const uint8_t*>(src);
  const bool avx512 = active_isa() == KernelIsa::avx512;
  at::parallel_for(0, n, int64_t{1} << 16, [&](int64_t i0, int64_t i1) {
    if (avx512 && reinterpret_cast<uintptr_t>(bytes) % 2 == 0) {
      widen_bf16_avx512(reinterpret_cast<const uint16_t*>(bytes) + i0, dst + i0, i1 - i0);
      return;
    }
    for (int64_t i = i0; i < i1; ++i) {
      uint16_t h;
      std::memcpy(&h, bytes + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(dst + i, &bits, 4);
    }
  });
}

namespace {
// Codes for [N, K] with one scale per `group` consecutive inputs of a row (group = K: one per
// row); scale has G = ceil(K / group) columns.
void quantize_int8(const at::Tensor& w, int64_t group, int8_t* q, float* scale) {
  const int64_t N = w.size(0), K = w.size(1), G = (K + group - 1) / group;
  const float* src = w.data_ptr<float>();
  std::atomic<int64_t> bad_row{-1};
  const bool avx512 = active_isa() == KernelIsa::avx512;
  at::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t k0 = g * group, len = std::min(group, K - k0);
        const float* seg = src + n * K + k0;
        // Branch-free loops the compiler vectorises: the max of |w|, and a probe that turns
        // NaN when any element is inf or NaN.
        float amax = 0.0f, probe = 0.0f;
        for (int64_t k = 0; k < len; ++k) {
          amax = std::max(amax, std::fabs(seg[k]));
          probe += seg[k] * 0.0f;
        }
        if (std::isnan(probe) || !std::isfinite(amax)) {
          bad_row.store(n);
          break;
        }
        const float s = amax / 127.0f;
        scale[n * G + g] = s;
        const float divisor = s > 0 ? s : 1.0f;
        if (avx512) {
          quantize_row_avx512(seg, len, divisor, q + n * K + k0);
        } else {
          quantize_row_generic(seg, len, divisor, q + n * K + k0);
        }
      }
    }
  });
  if (bad_row.load() >= 0) {
    fail("int8 quantisation: row ", bad_row.load(), " of a [", N, ", ", K,
         "] weight holds inf or NaN");
  }
}
}  // namespace

Int8Matrix quantize_int8_rows(const at::Tensor& w0) {
  if (w0.dim() != 2) fail("quantize_int8_rows: expected a matrix, got ", w0.dim(), " dimensions");
  const at::Tensor w = w0.to(at::kFloat).contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  // One pass per row, straight into resident memory: no full-size temporaries (which for a
  // 7B model's stacked MLP matrices are half a gigabyte each).
  Int8Matrix out;
  out.q = empty_hugepage({N, K}, at::kChar);
  out.scale = at::empty({N}, at::kFloat);
  quantize_int8(w, std::max<int64_t>(K, 1), out.q.data_ptr<int8_t>(), out.scale.data_ptr<float>());
  return out;
}

Int8Matrix quantize_int8_groups(const at::Tensor& w0) {
  if (w0.dim() != 2) {
    fail("quantize_int8_groups: expected a matrix, got ", w0.dim(), " dimensions");
  }
  const at::Tensor w = w0.to(at::kFloat).contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  Int8Matrix out;
  out.q = empty_hugepage({N, K}, at::kChar);
  out.scale = at::empty({N, int8_groups(K)}, at::kFloat);
  quantize_int8(w, kInt8GroupSize, out.q.data_ptr<int8_t>(), out.scale.data_ptr<float>());
  return out;
}

at::Tensor dequantize_int8_rows(const at::Tensor& q, const at::Tensor& scale) {
  if (scale.dim() == 2) {  // one scale per group of kInt8GroupSize inputs
    const int64_t K = q.size(1);
    at::Tensor per_input = scale.to(at::kFloat).repeat_interleave(kInt8GroupSize, 1);
    return q.to(at::kFloat) * per_input.narrow(1, 0, K);
  }
  return q.to(at::kFloat) * scale.to(at::kFloat).unsqueeze(1);
}

at::Tensor to_bf16(const at::Tensor& w) {
  // c10::BFloat16's conversion rounds to nearest even; written straight into resident memory.
  at::Tensor out = empty_hugepage(w.sizes(), at::kBFloat16);
  out.copy_(w.to(at::kFloat));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Threads

namespace {
thread_local int tl_kernel_threads = 0;
std::atomic<int> g_forced_isa{static_cast<int>(KernelIsa::automatic)};

bool cpu_has_avx2() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}

bool cpu_has_avx512() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
  }();
  return ok;
}

KernelIsa best_isa() {
  return cpu_has_avx512() ? KernelIsa::avx512
         : cpu_has_avx2() ? KernelIsa::avx2
                          : KernelIsa::generic;
}

// The variant in effect: the forced one, capped at what the CPU has.
KernelIsa active_isa() {
  const auto forced = static_cast<KernelIsa>(g_forced_isa.load(std::memory_order_relaxed));
  const KernelIsa best = best_isa();
  if (forced == KernelIsa::automatic) return best;
  return static_cast<int>(forced) < static_cast<int>(best) ? forced : best;
}

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
}  // namespace

int kernel_threads() { return tl_kernel_threads > 0 ? tl_kernel_threads : at::get_num_threads(); }

KernelThreadsScope::KernelThreadsScope(int threads) : saved_(tl_kernel_threads) {
  tl_kernel_threads = threads;
}
KernelThreadsScope::~KernelThreadsScope() { tl_kernel_threads = saved_; }

const char* kernel_isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::automatic:
      return "automatic";
    case KernelIsa::generic:
      return "generic";
    case KernelIsa::avx2:
      return "avx2";
    case KernelIsa::avx512:
      return "avx512";
  }
  return "?";
}
const char* kernel_isa() { return kernel_isa_name(active_isa()); }
KernelIsa active_kernel_isa() { return active_isa(); }
void force_kernel_isa(KernelIsa isa) { g_forced_isa.store(static_cast<int>(isa)); }
std::vector<KernelIsa> available_kernel_isas() {
  std::vector<KernelIsa> out;
  if (cpu_has_avx512()) out.push_back(KernelIsa::avx512);
  if (cpu_has_avx2()) out.push_back(KernelIsa::avx2);
  out.push_back(KernelIsa::generic);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Kernels. Each computes output channels [n0, n1) for all M rows of x: groups of four
// channels share every load of x, and a group's weights (4 x K) stay in cache while the M
// rows are processed, so the weights are read from memory once per call.

namespace {

using f16::bf16_to_float;

inline float scalar_weight(float v) { return v; }
inline float scalar_weight(int8_t v) { return static_cast<float>(v); }
inline float scalar_weight(uint16_t v) { return bf16_to_float(v); }

struct I8 {
  using T = int8_t;
  static float get(const T* w, int64_t k) { return static_cast<float>(w[k]); }
};
struct B16 {
  using T = uint16_t;
  static float get(const T* w, int64_t k) { return bf16_to_float(w[k]); }
};
struct F32 {
  using T = float;
  static float get(const T* w, int64_t k) { return w[k]; }
};

// Portable dot product with eight partial sums (k = 0..K-1).
template <typename W>
float dot_generic(const float* x, const typename W::T* w, int64_t K) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    for (int j = 0; j < 8; ++j) s[j] += x[k + j] * W::get(w, k + j);
  }
  for (; k < K; ++k) s[k & 7] += x[k] * W::get(w, k);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

template <typename W>
void block_generic(const float* x, int64_t M, int64_t K, const typename W::T* w, const float* scale,
                   int64_t N, const float* bias, float* y, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const typename W::T* wr = w + n * K;
    for (int64_t m = 0; m < M; ++m) {
      float s = dot_generic<W>(x + m * K, wr, K);
      if (scale) s *= scale[n];
      if (bias) s += bias[n];
      y[m * N + n] = s;
    }
  }
}

__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Eight weights as fp32: fp32 as they are, int8 from 8 bytes, bf16 from 16 bytes.
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const int8_t* w) {
  __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}
__attribute__((target("avx2,fma"))) inline __m256 load8(const uint16_t* w) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}
// Sixteen weights as two halves (one 16-byte load for int8).
__attribute__((target("avx2,fma"))) inline void load16(const int8_t* w, __m256& lo, __m256& hi) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
  hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v)));
}
__attribute__((target("avx2,fma"))) inline void load16(const float* w, __m256& lo, __m256& hi) {
  lo = _mm256_loadu_ps(w);
  hi = _mm256_loadu_ps(w + 8);
}
__attribute__((target("avx2,fma"))) inline void load16(const uint16_t* w, __m256& lo, __m256& hi) {
  lo = load8(w);
  hi = load8(w + 8);
}

template <typename T, int R>
__attribute__((target("avx2,fma"))) inline void dot_rows_avx2(const float* x, const T* const* w,
                                                              int64_t K, float* out) {
  __m256 a[R], b[R];
  for (int r = 0; r < R; ++r) a[r] = b[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    for (int r = 0; r < R; ++r) {
      __m256 lo, hi;
      load16(w[r] + k, lo, hi);
      a[r] = _mm256_fmadd_ps(lo, x0, a[r]);
      b[r] = _mm256_fmadd_ps(hi, x1, b[r]);
    }
  }
  if (k + 8 <= K) {
    const __m256 x0 = _mm256_loadu_ps(x + k);
    for (int r = 0; r < R; ++r) a[r] = _mm256_fmadd_ps(load8(w[r] + k), x0, a[r]);
    k += 8;
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum256(_mm256_add_ps(a[r], b[r]));
    for (int64_t t = k; t < K; ++t) s += x[t] * scalar_weight(w[r][t]);
    out[r] = s;
  }
}

template <typename T>
__attribute__((target("avx2,fma"))) void block_avx2(const float* x, int64_t M, int64_t K,
                                                    const T* w, const float* scale, int64_t N,
                                                    const float* bias, float* y, int64_t n0,
                                                    int64_t n1) {
  int64_t n = n0;
  float s[4];
  for (; n + 4 <= n1; n += 4) {
    const T* rows[4] = {w + n * K, w + (n + 1) * K, w + (n + 2) * K, w + (n + 3) * K};
    for (int64_t m = 0; m < M; ++m) {
      dot_rows_avx2<T, 4>(x + m * K, rows, K, s);
      for (int r = 0; r < 4; ++r) {
        float v = s[r];
        if (scale) v *= scale[n + r];
        if (bias) v += bias[n + r];
        y[m * N + n + r] = v;
      }
    }
  }
  for (; n < n1; ++n) {
    const T* rows[1] = {w + n * K};
    for (int64_t m = 0; m < M; ++m) {
      dot_rows_avx2<T, 1>(x + m * K, rows, K, s);
      float v = s[0];
      if (scale) v *= scale[n];
      if (bias) v += bias[n];
      y[m * N + n] = v;
    }
  }
}

// AVX-512 variants.
#define COCOM_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))

// Sixteen bf16 weights widened to fp32 (exact: a bf16 is the upper half of an fp32).
COCOM_AVX512 inline __m512 widen16(const uint16_t* w) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// One channel after the other: a single sequential stream of weights (see block_int8_vnni).
COCOM_AVX512 void block_bf16_avx512(const float* x, int64_t M, int64_t K, const uint16_t* w,
                                    int64_t N, const float* bias, float* y, int64_t n0,
                                    int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* row = w + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x + m * K;
      __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
      int64_t k = 0;
      for (; k + 32 <= K; k += 32) {
        a = _mm512_fmadd_ps(widen16(row + k), _mm512_loadu_ps(xr + k), a);
        b = _mm512_fmadd_ps(widen16(row + k + 16), _mm512_loadu_ps(xr + k + 16), b);
      }
      if (k + 16 <= K) {
        a = _mm512_fmadd_ps(widen16(row + k), _mm512_loadu_ps(xr + k), a);
        k += 16;
      }
      float s = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
      for (; k < K; ++k) s += xr[k] * bf16_to_float(row[k]);
      y[m * N + n] = bias ? s + bias[n] : s;
    }
  }
}

// int8 weights times activations quantised to 16 bits. Each row of x becomes integers
// q[k] = round(x[k] / s) in [-32767, 32767] with s = max|x| / 32767, stored as two byte planes
// hi = floor(q / 256) + 128 and lo = q mod 256 (both 0..255), so that
//   sum_k q[k] w[k] = 256 * (sum_k hi[k] w[k] - 128 * sum_k w[k]) + sum_k lo[k] w[k].
// VPDPBUSD multiplies unsigned by signed bytes and adds groups of four into 32-bit lanes: each
// lane grows by at most 4 * 255 * 128 per 64 weights, so K up to kMaxVnniK cannot overflow.
// The planes are padded to a multiple of 64 bytes; the weights' last partial block is copied
// into a zeroed buffer, so nothing past a row is read.
constexpr int64_t kMaxVnniK = int64_t{1} << 19;

struct XPlanes {
  int64_t Kp = 0;
  std::vector<uint8_t> bytes;  // M rows of [hi (Kp) | lo (Kp)]
  std::vector<double> scale;   // per row: x ~ scale * q
  const uint8_t* hi(int64_t m) const { return bytes.data() + m * 2 * Kp; }
  const uint8_t* lo(int64_t m) const { return hi(m) + Kp; }
};

inline void split16(int32_t q, uint8_t& hi, uint8_t& lo) {
  const int32_t l = ((q % 256) + 256) % 256;
  lo = static_cast<uint8_t>(l);
  hi = static_cast<uint8_t>((q - l) / 256 + 128);
}

// One row; false when it holds inf or NaN.
COCOM_AVX512 bool quantize_row16(const float* x, int64_t K, int64_t Kp, uint8_t* hi, uint8_t* lo,
                                 double* scale) {
  __m512 mx = _mm512_setzero_ps(), bad = _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m512 v = _mm512_loadu_ps(x + k);
    mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
    bad = _mm512_add_ps(bad, _mm512_mul_ps(v, zero));  // NaN once any element is inf or NaN
  }
  float amax = _mm512_reduce_max_ps(mx);
  float nan_probe = _mm512_reduce_add_ps(bad);
  for (int64_t t = k; t < K; ++t) {
    amax = std::max(amax, std::fabs(x[t]));
    nan_probe += x[t] * 0.0f;
  }
  if (std::isnan(nan_probe) || !std::isfinite(amax)) return false;
  std::memset(hi + K, 0, static_cast<size_t>(Kp - K));
  std::memset(lo + K, 0, static_cast<size_t>(Kp - K));
  if (amax == 0.0f) {
    *scale = 0.0;
    std::memset(hi, 128, static_cast<size_t>(K));
    std::memset(lo, 0, static_cast<size_t>(K));
    return true;
  }
  *scale = static_cast<double>(amax) / 32767.0;
  const float inv = 32767.0f / amax;
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i qmax = _mm512_set1_epi32(32767), qmin = _mm512_set1_epi32(-32767);
  const __m512i bias128 = _mm512_set1_epi32(128), low8 = _mm512_set1_epi32(255);
  k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv));
    q = _mm512_max_epi32(_mm512_min_epi32(q, qmax), qmin);
    const __m512i h = _mm512_add_epi32(_mm512_srai_epi32(q, 8), bias128);
    const __m512i l = _mm512_and_si512(q, low8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hi + k), _mm512_cvtepi32_epi8(h));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lo + k), _mm512_cvtepi32_epi8(l));
  }
  for (; k < K; ++k) {
    const float r = std::nearbyint(x[k] * inv);
    const int32_t q = static_cast<int32_t>(std::max(-32767.0f, std::min(32767.0f, r)));
    split16(q, hi[k], lo[k]);
  }
  return true;
}

COCOM_AVX512 inline int64_t reduce_add_epi32_wide(__m512i v) {
  const __m512i a = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
  const __m512i b = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
  return _mm512_reduce_add_epi64(_mm512_add_epi64(a, b));
}

template <int R>
COCOM_AVX512 void rows_int8_vnni(const XPlanes& xp, int64_t m0, int64_t m1, int64_t K,
                                 const int8_t* w, const float* scale, const int32_t* sums,
                                 int64_t N, const float* bias, float* y, int64_t n) {
  const int64_t Kf = K / 64 * 64;
  const bool has_tail = Kf < K;
  const int8_t* rows[R];
  alignas(64) int8_t tail[R][64];
  for (int r = 0; r < R; ++r) {
    rows[r] = w + (n + r) * K;
    if (has_tail) {
      std::memset(tail[r], 0, 64);
      std::memcpy(tail[r], rows[r] + Kf, static_cast<size_t>(K - Kf));
    }
  }
  for (int64_t m = m0; m < m1; ++m) {
    const uint8_t* xh = xp.hi(m);
    const uint8_t* xl = xp.lo(m);
    __m512i ah[R], al[R];
    for (int r = 0; r < R; ++r) ah[r] = al[r] = _mm512_setzero_si512();
    for (int64_t k = 0; k < Kf; k += 64) {
      const __m512i h = _mm512_loadu_si512(xh + k), l = _mm512_loadu_si512(xl + k);
      for (int r = 0; r < R; ++r) {
        const __m512i wv = _mm512_loadu_si512(rows[r] + k);
        ah[r] = _mm512_dpbusd_epi32(ah[r], h, wv);
        al[r] = _mm512_dpbusd_epi32(al[r], l, wv);
      }
    }
    if (has_tail) {
      const __m512i h = _mm512_loadu_si512(xh + Kf), l = _mm512_loadu_si512(xl + Kf);
      for (int r = 0; r < R; ++r) {
        const __m512i wv = _mm512_load_si512(tail[r]);
        ah[r] = _mm512_dpbusd_epi32(ah[r], h, wv);
        al[r] = _mm512_dpbusd_epi32(al[r], l, wv);
      }
    }
    for (int r = 0; r < R; ++r) {
      const int64_t hsum = reduce_add_epi32_wide(ah[r]), lsum = reduce_add_epi32_wide(al[r]);
      const int64_t dot = 256 * (hsum - 128 * static_cast<int64_t>(sums[n + r])) + lsum;
      double v = static_cast<double>(dot) * xp.scale[static_cast<size_t>(m)] *
                 static_cast<double>(scale[n + r]);
      if (bias) v += static_cast<double>(bias[n + r]);
      y[m * N + n + r] = static_cast<float>(v);
    }
  }
}

// Few rows of x (decode): one channel after the other, so that the weights are read as a
// single sequential stream (measured here: 4 channels read side by side, K bytes apart,
// stream at half the rate). Many rows (prefill): rows of x in blocks of 8, whose planes stay
// in cache, against groups of 4 channels, whose weights stay in L1 while the block passes and
// share each load of x.
COCOM_AVX512 void block_int8_vnni(const XPlanes& xp, int64_t M, int64_t K, const int8_t* w,
                                  const float* scale, const int32_t* sums, int64_t N,
                                  const float* bias, float* y, int64_t n0, int64_t n1) {
  constexpr int64_t kRowBlock = 8;
  if (M <= kRowBlock) {
    for (int64_t n = n0; n < n1; ++n) rows_int8_vnni<1>(xp, 0, M, K, w, scale, sums, N, bias, y, n);
    return;
  }
  for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
    const int64_t m1 = std::min(M, m0 + kRowBlock);
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) rows_int8_vnni<4>(xp, m0, m1, K, w, scale, sums, N, bias, y, n);
    for (; n < n1; ++n) rows_int8_vnni<1>(xp, m0, m1, K, w, scale, sums, N, bias, y, n);
  }
}

// int8 with one scale per group of kInt8GroupSize (a multiple of 64) inputs. Per group the
// integer sums stay in the 16 lanes: 256 * hi + lo (|.| < 2^26 per lane for 64 inputs) is
// converted and multiplied by the group's scale into 16 fp32 accumulators. The planes' +128
// offset of hi contributes 32768 * sum_g scale_g * sum(codes of group g) to the row, a
// constant of the weights that is subtracted at the end (int8g_offsets, computed at load).
static_assert(kInt8GroupSize % 64 == 0, "groups must hold whole 64-byte blocks");

COCOM_AVX512 void rows_int8g_vnni(const XPlanes& xp, int64_t M, int64_t K, const int8_t* w,
                                  const float* gscale, const double* offsets, int64_t G, int64_t N,
                                  const float* bias, float* y, int64_t n) {
  const int64_t Kf = K / 64 * 64;
  const int8_t* row = w + n * K;
  const float* sc = gscale + n * G;
  alignas(64) int8_t tail[64];
  if (Kf < K) {
    std::memset(tail, 0, 64);
    std::memcpy(tail, row + Kf, static_cast<size_t>(K - Kf));
  }
  for (int64_t m = 0; m < M; ++m) {
    const uint8_t* xh = xp.hi(m);
    const uint8_t* xl = xp.lo(m);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      __m512i ah = _mm512_setzero_si512(), al = ah;
      const int64_t k1 = std::min(K, (g + 1) * kInt8GroupSize);
      for (int64_t k = g * kInt8GroupSize; k < k1; k += 64) {
        const __m512i wv = k < Kf ? _mm512_loadu_si512(row + k) : _mm512_load_si512(tail);
        ah = _mm512_dpbusd_epi32(ah, _mm512_loadu_si512(xh + k), wv);
        al = _mm512_dpbusd_epi32(al, _mm512_loadu_si512(xl + k), wv);
      }
      const __m512i comb = _mm512_add_epi32(_mm512_slli_epi32(ah, 8), al);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(comb), _mm512_set1_ps(sc[g]), acc);
    }
    const double dot = static_cast<double>(_mm512_reduce_add_ps(acc)) - offsets[n];
    double v = dot * xp.scale[static_cast<size_t>(m)];
    if (bias) v += static_cast<double>(bias[n]);
    y[m * N + n] = static_cast<float>(v);
  }
}

// Portable grouped product: fp32 activations, one partial sum per group.
void block_int8g_generic(const float* x, int64_t M, int64_t K, const int8_t* w, const float* gscale,
                         int64_t G, int64_t N, const float* bias, float* y, int64_t n0,
                         int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x + m * K;
      const int8_t* wr = w + n * K;
      float s = 0;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t k0 = g * kInt8GroupSize, len = std::min(kInt8GroupSize, K - k0);
        s += dot_generic<I8>(xr + k0, wr + k0, len) * gscale[n * G + g];
      }
      y[m * N + n] = bias ? s + bias[n] : s;
    }
  }
}

// Quantises the rows of x into planes (chunks of up to 256 rows) and runs `body(planes, c0,
// rows)` for each chunk; false when x holds inf or NaN.
template <typename Body>
bool with_x_planes(const float* x, int64_t M, int64_t K, int threads, const Body& body) {
  constexpr int64_t kChunkRows = 256;
  // The calling thread's buffer, named by a reference: inside the lambdas below, which run on
  // other threads, the thread_local name itself would mean each worker's own (empty) copy.
  thread_local XPlanes planes;
  XPlanes& xp = planes;
  xp.Kp = (K + 63) / 64 * 64;
  for (int64_t c0 = 0; c0 < M; c0 += kChunkRows) {
    const int64_t cm = std::min(kChunkRows, M - c0);
    xp.bytes.resize(static_cast<size_t>(cm * 2 * xp.Kp));
    xp.scale.resize(static_cast<size_t>(cm));
    std::atomic<bool> finite{true};
    parallel_over(cm, threads, 16, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        uint8_t* h = xp.bytes.data() + m * 2 * xp.Kp;
        if (!quantize_row16(x + (c0 + m) * K, K, xp.Kp, h, h + xp.Kp,
                            &xp.scale[static_cast<size_t>(m)])) {
          finite.store(false);
        }
      }
    });
    if (!finite.load()) return false;
    body(xp, c0, cm);
  }
  return true;
}

// The avx512 int8 product, in chunks of up to 256 rows of x (bounding the planes' memory);
// false when x holds inf or NaN, in which case the caller recomputes all of y.
bool gemv_int8_vnni(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scale,
                    int64_t N, const float* bias, float* y, int threads, const int32_t* sums) {
  std::vector<int32_t> own;
  if (!sums) {
    own = int8_row_sums(q, N, K);
    sums = own.data();
  }
  const int64_t groups = (N + 3) / 4;
  return with_x_planes(x, M, K, threads, [&](const XPlanes& xp, int64_t c0, int64_t cm) {
    parallel_over(groups, threads, 16, [&](int64_t g0, int64_t g1) {
      block_int8_vnni(xp, cm, K, q, scale, sums, N, bias, y + c0 * N, g0 * 4, std::min(N, g1 * 4));
    });
  });
}

template <typename W>
void gemv_any(const float* x, int64_t M, int64_t K, const typename W::T* w, const float* scale,
              int64_t N, const float* bias, float* y, int threads) {
  if (M <= 0 || N <= 0) return;
  if (threads <= 0) threads = kernel_threads();
  // Work in groups of 4 channels so that the vector kernel's 4-row blocks stay whole.
  const int64_t groups = (N + 3) / 4;
  const KernelIsa isa = active_isa();
  // Chunks of 16 groups (64 channels): 128 KiB of int8 weights for 2048 inputs.
  parallel_over(groups, threads, 16, [&](int64_t g0, int64_t g1) {
    const int64_t n0 = g0 * 4, n1 = std::min(N, g1 * 4);
    if constexpr (std::is_same_v<W, B16>) {
      if (isa == KernelIsa::avx512) {
        block_bf16_avx512(x, M, K, w, N, bias, y, n0, n1);
        return;
      }
    }
    if (isa != KernelIsa::generic) {
      block_avx2<typename W::T>(x, M, K, w, scale, N, bias, y, n0, n1);
    } else {
      block_generic<W>(x, M, K, w, scale, N, bias, y, n0, n1);
    }
  });
}

}  // namespace

void gemv_int8(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scale, int64_t N,
               const float* bias, float* y, int threads, const int32_t* row_sums) {
  if (M <= 0 || N <= 0) return;
  if (threads <= 0) threads = kernel_threads();
  if (active_isa() == KernelIsa::avx512 && K > 0 && K <= kMaxVnniK &&
      gemv_int8_vnni(x, M, K, q, scale, N, bias, y, threads, row_sums)) {
    return;
  }
  gemv_any<I8>(x, M, K, q, scale, N, bias, y, threads);
}

std::vector<double> int8g_offsets(const int8_t* q, const float* gscale, int64_t N, int64_t K) {
  const int64_t G = int8_groups(K);
  std::vector<double> out(static_cast<size_t>(std::max<int64_t>(N, 0)), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double o = 0;
    for (int64_t g = 0; g < G; ++g) {
      int64_t sum = 0;
      const int64_t k1 = std::min(K, (g + 1) * kInt8GroupSize);
      for (int64_t k = g * kInt8GroupSize; k < k1; ++k) sum += q[n * K + k];
      o += static_cast<double>(gscale[n * G + g]) * static_cast<double>(sum);
    }
    out[static_cast<size_t>(n)] = 32768.0 * o;
  }
  return out;
}

void gemv_int8g(const float* x, int64_t M, int64_t K, const int8_t* q, const float* gscale,
                int64_t N, const float* bias, float* y, int threads, const double* offsets) {
  if (M <= 0 || N <= 0) return;
  if (threads <= 0) threads = kernel_threads();
  const int64_t G = int8_groups(K);
  std::vector<double> own;
  if (!offsets && active_isa() == KernelIsa::avx512) {
    own = int8g_offsets(q, gscale, N, K);
    offsets = own.data();
  }
  if (active_isa() == KernelIsa::avx512 && K > 0 &&
      with_x_planes(x, M, K, threads, [&](const XPlanes& xp, int64_t c0, int64_t cm) {
        parallel_over(N, threads, 64, [&](int64_t n0, int64_t n1) {
          for (int64_t n = n0; n < n1; ++n) {
            rows_int8g_vnni(xp, cm, K, q, gscale, offsets, G, N, bias, y + c0 * N, n);
          }
        });
      })) {
    return;
  }
  parallel_over(N, threads, 64, [&](int64_t n0, int64_t n1) {
    block_int8g_generic(x, M, K, q, gscale, G, N, bias, y, n0, n1);
  });
}

std::vector<int32_t> int8_row_sums(const int8_t* q, int64_t N, int64_t K) {
  std::vector<int32_t> out(static_cast<size_t>(std::max<int64_t>(N, 0)), 0);
  for (int64_t n = 0; n < N; ++n) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += q[n * K + k];
    out[static_cast<size_t>(n)] = s;
  }
  return out;
}

void gemv_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
               const float* bias, float* y, int threads) {
  gemv_any<B16>(x, M, K, w, nullptr, N, bias, y, threads);
}

void gemv_f32(const float* x, int64_t M, int64_t K, const float* w, int64_t N, const float* bias,
              float* y, int threads) {
  gemv_any<F32>(x, M, K, w, nullptr, N, bias, y, threads);
}

// ---------------------------------------------------------------------------------------------
// Linear

// Resident matrices of 4 MiB and more live in fresh anonymous memory advised for transparent
// huge pages. A stream over ordinary 4 KiB pages read ~19 GB/s on this VM, the same stream over
// 2 MiB pages ~29 GB/s (docs/benchmarks.md): the hardware prefetcher stops at page boundaries.
// The memory comes from mmap, not malloc, because recycled heap memory (the fp32 transients of
// loading) is already mapped in small pages. The advice is only that: where the kernel has no
// huge page to give, ordinary pages are used.
at::Tensor empty_hugepage(at::IntArrayRef shape, at::ScalarType dtype) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  constexpr size_t kHuge = size_t{2} << 20;
#ifdef MADV_HUGEPAGE
  if (bytes >= 2 * kHuge) {
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    const size_t length = rounded + kHuge;  // room to align the start
    void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base != MAP_FAILED) {
      const uintptr_t start = (reinterpret_cast<uintptr_t>(base) + kHuge - 1) / kHuge * kHuge;
      void* p = reinterpret_cast<void*>(start);
      (void)madvise(p, rounded, MADV_HUGEPAGE);
      return at::from_blob(
          p, shape, [base, length](void*) { munmap(base, length); },
          at::TensorOptions().dtype(dtype));
    }
  }
#endif
  return at::empty(shape, dtype);
}

Linear Linear::make(const at::Tensor& w, const at::Tensor& bias, WeightFormat format) {
  if (w.dim() != 2) fail("Linear: expected a [out, in] weight, got ", w.dim(), " dimensions");
  Linear l;
  l.format_ = format;
  l.out_ = w.size(0);
  l.in_ = w.size(1);
  if (bias.defined()) l.bias_ = bias.to(at::kFloat).contiguous();
  switch (format) {
    case WeightFormat::fp32:
      l.w_ = w.to(at::kFloat).contiguous();
      break;
    case WeightFormat::bf16:
      if (!w.device().is_cpu()) fail("bf16 resident weights are implemented for the CPU only");
      l.w_ = to_bf16(w);
      break;
    case WeightFormat::int8: {
      if (!w.device().is_cpu()) fail("int8 resident weights are implemented for the CPU only");
      Int8Matrix m = quantize_int8_rows(w);
      l.w_ = std::move(m.q);
      l.scale_ = std::move(m.scale);
      std::vector<int32_t> sums = int8_row_sums(l.w_.data_ptr<int8_t>(), l.out_, l.in_);
      l.sums_ = at::empty({l.out_}, at::kInt);
      std::memcpy(l.sums_.data_ptr<int32_t>(), sums.data(), sums.size() * sizeof(int32_t));
      break;
    }
    case WeightFormat::int8g: {
      if (!w.device().is_cpu()) fail("int8g resident weights are implemented for the CPU only");
      Int8Matrix m = quantize_int8_groups(w);
      l.w_ = std::move(m.q);
      l.scale_ = std::move(m.scale);
      std::vector<double> off =
          int8g_offsets(l.w_.data_ptr<int8_t>(), l.scale_.data_ptr<float>(), l.out_, l.in_);
      l.sums_ = at::empty({l.out_}, at::kDouble);
      std::memcpy(l.sums_.data_ptr<double>(), off.data(), off.size() * sizeof(double));
      break;
    }
  }
  return l;
}

Linear Linear::from_bf16(const at::Tensor& w_bf16, const at::Tensor& bias) {
  if (w_bf16.dim() != 2 || w_bf16.scalar_type() != at::kBFloat16 || !w_bf16.is_contiguous()) {
    fail("Linear::from_bf16: expected a contiguous bf16 matrix");
  }
  Linear l;
  l.format_ = WeightFormat::bf16;
  l.out_ = w_bf16.size(0);
  l.in_ = w_bf16.size(1);
  l.w_ = w_bf16;
  if (bias.defined()) l.bias_ = bias.to(at::kFloat).contiguous();
  return l;
}

int64_t Linear::resident_bytes() const {
  int64_t b = w_.defined() ? static_cast<int64_t>(w_.nbytes()) : 0;
  if (scale_.defined()) b += static_cast<int64_t>(scale_.nbytes());
  if (sums_.defined()) b += static_cast<int64_t>(sums_.nbytes());
  if (bias_.defined()) b += static_cast<int64_t>(bias_.nbytes());
  return b;
}

void Linear::widen_rows(int64_t n0, int64_t nb, float* dst) const {
  const int64_t K = in_;
  if (format_ == WeightFormat::int8 || format_ == WeightFormat::int8g) {
    // Per row one scale (int8) or one per group of kInt8GroupSize inputs (int8g).
    const int64_t G = format_ == WeightFormat::int8g ? int8_groups(K) : 1;
    const int64_t gsize = format_ == WeightFormat::int8g ? kInt8GroupSize : std::max<int64_t>(K, 1);
    const int8_t* q = w_.data_ptr<int8_t>() + n0 * K;
    const float* sc = scale_.data_ptr<float>() + n0 * G;
    at::parallel_for(0, nb, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t j = 0; j < G; ++j) {
          const float s = sc[r * G + j];
          const int64_t k0 = j * gsize, k1 = std::min(K, k0 + gsize);
          const int8_t* src = q + r * K;
          float* d = dst + r * K;
          for (int64_t k = k0; k < k1; ++k) d[k] = static_cast<float>(src[k]) * s;
        }
      }
    });
  } else if (format_ == WeightFormat::bf16) {
    widen_bf16(reinterpret_cast<const uint16_t*>(w_.data_ptr()) + n0 * K, dst, nb * K);
  } else {
    std::memcpy(dst, w_.data_ptr<float>() + n0 * K, static_cast<size_t>(nb * K) * 4);
  }
}

at::Tensor Linear::dequantized() const {
  if (format_ == WeightFormat::fp32) return w_;
  at::Tensor out = at::empty({out_, in_}, at::kFloat);
  widen_rows(0, out_, out.data_ptr<float>());
  return out;
}

at::Tensor Linear::forward(const at::Tensor& x) const {
  if (format_ == WeightFormat::fp32) return dense(x, w_, bias_);
  if (x.size(-1) != in_) {
    fail("Linear: input has ", x.size(-1), " features, the layer expects ", in_);
  }
  at::Tensor x2 = x.reshape({-1, in_}).to(at::kFloat).contiguous();
  const int64_t M = x2.size(0);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out_;
  at::Tensor y = at::empty({M, out_}, at::kFloat);
  const float* bias = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
  // Many rows of int8 run on the integer kernel (faster than the fp32 GEMM); int8g's per-group
  // conversions make its kernel slower than widening blocks for the GEMM, so it does that.
  const bool int8_any_rows = format_ == WeightFormat::int8 && active_isa() == KernelIsa::avx512;
  if (M <= kGemvMaxRows || int8_any_rows) {
    if (format_ == WeightFormat::int8g) {
      gemv_int8g(x2.data_ptr<float>(), M, in_, w_.data_ptr<int8_t>(), scale_.data_ptr<float>(),
                 out_, bias, y.data_ptr<float>(), 0, sums_.data_ptr<double>());
    } else if (format_ == WeightFormat::int8) {
      gemv_int8(x2.data_ptr<float>(), M, in_, w_.data_ptr<int8_t>(), scale_.data_ptr<float>(), out_,
                bias, y.data_ptr<float>(), 0, sums_.data_ptr<int32_t>());
    } else {
      gemv_bf16(x2.data_ptr<float>(), M, in_, reinterpret_cast<const uint16_t*>(w_.data_ptr()),
                out_, bias, y.data_ptr<float>());
    }
    return y.view(shape);
  }
  // Many rows: widen ~8 MiB of output channels at a time into a reusable scratch and let the
  // fp32 GEMM write that column block of y.
  int64_t nb = std::max<int64_t>(16, ((int64_t{8} << 20) / (in_ * 4)) / 16 * 16);
  nb = std::min(nb, out_);
  thread_local at::Tensor scratch;
  if (!scratch.defined() || scratch.numel() < nb * in_) scratch = at::empty({nb * in_}, at::kFloat);
  for (int64_t n0 = 0; n0 < out_; n0 += nb) {
    const int64_t cur = std::min(nb, out_ - n0);
    widen_rows(n0, cur, scratch.data_ptr<float>());
    at::Tensor wblk = scratch.narrow(0, 0, cur * in_).view({cur, in_});
    at::Tensor yblk = y.narrow(1, n0, cur);
    at::mm_out(yblk, x2, wblk.t());
  }
  if (bias_.defined()) y.add_(bias_);
  return y.view(shape);
}

}  // namespace cocom::model
