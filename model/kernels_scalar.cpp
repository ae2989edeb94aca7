// The portable kernels (the "generic" variant, and the tails of the vector ones); see kernels.h.
#include <algorithm>
#include <cstring>

#include "model/kernels.h"
#include "model/quant.h"

namespace cocom::model::kernels {

void quantize_row_generic(const float* w, int64_t K, float divisor, int8_t* q) {
  // |w / divisor| <= 127 (plus rounding), so adding and subtracting 1.5 * 2^23 rounds it to
  // the nearest integer, ties to even, exactly as nearbyint does.
  constexpr float kMagic = 12582912.0f;
  for (int64_t k = 0; k < K; ++k) {
    const float t = (w[k] / divisor + kMagic) - kMagic;
    q[k] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, t)));
  }
}

void widen_bf16_generic(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    std::memcpy(dst + i, &bits, 4);
  }
}

namespace {
// Portable dot product with eight partial sums (k = 0..K-1).
template <typename T>
float dot_generic(const float* x, const T* w, int64_t K) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    for (int j = 0; j < 8; ++j) s[j] += x[k + j] * scalar_weight(w[k + j]);
  }
  for (; k < K; ++k) s[k & 7] += x[k] * scalar_weight(w[k]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
}  // namespace

template <typename T>
void block_generic(const float* x, int64_t M, int64_t K, const T* w, const float* scale, int64_t N,
                   const float* bias, float* y, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const T* wr = w + n * K;
    for (int64_t m = 0; m < M; ++m) {
      float s = dot_generic(x + m * K, wr, K);
      if (scale) s *= scale[n];
      if (bias) s += bias[n];
      y[m * N + n] = s;
    }
  }
}

COCOM_INSTANTIATE_BLOCK(block_generic, int8_t);
COCOM_INSTANTIATE_BLOCK(block_generic, uint16_t);
COCOM_INSTANTIATE_BLOCK(block_generic, float);

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
        s += dot_generic(xr + k0, wr + k0, len) * gscale[n * G + g];
      }
      y[m * N + n] = bias ? s + bias[n] : s;
    }
  }
}

}  // namespace cocom::model::kernels
