// Kernel dispatch: the CPU's instruction sets, the variant in effect (forced or the best the CPU
// has), the kernels' thread count, and the public kernel entry points of model/quant.h, which
// pick the family of kernels (kernels_scalar.cpp, kernels_avx2.cpp, kernels_avx512.cpp) for
// each call.
#include <atomic>
#include <type_traits>
#include <vector>

#include "model/kernels.h"
#include "model/quant.h"

namespace cocom::model {

using namespace kernels;

// ---------------------------------------------------------------------------------------------
// The variant in effect and the kernels' thread count

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

namespace kernels {
QuantizeRowFn quantize_row_kernel() {
  return active_isa() == KernelIsa::avx512 ? quantize_row_avx512 : quantize_row_generic;
}
}  // namespace kernels

void widen_bf16(const void* src, float* dst, int64_t n) {
  const uint8_t* bytes = static_cast<const uint8_t*>(src);
  const bool avx512 = active_isa() == KernelIsa::avx512;
  at::parallel_for(0, n, int64_t{1} << 16, [&](int64_t i0, int64_t i1) {
    if (avx512 && reinterpret_cast<uintptr_t>(bytes) % 2 == 0) {
      widen_bf16_avx512(reinterpret_cast<const uint16_t*>(bytes) + i0, dst + i0, i1 - i0);
      return;
    }
    widen_bf16_generic(bytes + 2 * i0, dst + i0, i1 - i0);
  });
}

// ---------------------------------------------------------------------------------------------
// Matrix-vector products

namespace {
// Weights of type T (int8_t, uint16_t for bf16, float), with per-row scales or none.
template <typename T>
void gemv_any(const float* x, int64_t M, int64_t K, const T* w, const float* scale, int64_t N,
              const float* bias, float* y, int threads) {
  if (M <= 0 || N <= 0) return;
  if (threads <= 0) threads = kernel_threads();
  // Work in groups of 4 channels so that the vector kernel's 4-row blocks stay whole.
  const int64_t groups = (N + 3) / 4;
  const KernelIsa isa = active_isa();
  // Chunks of 16 groups (64 channels): 128 KiB of int8 weights for 2048 inputs.
  parallel_over(groups, threads, 16, [&](int64_t g0, int64_t g1) {
    const int64_t n0 = g0 * 4, n1 = std::min(N, g1 * 4);
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (isa == KernelIsa::avx512) {
        block_bf16_avx512(x, M, K, w, N, bias, y, n0, n1);
        return;
      }
    }
    if (isa != KernelIsa::generic) {
      block_avx2<T>(x, M, K, w, scale, N, bias, y, n0, n1);
    } else {
      block_generic<T>(x, M, K, w, scale, N, bias, y, n0, n1);
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
  gemv_any<int8_t>(x, M, K, q, scale, N, bias, y, threads);
}

void gemv_int8g(const float* x, int64_t M, int64_t K, const int8_t* q, const float* gscale,
                int64_t N, const float* bias, float* y, int threads, const double* offsets) {
  if (M <= 0 || N <= 0) return;
  if (threads <= 0) threads = kernel_threads();
  if (active_isa() == KernelIsa::avx512 && K > 0 &&
      gemv_int8g_vnni(x, M, K, q, gscale, N, bias, y, threads, offsets)) {
    return;
  }
  const int64_t G = int8_groups(K);
  parallel_over(N, threads, 64, [&](int64_t n0, int64_t n1) {
    block_int8g_generic(x, M, K, q, gscale, G, N, bias, y, n0, n1);
  });
}

void gemv_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
               const float* bias, float* y, int threads) {
  gemv_any<uint16_t>(x, M, K, w, nullptr, N, bias, y, threads);
}

void gemv_f32(const float* x, int64_t M, int64_t K, const float* w, int64_t N, const float* bias,
              float* y, int threads) {
  gemv_any<float>(x, M, K, w, nullptr, N, bias, y, threads);
}

}  // namespace cocom::model
