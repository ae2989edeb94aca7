// Resident bf16 / int8 decoder weights (model/quant.h): the kernels against a dequantised
// reference, the quantisation error bound, and the accuracy of whole models against fp32
// (greedy agreement and logit error, teacher-forced so every step is compared on the same
// prefix) on the fixtures' decoders and a random TinyLlama-width model.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <thread>
#include <vector>

#include "common/error.h"
#include "model/checkpoint_io.h"
#include "model/cocom.h"
#include "model/mistral.h"
#include "model/quant.h"
#include "tests/test_util.h"

using namespace cocom;
using namespace cocom::model;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, double std = 1.0) {
  at::Tensor t = at::empty(shape, at::kFloat);
  t.normal_(0.0, std, gen(seed));
  return t;
}

// Forces a kernel variant for the length of a test.
struct ForceIsa {
  explicit ForceIsa(KernelIsa isa) { force_kernel_isa(isa); }
  ~ForceIsa() { force_kernel_isa(KernelIsa::automatic); }
};

// |y - ref| <= (K + 2) * eps * (sum_k |x||w| + |b|) + tiny: the fp32 rounding of a K-term dot
// product, its scaling and the bias. With `x_quantised` (the avx512 int8 kernel), also the
// 16-bit quantisation of each x row: at most (half a step of max|x| / 32767, plus the fp32
// rounding of x / step) per element, times sum_k |w[n, k]|.
void expect_matches_reference(const at::Tensor& y, const at::Tensor& x, const at::Tensor& w_deq,
                              const at::Tensor& bias, const std::string& what,
                              bool x_quantised = false) {
  at::Tensor xd = x.to(at::kDouble), wd = w_deq.to(at::kDouble);
  at::Tensor ref = at::matmul(xd, wd.t());
  if (bias.defined()) ref = ref + bias.to(at::kDouble);
  at::Tensor mag = at::matmul(xd.abs(), wd.abs().t());
  if (bias.defined()) mag = mag + bias.to(at::kDouble).abs();
  const double K = static_cast<double>(x.size(1));
  at::Tensor tol = mag * ((K + 2) * 6e-8) + 1e-30;
  if (x_quantised) {
    at::Tensor step = xd.abs().amax(1, true) / 32767.0;  // [M, 1]
    tol = tol + step * 0.501 * wd.abs().sum(1).unsqueeze(0);
  }
  at::Tensor err = (y.to(at::kDouble) - ref).abs();
  at::Tensor ratio = err / tol;
  EXPECT_LE(ratio.max().item<double>(), 1.0) << what << ": max error " << err.max().item<double>()
                                             << " at ratio " << ratio.max().item<double>();
}

}  // namespace

TEST(Quantize, Int8RoundTripErrorIsAtMostHalfAScalePerChannel) {
  at::Tensor w = randn({37, 129}, 1, 0.05);
  w[3].zero_();       // a zero row: scale 0, codes 0
  w[5].mul_(1000.0);  // a row of a very different magnitude
  w[7][11] = 4.0;     // one outlier
  Int8Matrix m = quantize_int8_rows(w);
  ASSERT_EQ(m.q.scalar_type(), at::kChar);
  ASSERT_EQ(m.scale.sizes(), (std::vector<int64_t>{37}));
  EXPECT_EQ(m.scale[3].item<float>(), 0.0f);
  EXPECT_EQ(m.q[3].abs().max().item<int>(), 0);
  EXPECT_LE(m.q.abs().max().item<int>(), 127);
  at::Tensor deq = dequantize_int8_rows(m.q, m.scale);
  at::Tensor err = (deq.to(at::kDouble) - w.to(at::kDouble)).abs().amax(1);
  for (int64_t n = 0; n < 37; ++n) {
    const double s = m.scale[n].item<double>();
    // Half a step, plus the fp32 rounding of w / s and of q * s.
    EXPECT_LE(err[n].item<double>(), s / 2 * (1 + 1e-6) + 1e-30) << "row " << n;
    // The largest magnitude of a row is represented by +-127 exactly (up to rounding).
    EXPECT_EQ(m.q[n].abs().max().item<int>(), s > 0 ? 127 : 0) << "row " << n;
  }
}

// Codes by hand: a row whose largest magnitude is 127 has scale 1, so its other values are
// codes already, and halves are ties that go to the even neighbour. Every kernel variant gives
// the same codes (the vector loop and the portable one), on a row longer than one vector.
TEST(Quantize, Int8CodesRoundHalfToEvenInEveryVariant) {
  const std::vector<float> row = {127.0f,  2.5f,  -3.5f,  0.5f,  1.5f,  -0.5f, 126.5f,
                                  -126.5f, 3.25f, -7.75f, 0.0f,  64.5f, 65.5f, -1.5f,
                                  2.4999f, 8.5f,  9.5f,   -9.5f, 10.5f};
  const std::vector<int> expect = {127, 2,  -4, 0,  2, 0, 126, -126, 3, -8,
                                   0,   64, 66, -2, 2, 8, 10,  -10,  10};
  at::Tensor w = at::tensor(row).view({1, -1});
  for (KernelIsa isa : available_kernel_isas()) {
    ForceIsa force(isa);
    Int8Matrix m = quantize_int8_rows(w);
    EXPECT_EQ(m.scale[0].item<float>(), 1.0f);
    for (size_t k = 0; k < row.size(); ++k) {
      EXPECT_EQ(m.q[0][static_cast<int64_t>(k)].item<int>(), expect[k])
          << kernel_isa_name(isa) << " value " << row[k];
    }
  }
  // Random rows of an odd length: identical codes and scales from every variant.
  at::Tensor r = randn({7, 133}, 77, 0.3);
  force_kernel_isa(KernelIsa::generic);
  Int8Matrix ref = quantize_int8_rows(r);
  force_kernel_isa(KernelIsa::automatic);
  Int8Matrix got = quantize_int8_rows(r);
  EXPECT_TRUE(got.q.equal(ref.q));
  EXPECT_TRUE(got.scale.equal(ref.scale));
}

TEST(Quantize, Bf16WideningIsExactAtAnyAlignment) {
  at::Tensor v = randn({1000}, 78).to(at::kBFloat16);
  std::vector<uint8_t> bytes(2 * 1000 + 1);
  for (size_t off : {size_t{0}, size_t{1}}) {
    std::memcpy(bytes.data() + off, v.data_ptr(), 2000);
    for (KernelIsa isa : available_kernel_isas()) {
      ForceIsa force(isa);
      std::vector<float> out(1000);
      widen_bf16(bytes.data() + off, out.data(), 1000);
      EXPECT_TRUE(at::from_blob(out.data(), {1000}, at::kFloat).equal(v.to(at::kFloat)))
          << kernel_isa_name(isa) << " offset " << off;
    }
  }
}

TEST(Quantize, Int8QuantisationRefusesNonFiniteWeights) {
  for (float badv :
       {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    at::Tensor w = randn({4, 9}, 3);
    w[2][5] = badv;
    try {
      quantize_int8_rows(w);
      ADD_FAILURE() << "no error for " << badv;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("row 2 of a [4, 9] weight holds inf or NaN"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Quantize, Bf16ConversionRoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
  at::Tensor w = at::tensor({1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f}).view({1, 3});
  at::Tensor b = to_bf16(w).to(at::kFloat);
  EXPECT_EQ(b[0][0].item<float>(), 1.0f);
  EXPECT_EQ(b[0][1].item<float>(), 1.0f + 4.0f / 256);
  EXPECT_EQ(b[0][2].item<float>(), -2.5f);
}

// Odd shapes: rows and columns that are not multiples of the 4-channel blocks or of the 8/16
// lanes of the vector loop; both the vector kernel and the portable one; exact-size buffers so
// that AddressSanitizer sees any read past a tail.
TEST(Quantize, KernelsEqualDequantisedReferenceOnOddShapes) {
  const std::vector<int64_t> Ks = {1, 7, 8, 17, 33, 64, 65, 257};
  const std::vector<int64_t> Ns = {1, 3, 5, 37};
  const std::vector<int64_t> Ms = {1, 3, 8, 11};
  uint64_t seed = 10;
  for (KernelIsa isa : available_kernel_isas()) {
    ForceIsa force(isa);
    ASSERT_STREQ(kernel_isa(), kernel_isa_name(isa));
    const bool xq = isa == KernelIsa::avx512;
    for (int64_t K : Ks) {
      for (int64_t N : Ns) {
        for (int64_t M : Ms) {
          at::Tensor x = randn({M, K}, ++seed);
          at::Tensor w = randn({N, K}, ++seed, 0.1);
          at::Tensor bias = randn({N}, ++seed);
          const std::string what = std::string(kernel_isa()) + " M=" + std::to_string(M) +
                                   " N=" + std::to_string(N) + " K=" + std::to_string(K);
          std::vector<float> xs(x.data_ptr<float>(), x.data_ptr<float>() + M * K);
          std::vector<float> bs(bias.data_ptr<float>(), bias.data_ptr<float>() + N);
          // int8
          Int8Matrix q = quantize_int8_rows(w);
          std::vector<int8_t> qs(q.q.data_ptr<int8_t>(), q.q.data_ptr<int8_t>() + N * K);
          std::vector<float> ss(q.scale.data_ptr<float>(), q.scale.data_ptr<float>() + N);
          std::vector<float> y(static_cast<size_t>(M * N), -1.f);
          const int threads = 1 + static_cast<int>((K + N) % 2);
          gemv_int8(xs.data(), M, K, qs.data(), ss.data(), N, bs.data(), y.data(), threads);
          expect_matches_reference(at::from_blob(y.data(), {M, N}, at::kFloat).clone(), x,
                                   dequantize_int8_rows(q.q, q.scale), bias, "int8 " + what, xq);
          // With the row sums given, as Linear does.
          std::vector<int32_t> sums = int8_row_sums(qs.data(), N, K);
          gemv_int8(xs.data(), M, K, qs.data(), ss.data(), N, nullptr, y.data(), 2, sums.data());
          expect_matches_reference(at::from_blob(y.data(), {M, N}, at::kFloat).clone(), x,
                                   dequantize_int8_rows(q.q, q.scale), {}, "int8 no bias " + what,
                                   xq);
          // bf16
          at::Tensor wb = to_bf16(w);
          std::vector<uint16_t> ws(reinterpret_cast<const uint16_t*>(wb.data_ptr()),
                                   reinterpret_cast<const uint16_t*>(wb.data_ptr()) + N * K);
          gemv_bf16(xs.data(), M, K, ws.data(), N, bs.data(), y.data(), 2);
          expect_matches_reference(at::from_blob(y.data(), {M, N}, at::kFloat).clone(), x,
                                   wb.to(at::kFloat), bias, "bf16 " + what);
        }
      }
    }
  }
}

// int8g: one scale per group of kInt8GroupSize inputs, the last group shorter; every element
// within half its group's step; the products of every variant equal the dequantised reference
// (within the 16-bit activation bound for avx512), for K below, at and across group sizes.
TEST(Quantize, Int8GroupScalesRoundTripAndKernelsMatchTheReference) {
  const int64_t g = kInt8GroupSize;
  {
    at::Tensor w = randn({5, 2 * g + 9}, 90, 0.05);
    w[1].narrow(0, g, g).mul_(100.0);  // one group far larger than the others
    w[2].narrow(0, 0, g).zero_();      // an all-zero group: scale 0
    Int8Matrix m = quantize_int8_groups(w);
    ASSERT_EQ(m.scale.sizes(), (std::vector<int64_t>{5, 3}));
    EXPECT_EQ(int8_groups(2 * g + 9), 3);
    EXPECT_EQ(m.scale[2][0].item<float>(), 0.0f);
    at::Tensor err = (dequantize_int8_rows(m.q, m.scale) - w).abs();
    for (int64_t n = 0; n < 5; ++n) {
      for (int64_t j = 0; j < 3; ++j) {
        const double s = m.scale[n][j].item<double>();
        const int64_t len = std::min(g, 2 * g + 9 - j * g);
        EXPECT_LE(err[n].narrow(0, j * g, len).max().item<double>(), s / 2 * (1 + 1e-6) + 1e-30)
            << "row " << n << " group " << j;
      }
    }
    // The small groups of row 1 keep their own fine steps.
    EXPECT_LT(m.scale[1][0].item<double>() * 20, m.scale[1][1].item<double>());
  }
  uint64_t seed = 500;
  for (KernelIsa isa : available_kernel_isas()) {
    ForceIsa force(isa);
    const bool xq = isa == KernelIsa::avx512;
    for (int64_t K : {int64_t{1}, int64_t{63}, g, g + 1, 2 * g + 17, 5 * g}) {
      for (int64_t M : {int64_t{1}, int64_t{3}, int64_t{9}}) {
        const int64_t N = 7;
        at::Tensor x = randn({M, K}, ++seed);
        at::Tensor w = randn({N, K}, ++seed, 0.1);
        at::Tensor bias = randn({N}, ++seed);
        Int8Matrix q = quantize_int8_groups(w);
        std::vector<int8_t> qs(q.q.data_ptr<int8_t>(), q.q.data_ptr<int8_t>() + N * K);
        std::vector<float> y(static_cast<size_t>(M * N));
        gemv_int8g(x.data_ptr<float>(), M, K, qs.data(), q.scale.data_ptr<float>(), N,
                   bias.data_ptr<float>(), y.data(), 2);
        expect_matches_reference(at::from_blob(y.data(), {M, N}, at::kFloat).clone(), x,
                                 dequantize_int8_rows(q.q, q.scale), bias,
                                 std::string("int8g ") + kernel_isa_name(isa) +
                                     " M=" + std::to_string(M) + " K=" + std::to_string(K),
                                 xq);
      }
    }
    // Through Linear with more rows than the matrix-vector limit: the widened-blocks path
    // (group scales applied while widening) where the variant is not avx512.
    at::Tensor w = randn({33, 3 * g + 5}, ++seed, 0.1);
    Linear l = Linear::make(w, {}, WeightFormat::int8g);
    at::Tensor x = randn({Linear::kGemvMaxRows + 4, 3 * g + 5}, ++seed);
    expect_matches_reference(l.forward(x), x, l.dequantized(), {},
                             std::string("int8g Linear ") + kernel_isa_name(isa), xq);
  }
}

TEST(Quantize, Int8RowSumsAreTheSumsOfTheCodes) {
  const std::vector<int8_t> q = {1, -2, 3, 127, -127, 0, -128, -128, 5};
  EXPECT_EQ(int8_row_sums(q.data(), 3, 3), (std::vector<int32_t>{2, 0, -251}));
  EXPECT_TRUE(int8_row_sums(q.data(), 0, 3).empty());
}

// Rows the 16-bit activation quantisation must handle: all zeros (scale 0: y = bias), one
// large outlier among small values, values of every sign near the extremes, and rows with inf
// or NaN (every variant gives what fp32 gives: the avx512 one falls back to fp32 activations).
TEST(Quantize, Int8KernelsHandleZeroOutlierAndNonFiniteRows) {
  const int64_t K = 130, N = 9, M = 5;
  at::Tensor w = randn({N, K}, 400, 0.1);
  Int8Matrix q = quantize_int8_rows(w);
  at::Tensor deq = dequantize_int8_rows(q.q, q.scale);
  at::Tensor bias = randn({N}, 401);
  at::Tensor x = randn({M, K}, 402);
  x[0].zero_();
  x[1].mul_(1e-3);
  x[1][77] = 1e4;
  x[2] = at::sign(x[2]) * 1e30;  // large (the fp32-activation kernels sum x * code: no overflow)
  at::Tensor finite_rows = x.narrow(0, 0, 3).clone();
  for (KernelIsa isa : available_kernel_isas()) {
    ForceIsa force(isa);
    const bool xq = isa == KernelIsa::avx512;
    for (int bad = 0; bad < 2; ++bad) {
      at::Tensor xb = x.clone();
      xb[3][5] =
          bad ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
      std::vector<float> y(static_cast<size_t>(M * N));
      gemv_int8(xb.data_ptr<float>(), M, K, q.q.data_ptr<int8_t>(), q.scale.data_ptr<float>(), N,
                bias.data_ptr<float>(), y.data(), 2);
      at::Tensor yt = at::from_blob(y.data(), {M, N}, at::kFloat).clone();
      const std::string what = std::string(kernel_isa_name(isa)) + (bad ? " NaN" : " inf");
      // Rows 0-2 as the reference; row 0 is exactly the bias.
      expect_matches_reference(yt.narrow(0, 0, 3), finite_rows, deq, bias, what, xq);
      EXPECT_TRUE(yt[0].equal(bias)) << what;
      // Row 3 holds inf or NaN: no finite output, as in fp32.
      EXPECT_FALSE(at::isfinite(yt[3]).any().item<bool>()) << what;
      // Row 4 is unaffected by row 3.
      expect_matches_reference(yt.narrow(0, 4, 1), x.narrow(0, 4, 1), deq, bias, what, xq);
    }
  }
}

// Linear::forward: the one-row kernels and the many-row path (blocks of widened rows through
// the fp32 GEMM, here several blocks with a short last one) give the same products.
TEST(Quantize, LinearLayerPathsAgreeWithTheReference) {
  const int64_t K = 4096, N = 1100;  // 8 MiB blocks of 512 rows: 3 blocks, the last of 76
  at::Tensor w = randn({N, K}, 101, 0.02);
  at::Tensor bias = randn({N}, 102);
  for (WeightFormat f : {WeightFormat::bf16, WeightFormat::int8, WeightFormat::int8g}) {
    Linear l = Linear::make(w, bias, f);
    // int8: codes, scales and row sums; int8g: codes, K / 64 scales and one fp64 offset a
    // row; bf16: the weight; all: the bias.
    const int64_t expect = f == WeightFormat::bf16 ? N * K * 2 + N * 4
                           : f == WeightFormat::int8
                               ? N * K + N * 4 * 3
                               : N * K + N * int8_groups(K) * 4 + N * 8 + N * 4;
    EXPECT_EQ(l.resident_bytes(), expect) << weight_format_name(f);
    const bool xq = f != WeightFormat::bf16 && std::string(kernel_isa()) == "avx512";
    at::Tensor deq = l.dequantized();
    // 260 rows: more than one 256-row chunk of the avx512 int8 path.
    for (int64_t M : {int64_t{1}, int64_t{3}, Linear::kGemvMaxRows, Linear::kGemvMaxRows + 1,
                      int64_t{40}, int64_t{260}}) {
      at::Tensor x = randn({1, M, K}, 200 + M);
      at::Tensor y = l.forward(x);
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, M, N}));
      expect_matches_reference(y.view({M, N}), x.view({M, K}), deq, bias,
                               std::string(weight_format_name(f)) + " M=" + std::to_string(M), xq);
    }
  }
  // fp32 keeps the reference kernel exactly from kGemvMaxRows + 1 rows on (prefill); 2-8 rows
  // (a decoder step of several sequences) take the few-row kernel, equal up to rounding.
  Linear l = Linear::make(w, bias, WeightFormat::fp32);
  at::Tensor many = randn({Linear::kGemvMaxRows + 1, K}, 300);
  EXPECT_TRUE(l.forward(many).equal(at::linear(many, w, bias)));
  at::Tensor few = randn({2, K}, 301);
  EXPECT_LT((l.forward(few) - at::linear(few, w, bias)).abs().max().item<double>(), 1e-4);
}

// ---------------------------------------------------------------------------------------------
// Whole models against fp32.

namespace {

struct Agreement {
  int64_t steps = 0, agree = 0;
  double max_missed_margin = 0;  // largest fp32 top-2 logit margin at a step that disagreed
  double max_abs = 0;            // max |logit - fp32 logit|
  double max_logit = 0;          // max |fp32 logit|
  double fraction() const { return steps ? double(agree) / double(steps) : 0; }
  double relative() const { return max_logit > 0 ? max_abs / max_logit : 0; }
};

// The fp32 model's greedy run on a prompt: its tokens and the logits before each of them.
struct Reference {
  at::Tensor ids;                  // [1, T] prompt
  std::vector<int64_t> tokens;     // steps + 1 greedy tokens
  std::vector<at::Tensor> logits;  // [1, V] before each token
};

// Greedy decoding of `steps + 1` tokens after `ids`: the prefill covers the prompt (the
// many-row path), every later step one row (the matrix-vector kernels). With `forced`, the
// tokens fed back are those instead of the model's own choices (teacher forcing).
Reference run_greedy(const MistralModel& m, const at::Tensor& ids, int64_t steps,
                     const std::vector<int64_t>* forced = nullptr) {
  Reference r;
  r.ids = ids;
  const int64_t T = ids.size(1);
  KVCache c = m.make_cache(1, T + steps);
  at::Tensor mask = at::ones_like(ids);
  DecoderForwardOptions fo;
  fo.last_logits_only = true;
  at::Tensor l =
      m.forward(ids, mask, MistralModel::arange_positions(mask), &c, fo).logits.select(1, 0);
  for (int64_t s = 0;; ++s) {
    r.logits.push_back(l);
    r.tokens.push_back(l.argmax(-1).item<int64_t>());
    if (s == steps) break;
    const int64_t feed = forced ? (*forced)[static_cast<size_t>(s)] : r.tokens.back();
    l = m.forward(at::full({1, 1}, feed, at::kLong), at::ones({1, 1}, at::kLong),
                  at::full({1, 1}, T + s, at::kLong), &c, fo)
            .logits.select(1, 0);
  }
  return r;
}

// Hands out what `src` gives and remembers it, so that models built after the first one
// convert exactly the same tensors (without drawing 200M random numbers again).
class Replay : public TensorProvider {
 public:
  explicit Replay(TensorProvider& src) : src_(src) {}
  bool has(const std::string& name) const override { return src_.has(name); }
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape,
                 c10::Device device) override {
    auto it = cache_.find(name);
    if (it != cache_.end()) return it->second;
    at::Tensor t = src_.get(name, shape, device);
    cache_[name] = t;
    return t;
  }
  std::string origin() const override { return "replay of " + src_.origin(); }

 private:
  TensorProvider& src_;
  std::map<std::string, at::Tensor> cache_;
};

std::vector<at::Tensor> prompts(int64_t vocab, int64_t count, int64_t length, uint64_t seed) {
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < count; ++i) {
    auto g = gen(seed + i);
    out.push_back(at::randint(3, vocab, {1, length + 3 * i}, g, at::kLong));
  }
  return out;
}

// The bounds this test holds the formats to (measured values are printed; see the README).
struct Bounds {
  double min_agreement;
  double max_relative_logit_error;  // max |dlogit| / max |fp32 logit|
};
// Measured (2-core VM, see docs/benchmarks.md): bf16 100% / 98% agreement with relative logit
// errors <= 0.9%; int8 99% on the fixtures with <= 1.6%.
const Bounds kBf16{0.95, 0.02};
const Bounds kInt8{0.95, 0.05};
// int8 on random TinyLlama-width weights measured 90% (45/50) with 3.9%: random weights give
// near-flat next-token distributions (fp32 top-2 margins of a few hundredths at the missed
// steps, against a per-channel int8 logit noise of about that size), so this bound is lower
// than the 95%; the fixtures' models, with real margins, meet 95%.
const Bounds kInt8Random{0.85, 0.06};
// int8 with one scale per 128 inputs: the 95% on the random TinyLlama width too.
const Bounds kInt8g{0.95, 0.05};

void check_model(const std::string& name, const std::vector<Reference>& refs, const MistralModel& q,
                 const Bounds& b) {
  Agreement a;
  int64_t prefix = 0, total = 0;
  for (const Reference& ref : refs) {
    const int64_t steps = static_cast<int64_t>(ref.tokens.size()) - 1;
    // Teacher-forced: every step sees the fp32 model's prefix.
    Reference tf = run_greedy(q, ref.ids, steps, &ref.tokens);
    for (size_t s = 0; s < ref.tokens.size(); ++s) {
      a.steps += 1;
      const at::Tensor& lr = ref.logits[s];
      if (tf.tokens[s] == ref.tokens[s]) {
        a.agree += 1;
      } else {
        at::Tensor top = std::get<0>(lr.topk(2, -1));
        a.max_missed_margin = std::max(a.max_missed_margin, (top[0][0] - top[0][1]).item<double>());
      }
      a.max_abs = std::max(a.max_abs, (lr - tf.logits[s]).abs().max().item<double>());
      a.max_logit = std::max(a.max_logit, lr.abs().max().item<double>());
    }
    // Free-running (informational): how long the model's own greedy text stays identical.
    Reference fr = run_greedy(q, ref.ids, steps);
    int64_t n = 0;
    while (n <= steps && fr.tokens[static_cast<size_t>(n)] == ref.tokens[static_cast<size_t>(n)]) {
      ++n;
    }
    prefix += n;
    total += steps + 1;
  }
  std::printf(
      "[ quantize ] %-24s %s: greedy agreement %lld/%lld = %.1f%%, max |dlogit| %.4g (%.3g%% of "
      "max |logit| %.3g); largest fp32 top-2 margin at a disagreement %.3g; free-running "
      "identical prefix %lld/%lld\n",
      name.c_str(), weight_format_name(q.weight_format()), static_cast<long long>(a.agree),
      static_cast<long long>(a.steps), 100 * a.fraction(), a.max_abs, 100 * a.relative(),
      a.max_logit, a.max_missed_margin, static_cast<long long>(prefix),
      static_cast<long long>(total));
  EXPECT_GE(a.fraction(), b.min_agreement) << name;
  EXPECT_LE(a.relative(), b.max_relative_logit_error) << name;
}

std::vector<Reference> references(const MistralModel& ref, const std::vector<at::Tensor>& ps,
                                  int64_t steps) {
  std::vector<Reference> out;
  for (const at::Tensor& p : ps) out.push_back(run_greedy(ref, p, steps));
  return out;
}

// The TinyLlama-width test uses the machine's cores (the library default is one thread; the
// fixtures' models are too small to gain from more).
void use_all_cores() {
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace

TEST(QuantizedModel, FixtureMistralAgreesWithFp32) {
  const std::string dir = test::fixtures_dir() + "/mistral";
  auto ref = MistralModel::load(dir);
  auto refs = references(*ref, prompts(ref->config().vocab_size, 4, 12, 7), 24);
  for (WeightFormat f : {WeightFormat::bf16, WeightFormat::int8, WeightFormat::int8g}) {
    auto q = MistralModel::load(dir, c10::kCPU, {}, f);
    EXPECT_EQ(q->weight_format(), f);
    EXPECT_LT(q->decode_weight_bytes(),
              ref->decode_weight_bytes() / (f == WeightFormat::bf16 ? 1.9 : 3));
    check_model("fixture mistral", refs, *q,
                f == WeightFormat::int8    ? kInt8
                : f == WeightFormat::int8g ? kInt8g
                                           : kBf16);
  }
}

TEST(QuantizedModel, FixtureCocomDecoderAgreesWithFp32) {
  // The COCOM checkpoint's decoder: LoRA merged in fp32, then converted.
  const std::string dir = test::fixtures_dir() + "/cocom";
  auto ref = CocomModel::load(dir);
  auto refs =
      references(ref->decoder(), prompts(ref->decoder().config().vocab_size, 4, 12, 17), 24);
  for (WeightFormat f : {WeightFormat::bf16, WeightFormat::int8, WeightFormat::int8g}) {
    CocomLoadOptions o;
    o.decoder_weights = f;
    auto q = CocomModel::load(dir, o);
    EXPECT_EQ(q->decoder().weight_format(), f);
    check_model("fixture cocom decoder", refs, q->decoder(),
                f == WeightFormat::int8    ? kInt8
                : f == WeightFormat::int8g ? kInt8g
                                           : kBf16);
  }
}

TEST(QuantizedModel, RandomTinyLlamaWidthAgreesWithFp32) {
  // TinyLlama's width (hidden 2048, 32/8 heads, intermediate 5632, vocabulary 32000) with 2
  // of its 22 layers, so that the test stays fast; random weights like a fresh model.
  DecoderConfig c;
  c.model_type = "llama";
  c.vocab_size = 32000;
  c.hidden_size = 2048;
  c.intermediate_size = 5632;
  c.num_hidden_layers = 2;
  // COCOM_QUANT_TEST_LAYERS=16 measures the full benchmark depth (slow; not for CI).
  if (const char* e = std::getenv("COCOM_QUANT_TEST_LAYERS")) c.num_hidden_layers = std::atoi(e);
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 64;
  c.max_position_embeddings = 2048;
  c.rms_norm_eps = 1e-5;
  use_all_cores();
  RandomWeights rnd(5);
  Replay replay(rnd);
  std::vector<Reference> refs;
  {
    auto ref = MistralModel::from_weights(c, replay);
    refs = references(*ref, prompts(c.vocab_size, 2, 16, 27), 24);
  }
  for (WeightFormat f : {WeightFormat::bf16, WeightFormat::int8, WeightFormat::int8g}) {
    auto q = MistralModel::from_weights(c, replay, c10::kCPU, f);
    check_model("random TinyLlama-width", refs, *q,
                f == WeightFormat::int8    ? kInt8Random
                : f == WeightFormat::int8g ? kInt8g
                                           : kBf16);
  }
}

TEST(QuantizedModel, Bf16AndInt8NeedCpu) {
  DecoderConfig c;
  c.vocab_size = 16;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  RandomWeights r(1);
  try {
    MistralModel::from_weights(c, r, c10::Device(c10::kCUDA, 0), WeightFormat::int8);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("CPU only"), std::string::npos) << e.what();
  }
}

TEST(QuantizedModel, ParseWeightFormat) {
  EXPECT_EQ(parse_weight_format("int8"), WeightFormat::int8);
  EXPECT_EQ(parse_weight_format("bf16"), WeightFormat::bf16);
  EXPECT_EQ(parse_weight_format("fp32"), WeightFormat::fp32);
  EXPECT_FALSE(parse_weight_format("int4").has_value());
}

// The fp32 few-row kernel (a decoder step of several sequences) against x W^T in double, on
// odd shapes, in every variant; and dense() takes it for 2-8 rows.
TEST(Quantize, Fp32FewRowKernelEqualsTheProduct) {
  for (KernelIsa isa : available_kernel_isas()) {
    ForceIsa force(isa);
    for (int64_t M : {1, 2, 3, 8}) {
      for (auto [N, K] : {std::pair<int64_t, int64_t>{5, 7}, {13, 40}, {64, 257}}) {
        at::Tensor x = at::randn({M, K}), w = at::randn({N, K}), b = at::randn({N});
        at::Tensor y = at::empty({M, N});
        gemv_f32(x.data_ptr<float>(), M, K, w.data_ptr<float>(), N, b.data_ptr<float>(),
                 y.data_ptr<float>());
        at::Tensor ref = (at::matmul(x.to(at::kDouble), w.to(at::kDouble).t()) + b.to(at::kDouble))
                             .to(at::kFloat);
        EXPECT_LT((y - ref).abs().max().item<double>(), 1e-4)
            << kernel_isa_name(isa) << " M=" << M << " N=" << N << " K=" << K;
        EXPECT_LT((dense(x, w, b) - ref).abs().max().item<double>(), 1e-4);
      }
    }
  }
}
