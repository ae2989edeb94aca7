// The AVX-512 kernels (F/BW/VNNI): int8 products on the integer dot-product instruction with
// 16-bit activation planes, bf16 weights widened sixteen at a time, and the row quantiser and
// bf16 widening of whole matrices; see kernels.h.

// GCC 12's AVX-512 headers build "undefined" vectors by self-assignment and warn about it
// wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "model/kernels.h"
#include "model/quant.h"

namespace cocom::model::kernels {

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
      for (; k < K; ++k) s += xr[k] * f16::bf16_to_float(row[k]);
      y[m * N + n] = bias ? s + bias[n] : s;
    }
  }
}

namespace {

// int8 weights times activations quantised to 16 bits. Each row of x becomes integers
// q[k] = round(x[k] / s) in [-32767, 32767] with s = max|x| / 32767, stored as two byte planes
// hi = floor(q / 256) + 128 and lo = q mod 256 (both 0..255), so that
//   sum_k q[k] w[k] = 256 * (sum_k hi[k] w[k] - 128 * sum_k w[k]) + sum_k lo[k] w[k].
// VPDPBUSD multiplies unsigned by signed bytes and adds groups of four into 32-bit lanes: each
// lane grows by at most 4 * 255 * 128 per 64 weights, so K up to kMaxVnniK cannot overflow.
// The planes are padded to a multiple of 64 bytes; the weights' last partial block is copied
// into a zeroed buffer, so nothing past a row is read.

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

}  // namespace

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

bool gemv_int8g_vnni(const float* x, int64_t M, int64_t K, const int8_t* q, const float* gscale,
                     int64_t N, const float* bias, float* y, int threads, const double* offsets) {
  const int64_t G = int8_groups(K);
  std::vector<double> own;
  if (!offsets) {
    own = int8g_offsets(q, gscale, N, K);
    offsets = own.data();
  }
  return with_x_planes(x, M, K, threads, [&](const XPlanes& xp, int64_t c0, int64_t cm) {
    parallel_over(N, threads, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        rows_int8g_vnni(xp, cm, K, q, gscale, offsets, G, N, bias, y + c0 * N, n);
      }
    });
  });
}

}  // namespace cocom::model::kernels
