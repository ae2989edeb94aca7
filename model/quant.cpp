#include "model/quant.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "common/error.h"
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
  }
  return "?";
}

std::optional<WeightFormat> parse_weight_format(const std::string& s) {
  if (s == "fp32" || s == "float32" || s == "f32") return WeightFormat::fp32;
  if (s == "bf16" || s == "bfloat16") return WeightFormat::bf16;
  if (s == "int8" || s == "q8") return WeightFormat::int8;
  return std::nullopt;
}

double weight_format_bytes(WeightFormat f) {
  return f == WeightFormat::fp32 ? 4.0 : f == WeightFormat::bf16 ? 2.0 : 1.0;
}

Int8Matrix quantize_int8_rows(const at::Tensor& w0) {
  if (w0.dim() != 2) fail("quantize_int8_rows: expected a matrix, got ", w0.dim(), " dimensions");
  at::Tensor w = w0.to(at::kFloat).contiguous();
  Int8Matrix out;
  out.scale = w.abs().amax(1).div_(127.0f);
  at::Tensor divisor = at::where(out.scale > 0, out.scale, at::ones_like(out.scale));
  at::Tensor t = w.div(divisor.unsqueeze(1));
  t.round_().clamp_(-127, 127);
  out.q = t.to(at::kChar).contiguous();
  return out;
}

at::Tensor dequantize_int8_rows(const at::Tensor& q, const at::Tensor& scale) {
  return q.to(at::kFloat) * scale.to(at::kFloat).unsqueeze(1);
}

at::Tensor to_bf16(const at::Tensor& w) {
  // c10::BFloat16's conversion rounds to nearest even.
  return w.to(at::kFloat).to(at::kBFloat16).contiguous();
}

// ---------------------------------------------------------------------------------------------
// Threads

namespace {
thread_local int tl_kernel_threads = 0;
std::atomic<bool> g_force_generic{false};

bool cpu_has_avx2() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}

bool use_avx2() { return !g_force_generic.load(std::memory_order_relaxed) && cpu_has_avx2(); }

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

const char* kernel_isa() { return use_avx2() ? "avx2" : "generic"; }
void set_generic_kernels(bool generic) { g_force_generic.store(generic); }

// ---------------------------------------------------------------------------------------------
// Kernels. Each computes output channels [n0, n1) for all M rows of x: groups of four
// channels share every load of x, and a group's weights (4 x K) stay in cache while the M
// rows are processed, so the weights are read from memory once per call.

namespace {

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

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

// Eight weights widened to fp32: int8 from 8 bytes, bf16 from 16 bytes.
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

template <typename W>
void gemv_any(const float* x, int64_t M, int64_t K, const typename W::T* w, const float* scale,
              int64_t N, const float* bias, float* y, int threads) {
  if (M <= 0 || N <= 0) return;
  if (threads <= 0) threads = kernel_threads();
  // Work in groups of 4 channels so that the vector kernel's 4-row blocks stay whole.
  const int64_t groups = (N + 3) / 4;
  const bool avx2 = use_avx2();
  // Chunks of 16 groups (64 channels): 128 KiB of int8 weights for 2048 inputs.
  parallel_over(groups, threads, 16, [&](int64_t g0, int64_t g1) {
    const int64_t n0 = g0 * 4, n1 = std::min(N, g1 * 4);
    if (avx2) {
      block_avx2<typename W::T>(x, M, K, w, scale, N, bias, y, n0, n1);
    } else {
      block_generic<W>(x, M, K, w, scale, N, bias, y, n0, n1);
    }
  });
}

}  // namespace

void gemv_int8(const float* x, int64_t M, int64_t K, const int8_t* q, const float* scale, int64_t N,
               const float* bias, float* y, int threads) {
  gemv_any<I8>(x, M, K, q, scale, N, bias, y, threads);
}

void gemv_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
               const float* bias, float* y, int threads) {
  gemv_any<B16>(x, M, K, w, nullptr, N, bias, y, threads);
}

// ---------------------------------------------------------------------------------------------
// Linear

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
  if (bias_.defined()) b += static_cast<int64_t>(bias_.nbytes());
  return b;
}

void Linear::widen_rows(int64_t n0, int64_t nb, float* dst) const {
  const int64_t K = in_;
  if (format_ == WeightFormat::int8) {
    const int8_t* q = w_.data_ptr<int8_t>() + n0 * K;
    const float* sc = scale_.data_ptr<float>() + n0;
    at::parallel_for(0, nb, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float s = sc[r];
        const int8_t* src = q + r * K;
        float* d = dst + r * K;
        for (int64_t k = 0; k < K; ++k) d[k] = static_cast<float>(src[k]) * s;
      }
    });
  } else if (format_ == WeightFormat::bf16) {
    const uint16_t* src = reinterpret_cast<const uint16_t*>(w_.data_ptr()) + n0 * K;
    at::parallel_for(0, nb * K, 1 << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
        std::memcpy(dst + i, &bits, 4);
      }
    });
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
  if (M <= kGemvMaxRows) {
    if (format_ == WeightFormat::int8) {
      gemv_int8(x2.data_ptr<float>(), M, in_, w_.data_ptr<int8_t>(), scale_.data_ptr<float>(), out_,
                bias, y.data_ptr<float>());
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
