// The AVX2 + FMA kernels: int8, bf16 and fp32 weights widened to fp32 eight at a time,
// activations in fp32; see kernels.h.
#include <immintrin.h>

#include "model/kernels.h"

namespace cocom::model::kernels {

namespace {

COCOM_AVX2 inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Eight weights as fp32: fp32 as they are, int8 from 8 bytes, bf16 from 16 bytes.
COCOM_AVX2 inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
COCOM_AVX2 inline __m256 load8(const int8_t* w) {
  __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}
COCOM_AVX2 inline __m256 load8(const uint16_t* w) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}
// Sixteen weights as two halves (one 16-byte load for int8).
COCOM_AVX2 inline void load16(const int8_t* w, __m256& lo, __m256& hi) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
  hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v)));
}
COCOM_AVX2 inline void load16(const float* w, __m256& lo, __m256& hi) {
  lo = _mm256_loadu_ps(w);
  hi = _mm256_loadu_ps(w + 8);
}
COCOM_AVX2 inline void load16(const uint16_t* w, __m256& lo, __m256& hi) {
  lo = load8(w);
  hi = load8(w + 8);
}

template <typename T, int R>
COCOM_AVX2 inline void dot_rows_avx2(const float* x, const T* const* w, int64_t K, float* out) {
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

}  // namespace

template <typename T>
COCOM_AVX2 void block_avx2(const float* x, int64_t M, int64_t K, const T* w, const float* scale,
                           int64_t N, const float* bias, float* y, int64_t n0, int64_t n1) {
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

COCOM_INSTANTIATE_BLOCK(block_avx2, int8_t);
COCOM_INSTANTIATE_BLOCK(block_avx2, uint16_t);
COCOM_INSTANTIATE_BLOCK(block_avx2, float);

}  // namespace cocom::model::kernels
