// Resident weight formats (model/quant.h): names and sizes, int8 quantisation and bf16
// conversion, resident memory, and Linear. The kernels and their dispatch are in kernels*.cpp
// (see kernels.h).
#include "model/quant.h"

#include <ATen/Parallel.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "model/kernels.h"
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
// Codes for [N, K] with one scale per `group` consecutive inputs of a row (group = K: one per
// row); scale has G = ceil(K / group) columns.
void quantize_int8(const at::Tensor& w, int64_t group, int8_t* q, float* scale) {
  const int64_t N = w.size(0), K = w.size(1), G = (K + group - 1) / group;
  const float* src = w.data_ptr<float>();
  std::atomic<int64_t> bad_row{-1};
  const kernels::QuantizeRowFn quantize_row = kernels::quantize_row_kernel();
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
        quantize_row(seg, len, divisor, q + n * K + k0);
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

std::vector<int32_t> int8_row_sums(const int8_t* q, int64_t N, int64_t K) {
  std::vector<int32_t> out(static_cast<size_t>(std::max<int64_t>(N, 0)), 0);
  for (int64_t n = 0; n < N; ++n) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += q[n * K + k];
    out[static_cast<size_t>(n)] = s;
  }
  return out;
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
  const bool int8_any_rows =
      format_ == WeightFormat::int8 && active_kernel_isa() == KernelIsa::avx512;
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
