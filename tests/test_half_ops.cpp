// bf16 and f16 on the CPU backend: every op that admits half tensors, against its f32 result on
// the same inputs. Inputs are drawn in f32 and rounded to the half format first, so both runs see
// identical values and any difference comes from the op itself.
//
// Tolerances follow from the formats' unit roundoff u (2^-8 for bf16, 2^-11 for f16):
// - an op that computes in f32 exactly as the f32 kernel does and rounds its output once is
//   within u*|ref| of the f32 result (plus an atol of f16's smallest subnormal, 2^-24, where
//   rounding is absolute rather than relative);
// - a reduction of K terms (convolution, GEMM, Gram) may also sum in another order or with
//   another algorithm (oneDNN's bf16 kernels against f32 Winograd or im2col), so its error is
//   bounded by the magnitudes of its terms, not of its result: within u*sqrt(K)*M, M the sum of
//   the terms' magnitudes (computed by running the f32 op on |inputs|). sqrt(K) is the usual
//   growth of independent rounding errors; the bound is loose for an f32-accumulating kernel, so
//   the separate *AccumulatesInF32 tests pin that down with sums a half accumulator cannot reach.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/half.hpp"
#include "cudl/engine/philox.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/test_util.hpp"

namespace cudl {
// "bf16" rather than "1-byte object <01>" in failure reports.
inline void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }
}  // namespace cudl

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::error_message;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr double kAtol = 0x1p-24;

float round_to(DType t, float v) { return t == DType::bf16 ? to_float(to_bf16(v)) : to_float(to_f16(v)); }

class HalfOps : public ::testing::TestWithParam<DType> {
 protected:
  DType half() const { return GetParam(); }
  void check_large_max_pool(const Shape& xs, bool nans);
  double u() const { return half() == DType::bf16 ? 0x1p-8 : 0x1p-11; }

  // n values uniform in [lo, hi), rounded to the half format (so f32 holds them exactly too).
  std::vector<float> values(std::size_t n, float lo = -2.0f, float hi = 2.0f) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = round_to(half(), dist(rng_));
    return v;
  }
  std::vector<float> values(const Shape& s, float lo = -2.0f, float hi = 2.0f) {
    return values(static_cast<std::size_t>(s.numel()), lo, hi);
  }
  Tensor f32(const std::vector<float>& v, const Shape& s) { return Tensor::from_host(v, s, ctx_); }
  Tensor hf(const std::vector<float>& v, const Shape& s) { return Tensor::from_host(v, s, ctx_, half()); }
  Tensor as(DType t, const std::vector<float>& v, const Shape& s) { return Tensor::from_host(v, s, ctx_, t); }
  std::vector<float> host(const Tensor& t) { return t.to_vector(ctx_); }
  static std::vector<float> abs(std::vector<float> v) {
    for (float& x : v) x = std::fabs(x);
    return v;
  }

  // Rounded once: within u*|ref| (NaN where ref is NaN, the same infinity where ref is infinite).
  void expect_rounded(const std::vector<float>& got, const std::vector<float>& ref, const std::string& what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      if (std::isnan(ref[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << what << " [" << i << "]";
        continue;
      }
      const double tol = u() * std::fabs(ref[i]) + kAtol;
      EXPECT_NEAR(got[i], ref[i], tol) << what << " [" << i << "] (" << dtype_name(half()) << ")";
    }
  }

  // A reduction of k terms per output, mag[i] the sum of output i's terms' magnitudes.
  void expect_reduced(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<float>& mag,
                      double k, const std::string& what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    ASSERT_EQ(mag.size(), ref.size()) << what;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const double tol = u() * std::fabs(ref[i]) + u() * std::sqrt(k) * mag[i] + kAtol;
      EXPECT_NEAR(got[i], ref[i], tol) << what << " [" << i << "] (" << dtype_name(half()) << ", K=" << k << ")";
    }
  }

  Context ctx_{Device::cpu()};
  Backend& be_ = ctx_.backend();
  std::mt19937 rng_{20};
};

// ---- convolutions ----

struct ConvCase {
  Shape x, w;
  Conv2dParams p;
};

const ConvCase kConvCases[] = {
    {{2, 8, 10, 10}, {6, 8, 3, 3}, {1, 1, 1, 1, 1, 1}},  // VGG's 3x3 (the f32 reference may be Winograd)
    {{2, 5, 9, 11}, {4, 5, 3, 2}, {1, 0, 2, 1, 1, 1}},   // strided, asymmetric
    {{1, 3, 7, 7}, {4, 3, 1, 1}, {0, 0, 1, 1, 1, 1}},    // pointwise
    {{1, 4, 11, 11}, {3, 4, 3, 3}, {2, 2, 1, 1, 2, 2}},  // dilated
    // Grouped and depthwise (Conv2dParams::groups; w is [K, C/groups, R, S]).
    {{2, 8, 10, 10}, {6, 4, 3, 3}, {1, 1, 1, 1, 1, 1, 2}},     // 2 groups
    {{2, 16, 9, 9}, {16, 1, 3, 3}, {1, 1, 2, 2, 1, 1, 16}},    // depthwise, strided
    {{1, 32, 12, 12}, {32, 1, 3, 3}, {1, 1, 1, 1, 1, 1, 32}},  // depthwise, oneDNN's blocked kernels
};

TEST_P(HalfOps, ConvForward) {
  for (const ConvCase& c : kConvCases) {
    const auto xv = values(c.x), wv = values(c.w, -0.5f, 0.5f);
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    Tensor ref = Tensor::empty(ys, ctx_), mag = Tensor::empty(ys, ctx_), y = Tensor::empty(ys, ctx_, half());
    be_.conv2d_forward(ctx_, f32(xv, c.x), f32(wv, c.w), c.p, ref);
    be_.conv2d_forward(ctx_, f32(abs(xv), c.x), f32(abs(wv), c.w), c.p, mag);
    be_.conv2d_forward(ctx_, hf(xv, c.x), hf(wv, c.w), c.p, y);
    expect_reduced(host(y), host(ref), host(mag), static_cast<double>(c.w[1] * c.w[2] * c.w[3]), "conv2d_forward");
  }
}

TEST_P(HalfOps, ConvBackwardData) {
  for (const ConvCase& c : kConvCases) {
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    const auto dyv = values(ys), wv = values(c.w, -0.5f, 0.5f);
    Tensor ref = Tensor::empty(c.x, ctx_), mag = Tensor::empty(c.x, ctx_), dx = Tensor::empty(c.x, ctx_, half());
    be_.conv2d_backward_data(ctx_, f32(dyv, ys), f32(wv, c.w), c.p, ref);
    be_.conv2d_backward_data(ctx_, f32(abs(dyv), ys), f32(abs(wv), c.w), c.p, mag);
    be_.conv2d_backward_data(ctx_, hf(dyv, ys), hf(wv, c.w), c.p, dx);
    // Each input channel receives the K/groups output channels of its group.
    expect_reduced(host(dx), host(ref), host(mag), static_cast<double>(c.w[0] / c.p.groups * c.w[2] * c.w[3]),
                   "conv2d_backward_data");
  }
}

// dw f32 (master-weight gradients) and dw in the half dtype, overwritten and accumulated.
TEST_P(HalfOps, ConvBackwardFilter) {
  for (const ConvCase& c : kConvCases) {
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    const auto xv = values(c.x), dyv = values(ys), dw0 = values(c.w);
    for (const DType dw_type : {DType::f32, half()}) {
      for (const bool accumulate : {false, true}) {
        Tensor ref = f32(dw0, c.w), mag = f32(abs(dw0), c.w), dw = as(dw_type, dw0, c.w);
        be_.conv2d_backward_filter(ctx_, f32(xv, c.x), f32(dyv, ys), c.p, ref, accumulate);
        be_.conv2d_backward_filter(ctx_, f32(abs(xv), c.x), f32(abs(dyv), ys), c.p, mag, accumulate);
        be_.conv2d_backward_filter(ctx_, hf(xv, c.x), hf(dyv, ys), c.p, dw, accumulate);
        const std::string what = std::string("conv2d_backward_filter dw ") + std::string(dtype_name(dw_type)) +
                                 (accumulate ? " accumulate" : " overwrite");
        expect_reduced(host(dw), host(ref), host(mag), static_cast<double>(ys[0] * ys[2] * ys[3]), what);
      }
    }
  }
}

// 64 channels of a 3x3 window of ones: 576 products per interior output. A half accumulator
// stalls far below that (bf16 at 256 + 2 = 256: ulp 2 there), f32 accumulation is exact.
TEST_P(HalfOps, ConvAccumulatesInF32) {
  const Shape xs{1, 64, 6, 6}, ws{2, 64, 3, 3};
  const Conv2dParams p{1, 1, 1, 1, 1, 1};
  Tensor y = Tensor::empty({1, 2, 6, 6}, ctx_, half());
  be_.conv2d_forward(ctx_, hf(std::vector<float>(xs.numel(), 1.0f), xs), hf(std::vector<float>(ws.numel(), 1.0f), ws),
                     p, y);
  const auto yv = host(y);
  EXPECT_EQ(yv[1 * 6 + 1], 576.0f);  // interior
  EXPECT_EQ(yv[0], 256.0f);          // a corner sees 2x2 taps: 64*4

  const Shape dys{1, 2, 6, 6};
  Tensor dw = Tensor::empty(ws, ctx_);
  be_.conv2d_backward_filter(ctx_, hf(std::vector<float>(xs.numel(), 1.0f), xs),
                             hf(std::vector<float>(dys.numel(), 1.0f), dys), p, dw, false);
  EXPECT_EQ(host(dw)[4], 36.0f);  // the centre tap sees every output once
}

// Weights held constant are reordered once into oneDNN's layout and reused; held or not, the
// result is the same.
TEST_P(HalfOps, ConvWithWeightsHeldConstant) {
  const ConvCase& c = kConvCases[0];
  const auto xv = values(c.x), wv = values(c.w, -0.5f, 0.5f);
  const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
  Tensor x = hf(xv, c.x), w = hf(wv, c.w), free = Tensor::empty(ys, ctx_, half());
  be_.conv2d_forward(ctx_, x, w, c.p, free);
  const ConstantHold hold = be_.hold_constant(ctx_, w);
  for (int i = 0; i < 2; ++i) {
    Tensor held = Tensor::empty(ys, ctx_, half());
    be_.conv2d_forward(ctx_, x, w, c.p, held);
    EXPECT_EQ(host(held), host(free)) << i;
    Tensor dx = Tensor::empty(c.x, ctx_, half()), dx_free = Tensor::empty(c.x, ctx_, half());
    be_.conv2d_backward_data(ctx_, held, w, c.p, dx);
    be_.conv2d_backward_data(ctx_, free, w, c.p, dx_free);
    EXPECT_EQ(host(dx), host(dx_free)) << i;
  }
}

// ---- GEMM ----

TEST_P(HalfOps, GemmWithTransposesAlphaBeta) {
  const std::int64_t m = 7, n = 9, k = 33;
  for (const bool ta : {false, true}) {
    for (const bool tb : {false, true}) {
      for (const DType ct : {DType::f32, half()}) {
        for (const float beta : {0.0f, 0.5f}) {
          const Shape as_ = ta ? Shape{k, m} : Shape{m, k}, bs = tb ? Shape{n, k} : Shape{k, n};
          const auto av = values(as_), bv = values(bs), cv = values(Shape{m, n});
          const float alpha = 0.75f;
          Tensor ref = f32(cv, {m, n}), mag = f32(abs(cv), {m, n}), c = as(ct, cv, {m, n});
          be_.gemm(ctx_, ta, tb, alpha, f32(av, as_), f32(bv, bs), beta, ref);
          be_.gemm(ctx_, ta, tb, alpha, f32(abs(av), as_), f32(abs(bv), bs), beta, mag);
          be_.gemm(ctx_, ta, tb, alpha, hf(av, as_), hf(bv, bs), beta, c);
          expect_reduced(host(c), host(ref), host(mag), static_cast<double>(k),
                         "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " c " +
                             std::string(dtype_name(ct)) + " beta=" + std::to_string(beta));
        }
      }
    }
  }
}

// beta = 0 never reads c: NaN there must not leak into the result (BLAS's rule, as for f32).
TEST_P(HalfOps, GemmBetaZeroIgnoresC) {
  Tensor c = hf(std::vector<float>(4, kNaN), {2, 2});
  be_.gemm(ctx_, false, false, 1.0f, hf({1, 2, 3, 4}, {2, 2}), hf({1, 0, 0, 1}, {2, 2}), 0.0f, c);
  EXPECT_EQ(host(c), (std::vector<float>{1, 2, 3, 4}));
}

TEST_P(HalfOps, GemmAccumulatesInF32) {
  const std::int64_t k = 1024;
  Tensor c = Tensor::empty({2, 3}, ctx_);
  be_.gemm(ctx_, false, false, 1.0f, hf(std::vector<float>(2 * k, 1.0f), {2, k}),
           hf(std::vector<float>(k * 3, 1.0f), {k, 3}), 0.0f, c);
  EXPECT_EQ(host(c), std::vector<float>(6, 1024.0f));
}

// ---- pointwise ops, pooling, bias ----

TEST_P(HalfOps, Activations) {
  const Shape s{3, 5, 7};
  // [-8, 8): relu6's upper kink at 6 is inside too.
  const auto xv = values(s, -8.0f, 8.0f), dyv = values(s);
  for (const Activation a :
       {Activation::relu, Activation::leaky_relu, Activation::sigmoid, Activation::tanh, Activation::relu6}) {
    const std::string name(activation_name(a));
    Tensor ref_y = Tensor::empty(s, ctx_), y = Tensor::empty(s, ctx_, half());
    be_.activation_forward(ctx_, a, 0.1f, f32(xv, s), ref_y);
    be_.activation_forward(ctx_, a, 0.1f, hf(xv, s), y);
    expect_rounded(host(y), host(ref_y), name + " forward");
    // Backward from the same (half-representable) y in both runs.
    const auto yv = host(y);
    Tensor ref_dx = Tensor::empty(s, ctx_), dx = Tensor::empty(s, ctx_, half());
    be_.activation_backward(ctx_, a, 0.1f, f32(xv, s), f32(yv, s), f32(dyv, s), ref_dx);
    be_.activation_backward(ctx_, a, 0.1f, hf(xv, s), hf(yv, s), hf(dyv, s), dx);
    expect_rounded(host(dx), host(ref_dx), name + " backward");
  }
}

// A NaN input gives what it gives in f32 (relu maps it to 0 there, as the CUDA kernel does; max
// pooling keeps it), and a NaN gradient likewise.
TEST_P(HalfOps, NanThroughReluAndMaxPool) {
  const std::vector<float> xv{1.0f, kNaN, -1.0f, 2.0f};
  Tensor ref = Tensor::empty({4}, ctx_), y = Tensor::empty({4}, ctx_, half());
  be_.activation_forward(ctx_, Activation::relu, 0.0f, f32(xv, {4}), ref);
  be_.activation_forward(ctx_, Activation::relu, 0.0f, hf(xv, {4}), y);
  const auto rv = host(ref), yv = host(y);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(std::isnan(yv[i]), std::isnan(rv[i])) << i;
    if (!std::isnan(rv[i])) {
      EXPECT_EQ(yv[i], rv[i]) << i;
    }
  }
  Tensor dx = Tensor::empty({4}, ctx_, half()), ref_dx = Tensor::empty({4}, ctx_);
  const std::vector<float> dyv{kNaN, 1.0f, kNaN, 3.0f};
  be_.activation_backward(ctx_, Activation::relu, 0.0f, f32(xv, {4}), Tensor(), f32(dyv, {4}), ref_dx);
  be_.activation_backward(ctx_, Activation::relu, 0.0f, hf(xv, {4}), Tensor(), hf(dyv, {4}), dx);
  expect_rounded(host(dx), host(ref_dx), "relu backward with NaN");

  // 2x2 pooling (the fast path) and 3x3 with padding (the general one), a NaN in the first window.
  const Shape xs{1, 1, 4, 4};
  std::vector<float> pv = values(xs);
  pv[5] = kNaN;
  for (const Pool2dParams p : {Pool2dParams{2, 2, 2, 2, 0, 0}, Pool2dParams{3, 3, 2, 2, 1, 1}}) {
    const Shape ys = pool2d_output_shape(xs, p);
    Tensor ry = Tensor::empty(ys, ctx_), ra = Tensor::empty(ys, ctx_, DType::i32);
    Tensor hy = Tensor::empty(ys, ctx_, half()), ha = Tensor::empty(ys, ctx_, DType::i32);
    be_.maxpool2d_forward(ctx_, f32(pv, xs), p, ry, ra);
    be_.maxpool2d_forward(ctx_, hf(pv, xs), p, hy, ha);
    EXPECT_TRUE(std::isnan(host(hy)[0]));
    expect_rounded(host(hy), host(ry), "maxpool with NaN");
    EXPECT_EQ(ha.to_int_vector(ctx_), ra.to_int_vector(ctx_));
  }
}

TEST_P(HalfOps, Pooling) {
  const Shape xs{2, 3, 9, 8};
  const auto xv = values(xs);
  for (const Pool2dParams p : {Pool2dParams{2, 2, 2, 2, 0, 0}, Pool2dParams{3, 3, 2, 2, 1, 1}}) {
    const Shape ys = pool2d_output_shape(xs, p);
    const auto dyv = values(ys);
    Tensor ry = Tensor::empty(ys, ctx_), ra = Tensor::empty(ys, ctx_, DType::i32);
    Tensor hy = Tensor::empty(ys, ctx_, half()), ha = Tensor::empty(ys, ctx_, DType::i32);
    be_.maxpool2d_forward(ctx_, f32(xv, xs), p, ry, ra);
    be_.maxpool2d_forward(ctx_, hf(xv, xs), p, hy, ha);
    EXPECT_EQ(host(hy), host(ry)) << "a maximum is exact";
    EXPECT_EQ(ha.to_int_vector(ctx_), ra.to_int_vector(ctx_));
    // Overlapping 3x3 windows add up to 4 gradients into one input: summed in f32, rounded once.
    Tensor rdx = Tensor::empty(xs, ctx_), hdx = Tensor::empty(xs, ctx_, half());
    be_.maxpool2d_backward(ctx_, f32(dyv, ys), ra, p, rdx);
    be_.maxpool2d_backward(ctx_, hf(dyv, ys), ha, p, hdx);
    expect_rounded(host(hdx), host(rdx), "maxpool backward");

    Tensor ray = Tensor::empty(ys, ctx_), hay = Tensor::empty(ys, ctx_, half());
    be_.avgpool2d_forward(ctx_, f32(xv, xs), p, ray);
    be_.avgpool2d_forward(ctx_, hf(xv, xs), p, hay);
    expect_rounded(host(hay), host(ray), "avgpool forward");
    be_.avgpool2d_backward(ctx_, f32(dyv, ys), p, rdx);
    be_.avgpool2d_backward(ctx_, hf(dyv, ys), p, hdx);
    expect_rounded(host(hdx), host(rdx), "avgpool backward");
  }
}

TEST_P(HalfOps, BiasAddAndGrad) {
  for (const Shape s : {Shape{4, 6}, Shape{2, 6, 5, 3}}) {
    const auto yv = values(s), bv = values(Shape{6});
    Tensor ref = f32(yv, s), y = hf(yv, s), bias = f32(bv, {6});
    be_.bias_add(ctx_, ref, bias);
    be_.bias_add(ctx_, y, bias);
    expect_rounded(host(y), host(ref), "bias_add");
    // dbias is f32 and summed in double: the same value from the same inputs.
    for (const bool accumulate : {false, true}) {
      Tensor rdb = f32(bv, {6}), hdb = f32(bv, {6});
      be_.bias_grad(ctx_, f32(yv, s), rdb, accumulate);
      be_.bias_grad(ctx_, hf(yv, s), hdb, accumulate);
      EXPECT_EQ(host(hdb), host(rdb));
    }
  }
}

TEST_P(HalfOps, DropoutDrawsTheF32MaskAndMul) {
  const Shape s{5, 37};
  const auto xv = values(s);
  for (const float p : {0.0f, 0.3f, 0.5f}) {
    Tensor ry = Tensor::empty(s, ctx_), rm = Tensor::empty(s, ctx_);
    Tensor hy = Tensor::empty(s, ctx_, half()), hm = Tensor::empty(s, ctx_, half());
    be_.dropout_forward(ctx_, f32(xv, s), p, 7, 11, ry, rm);
    be_.dropout_forward(ctx_, hf(xv, s), p, 7, 11, hy, hm);
    const auto rmv = host(rm), hmv = host(hm);
    for (std::size_t i = 0; i < rmv.size(); ++i) EXPECT_EQ(hmv[i], round_to(half(), rmv[i])) << i;
    expect_rounded(host(hy), host(ry), "dropout y");
    // Backward (mul) by the same stored mask.
    const auto dyv = values(s);
    Tensor rdx = Tensor::empty(s, ctx_), hdx = Tensor::empty(s, ctx_, half());
    be_.mul(ctx_, f32(dyv, s), f32(hmv, s), rdx);
    be_.mul(ctx_, hf(dyv, s), hm, hdx);
    expect_rounded(host(hdx), host(rdx), "mul");
  }
}

// The elementwise kernels split their work into chunks (kernels/cpu/simd_clones.hpp) across
// threads: at sizes past the parallel threshold and not a multiple of a chunk, every element still
// gets what the one-at-a-time definition gives. f32 against that definition bit for bit (ReLU's
// select, dropout's Philox draw at each element's own offset, the cast's widening); halves against
// f32 rounded once.
TEST_P(HalfOps, LargeElementwiseOpsMatchTheDefinitionAcrossChunks) {
  const Shape s{70001};
  const auto xv = values(s), dyv = values(s);
  // ReLU forward and backward.
  Tensor ry = Tensor::empty(s, ctx_), hy = Tensor::empty(s, ctx_, half());
  be_.activation_forward(ctx_, Activation::relu, 0.0f, f32(xv, s), ry);
  be_.activation_forward(ctx_, Activation::relu, 0.0f, hf(xv, s), hy);
  Tensor rdx = Tensor::empty(s, ctx_), hdx = Tensor::empty(s, ctx_, half());
  be_.activation_backward(ctx_, Activation::relu, 0.0f, f32(xv, s), Tensor(), f32(dyv, s), rdx);
  be_.activation_backward(ctx_, Activation::relu, 0.0f, hf(xv, s), Tensor(), hf(dyv, s), hdx);
  const auto ryv = host(ry), rdxv = host(rdx);
  for (std::size_t i = 0; i < xv.size(); ++i) {
    ASSERT_EQ(ryv[i], xv[i] > 0.0f ? xv[i] : 0.0f) << "relu forward [" << i << "]";
    ASSERT_EQ(rdxv[i], xv[i] > 0.0f ? dyv[i] : 0.0f) << "relu backward [" << i << "]";
  }
  EXPECT_EQ(host(hy), ryv) << "relu of half-representable values is exact";
  EXPECT_EQ(host(hdx), rdxv);
  // Dropout: the mask at element i is drawn from counter offset + i alone (philox::grouped_uniform).
  const float p = 0.25f, keep = 1.0f / (1.0f - p);
  Tensor rm = Tensor::empty(s, ctx_), hm = Tensor::empty(s, ctx_, half());
  be_.dropout_forward(ctx_, f32(xv, s), p, 5, 1000, ry, rm);
  be_.dropout_forward(ctx_, hf(xv, s), p, 5, 1000, hy, hm);
  const auto rmv = host(rm), dropped = host(ry), hmv = host(hm);
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const float m = philox::grouped_uniform(1000 + i, 5) >= p ? keep : 0.0f;
    ASSERT_EQ(rmv[i], m) << "dropout mask [" << i << "]";
    ASSERT_EQ(dropped[i], xv[i] * m) << "dropout y [" << i << "]";
    ASSERT_EQ(hmv[i], round_to(half(), m)) << "half dropout mask [" << i << "]";
  }
  expect_rounded(host(hy), dropped, "dropout y");
  // Casts both ways: f32 -> half rounds each value once, half -> f32 is exact.
  const auto wide = values(s, -1e4f, 1e4f);
  std::vector<float> raw(wide.size());
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = wide[i] * 1.0009765625f;  // off the half grid
  Tensor narrowed = Tensor::empty(s, ctx_, half()), back = Tensor::empty(s, ctx_);
  be_.cast(ctx_, f32(raw, s), narrowed);
  be_.cast(ctx_, narrowed, back);
  const auto backv = host(back);
  for (std::size_t i = 0; i < raw.size(); ++i) ASSERT_EQ(backv[i], round_to(half(), raw[i])) << "cast [" << i << "]";
}

// Max pooling at sizes with many planes in parallel, odd rows and columns, the 2x2 fast paths and
// ResNet's 3x3 stride-2 padded stem pool: halves pick the same maxima and argmax as f32, and their
// gradients are f32's rounded once.
// An odd and an even width (the CPU's 2x2 path reads an even-width bf16 plane in 32-bit pairs),
// NaNs included in the even one.
TEST_P(HalfOps, LargeMaxPoolMatchesF32) {
  for (const Shape& xs : {Shape{2, 16, 37, 29}, Shape{2, 16, 37, 28}}) check_large_max_pool(xs, xs[3] % 2 == 0);
}

void HalfOps::check_large_max_pool(const Shape& xs, bool nans) {
  SCOPED_TRACE(fmt::format("x={}", xs));
  auto xv = values(xs);
  for (std::size_t i = 0; i < xv.size(); i += 97) xv[i] = xv[(i + 1) % xv.size()];  // some ties
  if (nans)
    for (std::size_t i = 5; i < xv.size(); i += 89) xv[i] = kNaN;
  for (const Pool2dParams p : {Pool2dParams{2, 2, 2, 2, 0, 0}, Pool2dParams{3, 3, 2, 2, 1, 1}}) {
    const Shape ys = pool2d_output_shape(xs, p);
    const auto dyv = values(ys);
    Tensor ry = Tensor::empty(ys, ctx_), ra = Tensor::empty(ys, ctx_, DType::i32);
    Tensor hy = Tensor::empty(ys, ctx_, half()), ha = Tensor::empty(ys, ctx_, DType::i32);
    be_.maxpool2d_forward(ctx_, f32(xv, xs), p, ry, ra);
    be_.maxpool2d_forward(ctx_, hf(xv, xs), p, hy, ha);
    const std::vector<float> got = host(hy), want = host(ry);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << "[" << i << "]";
      } else {
        EXPECT_EQ(got[i], want[i]) << "[" << i << "]: a maximum is exact";
      }
    }
    EXPECT_EQ(ha.to_int_vector(ctx_), ra.to_int_vector(ctx_));
    const std::vector<float> stale(static_cast<std::size_t>(xs.numel()), 3.0f);  // every input overwritten
    Tensor rdx = f32(stale, xs), hdx = hf(stale, xs);
    be_.maxpool2d_backward(ctx_, f32(dyv, ys), ra, p, rdx);
    be_.maxpool2d_backward(ctx_, hf(dyv, ys), ha, p, hdx);
    expect_rounded(host(hdx), host(rdx), "maxpool backward");
  }
}

TEST_P(HalfOps, FillAxpyScale) {
  const Shape s{3, 41};
  Tensor x = Tensor::empty(s, ctx_, half());
  be_.fill(ctx_, x, 0.1f);
  EXPECT_EQ(host(x), std::vector<float>(s.numel(), round_to(half(), 0.1f)));

  const auto xv = values(s), yv = values(s);
  Tensor ref = f32(yv, s), y = hf(yv, s);
  be_.axpy(ctx_, -0.375f, f32(xv, s), ref);
  be_.axpy(ctx_, -0.375f, hf(xv, s), y);
  expect_rounded(host(y), host(ref), "axpy");

  Tensor rs = f32(xv, s), hs = hf(xv, s);
  be_.scale(ctx_, rs, 0.3f);
  be_.scale(ctx_, hs, 0.3f);
  expect_rounded(host(hs), host(rs), "scale");
}

// ---- Gram, losses, reductions ----

TEST_P(HalfOps, Gram) {
  const Shape xs{2, 5, 6, 7};
  const auto xv = values(xs);
  const Shape gs{2, 5, 5};
  Tensor ref = Tensor::empty(gs, ctx_), mag = Tensor::empty(gs, ctx_), g = Tensor::empty(gs, ctx_);
  be_.gram_forward(ctx_, f32(xv, xs), ref);
  be_.gram_forward(ctx_, f32(abs(xv), xs), mag);
  be_.gram_forward(ctx_, hf(xv, xs), g);
  expect_reduced(host(g), host(ref), host(mag), 42.0, "gram_forward");
  const auto gv = host(g);
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t i = 0; i < 5; ++i)
      for (std::int64_t j = 0; j < i; ++j) EXPECT_EQ(gv[(n * 5 + i) * 5 + j], gv[(n * 5 + j) * 5 + i]) << "symmetric";

  const auto dgv = values(gs);
  Tensor rdx = Tensor::empty(xs, ctx_), mdx = Tensor::empty(xs, ctx_), dx = Tensor::empty(xs, ctx_, half());
  be_.gram_backward(ctx_, f32(xv, xs), f32(dgv, gs), rdx);
  be_.gram_backward(ctx_, f32(abs(xv), xs), f32(abs(dgv), gs), mdx);
  be_.gram_backward(ctx_, hf(xv, xs), f32(dgv, gs), dx);
  expect_reduced(host(dx), host(rdx), host(mdx), 10.0, "gram_backward");
}

TEST_P(HalfOps, RegressionLosses) {
  const Shape s{4, 33};
  const auto av = values(s), bv = values(s);
  Tensor ref = Tensor::empty({1}, ctx_), loss = Tensor::empty({1}, ctx_);
  // The losses sum in double from exactly the same values: the f32 result itself.
  be_.mse_loss_forward(ctx_, f32(av, s), f32(bv, s), ref);
  be_.mse_loss_forward(ctx_, hf(av, s), hf(bv, s), loss);
  EXPECT_EQ(host(loss), host(ref));
  be_.l1_loss_forward(ctx_, f32(av, s), f32(bv, s), ref);
  be_.l1_loss_forward(ctx_, hf(av, s), hf(bv, s), loss);
  EXPECT_EQ(host(loss), host(ref));

  Tensor rda = Tensor::empty(s, ctx_), da = Tensor::empty(s, ctx_, half());
  be_.mse_loss_backward(ctx_, f32(av, s), f32(bv, s), 3.0f, rda);
  be_.mse_loss_backward(ctx_, hf(av, s), hf(bv, s), 3.0f, da);
  expect_rounded(host(da), host(rda), "mse_loss_backward");
  be_.l1_loss_backward(ctx_, f32(av, s), f32(bv, s), 3.0f, rda);
  be_.l1_loss_backward(ctx_, hf(av, s), hf(bv, s), 3.0f, da);
  expect_rounded(host(da), host(rda), "l1_loss_backward");
}

TEST_P(HalfOps, Reductions) {
  const Shape s{6, 10};
  auto xv = values(s);
  xv[13] = 5.5f;  // a unique maximum
  Tensor ref = Tensor::empty({1}, ctx_), out = Tensor::empty({1}, ctx_);
  be_.sum(ctx_, f32(xv, s), ref);
  be_.sum(ctx_, hf(xv, s), out);
  EXPECT_EQ(host(out), host(ref));
  be_.mean(ctx_, f32(xv, s), ref);
  be_.mean(ctx_, hf(xv, s), out);
  EXPECT_EQ(host(out), host(ref));
  be_.max(ctx_, hf(xv, s), out);
  EXPECT_EQ(host(out)[0], 5.5f);

  Tensor ra = Tensor::empty({6}, ctx_, DType::i32), ha = Tensor::empty({6}, ctx_, DType::i32);
  be_.argmax_rows(ctx_, f32(xv, s), ra);
  be_.argmax_rows(ctx_, hf(xv, s), ha);
  EXPECT_EQ(ha.to_int_vector(ctx_), ra.to_int_vector(ctx_));
  EXPECT_EQ(ha.to_int_vector(ctx_)[1], 3);

  std::vector<std::int32_t> labels = ra.to_int_vector(ctx_);
  labels[0] = (labels[0] + 1) % 10;  // one wrong of six
  Tensor lab = Tensor::from_host(std::span<const std::int32_t>(labels), {6}, ctx_);
  be_.accuracy(ctx_, hf(xv, s), lab, out);
  EXPECT_FLOAT_EQ(host(out)[0], 5.0f / 6.0f);
}

// ---- per-channel ops ----

TEST_P(HalfOps, ChannelAffine) {
  const Shape s{2, 3, 4, 5};
  const auto xv = values(s), sv = values(Shape{3}), bv = values(Shape{3});
  Tensor ref = Tensor::empty(s, ctx_), y = Tensor::empty(s, ctx_, half());
  be_.channel_affine(ctx_, f32(xv, s), f32(sv, {3}), f32(bv, {3}), ref);
  be_.channel_affine(ctx_, hf(xv, s), f32(sv, {3}), f32(bv, {3}), y);
  expect_rounded(host(y), host(ref), "channel_affine");
  be_.channel_affine_backward(ctx_, f32(xv, s), f32(sv, {3}), ref);
  be_.channel_affine_backward(ctx_, hf(xv, s), f32(sv, {3}), y);
  expect_rounded(host(y), host(ref), "channel_affine_backward");
}

TEST_P(HalfOps, BatchNorm) {
  const Shape s{3, 4, 5, 6}, c{4};
  const auto xv = values(s, -1.0f, 3.0f), gv = values(c), bv = values(c), dyv = values(s);
  const std::vector<float> rm0{0.1f, 0.2f, 0.3f, 0.4f}, rv0{1.0f, 2.0f, 0.5f, 1.5f};
  Tensor rrm = f32(rm0, c), rrv = f32(rv0, c), rsm = Tensor::empty(c, ctx_), rsi = Tensor::empty(c, ctx_);
  Tensor hrm = f32(rm0, c), hrv = f32(rv0, c), hsm = Tensor::empty(c, ctx_), hsi = Tensor::empty(c, ctx_);
  Tensor ry = Tensor::empty(s, ctx_), hy = Tensor::empty(s, ctx_, half());
  be_.batchnorm_forward_train(ctx_, f32(xv, s), f32(gv, c), f32(bv, c), 1e-5f, 0.1f, rrm, rrv, ry, rsm, rsi);
  be_.batchnorm_forward_train(ctx_, hf(xv, s), f32(gv, c), f32(bv, c), 1e-5f, 0.1f, hrm, hrv, hy, hsm, hsi);
  expect_rounded(host(hy), host(ry), "batchnorm_forward_train y");
  // Statistics are f32, summed in double from the same values: the f32 results themselves.
  EXPECT_EQ(host(hsm), host(rsm));
  EXPECT_EQ(host(hsi), host(rsi));
  EXPECT_EQ(host(hrm), host(rrm));
  EXPECT_EQ(host(hrv), host(rrv));

  be_.batchnorm_forward_eval(ctx_, f32(xv, s), f32(gv, c), f32(bv, c), rrm, rrv, 1e-5f, ry);
  be_.batchnorm_forward_eval(ctx_, hf(xv, s), f32(gv, c), f32(bv, c), hrm, hrv, 1e-5f, hy);
  expect_rounded(host(hy), host(ry), "batchnorm_forward_eval y");

  Tensor rdx = Tensor::empty(s, ctx_), hdx = Tensor::empty(s, ctx_, half());
  Tensor rdg = f32(gv, c), rdb = f32(bv, c), hdg = f32(gv, c), hdb = f32(bv, c);
  be_.batchnorm_backward(ctx_, f32(xv, s), f32(dyv, s), f32(gv, c), rsm, rsi, 1e-5f, rdx, rdg, rdb);
  be_.batchnorm_backward(ctx_, hf(xv, s), hf(dyv, s), f32(gv, c), hsm, hsi, 1e-5f, hdx, hdg, hdb);
  expect_rounded(host(hdx), host(rdx), "batchnorm_backward dx");
  EXPECT_EQ(host(hdg), host(rdg));
  EXPECT_EQ(host(hdb), host(rdb));
}

// ---- the front refuses mixed dtypes, naming the op and both dtypes ----

TEST_P(HalfOps, MixedDtypesAreRefused) {
  const Conv2dParams p{1, 1, 1, 1, 1, 1};
  Tensor x = Tensor::zeros({1, 2, 4, 4}, ctx_, half()), w32 = Tensor::zeros({3, 2, 3, 3}, ctx_);
  Tensor y = Tensor::empty({1, 3, 4, 4}, ctx_, half());
  const std::string h(dtype_name(half()));
  EXPECT_TRUE(contains(error_message([&] { be_.conv2d_forward(ctx_, x, w32, p, y); }),
                       "conv2d_forward: w is f32 but x is " + h + "; they must match"));
  // dw may be f32 or the inputs' dtype, never the other half format.
  const DType other = half() == DType::bf16 ? DType::f16 : DType::bf16;
  Tensor dw = Tensor::empty({3, 2, 3, 3}, ctx_, other);
  EXPECT_TRUE(
      contains(error_message([&] { be_.conv2d_backward_filter(ctx_, x, y, p, dw, false); }),
               "conv2d_backward_filter: dw is " + std::string(dtype_name(other)) + "; it must be f32 or x's " + h));
  Tensor a = Tensor::zeros({2, 2}, ctx_, half()), b32 = Tensor::zeros({2, 2}, ctx_), c = Tensor::empty({2, 2}, ctx_);
  EXPECT_TRUE(contains(error_message([&] { be_.gemm(ctx_, false, false, 1.0f, a, b32, 0.0f, c); }),
                       "gemm: b is f32 but a is " + h + "; they must match"));
  Tensor bias = Tensor::zeros({2}, ctx_, half());
  EXPECT_TRUE(contains(error_message([&] { be_.bias_add(ctx_, a, bias); }), "bias_add"));
  Tensor sy = Tensor::empty({2, 2}, ctx_, half());
  EXPECT_TRUE(contains(error_message([&] { be_.softmax_forward(ctx_, a, sy); }), "softmax_forward"));
}

std::string dtype_param_name(const ::testing::TestParamInfo<DType>& info) {
  return std::string(dtype_name(info.param));
}

INSTANTIATE_TEST_SUITE_P(HalfOps, HalfOps, ::testing::Values(DType::bf16, DType::f16), dtype_param_name);

}  // namespace
