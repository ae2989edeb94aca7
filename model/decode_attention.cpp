#include "model/decode_attention.h"

// GCC 12's AVX-512 headers warn about their own "undefined" vectors (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <limits>

#include "common/error.h"
#include "model/quant.h"

namespace cocom::model {

namespace {

#define COCOM_AVX512F __attribute__((target("avx2,fma,avx512f")))

float dot_generic(const float* a, const float* b, int64_t d) {
  float s = 0;
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}
void axpy_generic(float p, const float* x, float* y, int64_t d) {
  for (int64_t i = 0; i < d; ++i) y[i] += p * x[i];
}

COCOM_AVX512F float dot_avx512(const float* a, const float* b, int64_t d) {
  __m512 s = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= d; i += 16)
    s = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s);
  float r = _mm512_reduce_add_ps(s);
  for (; i < d; ++i) r += a[i] * b[i];
  return r;
}
COCOM_AVX512F void axpy_avx512(float p, const float* x, float* y, int64_t d) {
  const __m512 vp = _mm512_set1_ps(p);
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vp, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  for (; i < d; ++i) y[i] += p * x[i];
}

template <typename Dot, typename Axpy>
at::Tensor attend(const at::Tensor& q, const at::Tensor& kc, const at::Tensor& vc, int64_t S,
                  const at::Tensor& allowed, double scale, Dot dot, Axpy axpy) {
  const int64_t B = q.size(0), H = q.size(1), d = q.size(3);
  const int64_t KV = kc.size(1), cap = kc.size(2), G = H / KV;
  at::Tensor qc = q.contiguous();
  at::Tensor ok = allowed.to(at::kBool).contiguous();
  const float* qp = qc.data_ptr<float>();
  const float* kp = kc.data_ptr<float>();
  const float* vp = vc.data_ptr<float>();
  const bool* okp = ok.data_ptr<bool>();
  const float lowest = std::numeric_limits<float>::lowest();
  const float sc = static_cast<float>(scale);
  // Scores, with the reference's fill value for hidden keys.
  at::Tensor scores = at::empty({B, H, S}, at::kFloat);
  float* sp = scores.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* qv = qp + (b * H + h) * d;
      const float* keys = kp + (b * KV + h / G) * cap * d;
      float* row = sp + (b * H + h) * S;
      for (int64_t j = 0; j < S; ++j) {
        row[j] = okp[b * S + j] ? dot(qv, keys + j * d, d) * sc : lowest;
      }
    }
  }
  at::Tensor probs = at::softmax(scores, -1);  // ATen's vectorised exp
  const float* pp = probs.data_ptr<float>();
  at::Tensor out = at::zeros({B, 1, H * d}, at::kFloat);
  float* op = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* vals = vp + (b * KV + h / G) * cap * d;
      const float* prow = pp + (b * H + h) * S;
      float* o = op + (b * H + h) * d;
      for (int64_t j = 0; j < S; ++j) axpy(prow[j], vals + j * d, o, d);
    }
  }
  return out;
}

}  // namespace

bool decode_attention_applies(const at::Tensor& q, const at::Tensor& k_cache,
                              const at::Tensor& v_cache) {
  return q.device().is_cpu() && q.dim() == 4 && q.size(2) == 1 && q.scalar_type() == at::kFloat &&
         k_cache.scalar_type() == at::kFloat && v_cache.scalar_type() == at::kFloat &&
         k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.dim() == 4 &&
         k_cache.sizes() == v_cache.sizes() && k_cache.size(0) == q.size(0) &&
         k_cache.size(3) == q.size(3) && k_cache.size(1) > 0 && q.size(1) % k_cache.size(1) == 0;
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, int64_t S, const at::Tensor& allowed,
                            double scale) {
  if (!decode_attention_applies(q, k_cache, v_cache)) {
    fail(
        "decode_attention: expected one fp32 CPU query [B, H, 1, d] and contiguous fp32 caches "
        "[B, KV, capacity, d] with H a multiple of KV");
  }
  if (S < 1 || S > k_cache.size(2)) {
    fail("decode_attention: ", S, " slots asked of a cache of ", k_cache.size(2));
  }
  if (allowed.dim() != 2 || allowed.size(0) != q.size(0) || allowed.size(1) != S) {
    fail("decode_attention: the visibility mask must be [", q.size(0), ", ", S, "]");
  }
  if (active_kernel_isa() == KernelIsa::avx512) {
    return attend(q, k_cache, v_cache, S, allowed, scale, dot_avx512, axpy_avx512);
  }
  return attend(q, k_cache, v_cache, S, allowed, scale, dot_generic, axpy_generic);
}

}  // namespace cocom::model
