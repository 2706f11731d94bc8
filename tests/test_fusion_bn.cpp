// Inference-time convolution + batch norm (+ residual) (+ ReLU) fusion: the fused op
// (Backend::conv2d_bn_forward) against the unfused ops it replaces, on the CPU under every
// convolution policy and on CUDA against the CPU; and the network's pass
// (models/network/fusion_bn.hpp): which chains it fuses, that fused and unfused inference agree on
// a small graph and on the zoo's ResNet-18, and that training is untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/layers/normalization.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/zoo/resnet.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::random_values;

CUDL_OP_COVERAGE(cuda_vs_cpu, "conv2d_bn");

struct Case {
  Shape x, w;
  Conv2dParams p;
};

std::vector<Case> cases() {
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  Conv2dParams strided;
  strided.stride_h = strided.stride_w = 2;
  strided.pad_h = strided.pad_w = 3;
  Conv2dParams odd;  // stride 2 that does not reach the last row (oneDNN: zero right padding)
  odd.stride_h = 2;
  return {{Shape{2, 16, 12, 12}, Shape{16, 16, 3, 3}, same},  // a Winograd candidate unfused
          {Shape{1, 3, 15, 15}, Shape{8, 3, 7, 7}, strided},  // ResNet's stem
          {Shape{2, 16, 6, 6}, Shape{32, 16, 1, 1}, Conv2dParams{}},
          {Shape{1, 4, 9, 9}, Shape{4, 4, 2, 2}, odd}};
}

// Batch norm's tensors for K channels: gamma of both signs, variances in [0.1, 2].
BatchNormEval random_bn(Context& ctx, std::int64_t k, unsigned seed) {
  const Shape s{k};
  return {Tensor::from_host(random_values(k, seed, -1.5f, 1.5f), s, ctx),
          Tensor::from_host(random_values(k, seed + 1), s, ctx),
          Tensor::from_host(random_values(k, seed + 2, -2.0f, 2.0f), s, ctx),
          Tensor::from_host(random_values(k, seed + 3, 0.1f, 2.0f), s, ctx), 1e-5f};
}

// The five unfused ops, as the network runs them layer by layer.
Tensor unfused(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const BatchNormEval& bn,
               const Conv2dParams& p, const Tensor& residual, bool relu) {
  Backend& b = ctx.backend();
  Tensor conv = Tensor::empty(conv2d_output_shape(x.shape(), w.shape(), p), ctx, x.dtype());
  b.conv2d_forward(ctx, x, w, p, conv);
  if (bias.defined()) b.bias_add(ctx, conv, bias);
  Tensor y = Tensor::empty(conv.shape(), ctx, conv.dtype());
  b.batchnorm_forward_eval(ctx, conv, bn.gamma, bn.beta, bn.running_mean, bn.running_var, bn.eps, y);
  if (residual.defined()) b.axpy(ctx, 1.0f, residual, y);
  if (relu) b.activation_forward(ctx, Activation::relu, 0.0f, y, y);
  return y;
}

Tensor fused(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const BatchNormEval& bn,
             const Conv2dParams& p, const Tensor& residual, bool relu) {
  Tensor y = Tensor::empty(conv2d_output_shape(x.shape(), w.shape(), p), ctx, x.dtype());
  ctx.backend().conv2d_bn_forward(ctx, x, w, bias, bn, p, residual, relu, y);
  return y;
}

// The tolerance, derived: with |x|, |w| <= 1 a convolution output sums n = C*R*S products, so
// either path's f32 accumulation (in any order, or through Winograd's transforms, whose error
// oneDNN keeps within a few times that) is off by at most about n * eps * n; batch norm scales that
// by |scale| <= 1.5 / sqrt(0.1) < 5, and the folded x * scale + shift against the unfused
// (x - mean) * scale + beta in double differs by a few eps of |x * scale| + |mean * scale| + |beta|
// (< 5n + 11). With the residual's add and the margin for Winograd: 8 * eps * n * (n + 10).
float tolerance(const Shape& w) {
  const double n = static_cast<double>(w[1] * w[2] * w[3]);
  return static_cast<float>(8.0 * std::numeric_limits<float>::epsilon() * n * (n + 10.0));
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, float atol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_FALSE(got.empty()) << what;
  int misses = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= atol) && ++misses <= 5)
      ADD_FAILURE() << what << " [" << i << "]: fused " << got[i] << " vs unfused " << want[i];
  EXPECT_EQ(misses, 0) << what;
}

TEST(FusedConvBn, MatchesTheUnfusedOpsUnderEveryCpuConvolutionPolicy) {
  for (CpuConv policy : {CpuConv::fastest, CpuConv::direct, CpuConv::im2col}) {
    Context ctx(Device::cpu());
    ctx.set_cpu_conv(policy);
    unsigned seed = 1;
    for (const Case& c : cases()) {
      const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
      const Tensor x = Tensor::from_host(random_values(c.x.numel(), seed++), c.x, ctx);
      const Tensor w = Tensor::from_host(random_values(c.w.numel(), seed++), c.w, ctx);
      const BatchNormEval bn = random_bn(ctx, c.w[0], seed += 4);
      const Tensor res = Tensor::from_host(random_values(ys.numel(), seed++, -2.0f, 2.0f), ys, ctx);
      for (int variant = 0; variant < 8; ++variant) {
        const bool with_bias = (variant & 1) != 0, with_res = (variant & 2) != 0, relu = (variant & 4) != 0;
        const Tensor bias = with_bias ? Tensor::from_host(random_values(c.w[0], seed++), Shape{c.w[0]}, ctx) : Tensor();
        const Tensor r = with_res ? res : Tensor();
        const std::string what = fmt::format("{} x={} w={} bias={} residual={} relu={}", cpu_conv_name(policy), c.x,
                                             c.w, with_bias, with_res, relu);
        const std::vector<float> got = fused(ctx, x, w, bias, bn, c.p, r, relu).to_vector(ctx);
        const std::vector<float> want = unfused(ctx, x, w, bias, bn, c.p, r, relu).to_vector(ctx);
        expect_close(got, want, tolerance(c.w), what);
        // The ReLU was applied where asked: zeros exactly where the unfused result has them.
        const auto zeros = std::count(want.begin(), want.end(), 0.0f);
        EXPECT_EQ(zeros > 0, relu) << what;
        for (std::size_t i = 0; i < got.size(); ++i) {
          if (want[i] == 0.0f) {
            EXPECT_EQ(got[i], 0.0f) << what << " [" << i << "]";
          }
        }
      }
    }
  }
}

TEST(FusedConvBn, NaNAndEmptyInputsMeanWhatTheUnfusedOpsMean) {
  Context ctx(Device::cpu());
  const Case c = cases()[2];  // 1x1: a NaN reaches one output position per channel
  std::vector<float> xv = random_values(c.x.numel(), 5);
  xv[7] = std::numeric_limits<float>::quiet_NaN();
  const Tensor x = Tensor::from_host(xv, c.x, ctx);
  const Tensor w = Tensor::from_host(random_values(c.w.numel(), 6), c.w, ctx);
  const BatchNormEval bn = random_bn(ctx, c.w[0], 7);
  const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
  const Tensor res = Tensor::from_host(random_values(ys.numel(), 8), ys, ctx);
  for (bool relu : {false, true}) {
    const std::vector<float> got = fused(ctx, x, w, Tensor(), bn, c.p, res, relu).to_vector(ctx);
    const std::vector<float> want = unfused(ctx, x, w, Tensor(), bn, c.p, res, relu).to_vector(ctx);
    ASSERT_EQ(got.size(), want.size());
    const auto nans = std::count_if(want.begin(), want.end(), [](float v) { return std::isnan(v); });
    EXPECT_EQ(nans, relu ? 0 : c.w[0]) << "relu=" << relu;  // the ReLU kernels map NaN to 0
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(want[i]))
        EXPECT_TRUE(std::isnan(got[i])) << "relu=" << relu << " [" << i << "]";
      else
        EXPECT_NEAR(got[i], want[i], tolerance(c.w)) << "relu=" << relu << " [" << i << "]";
    }
  }
  // No input channels: the convolution is 0, so y is batch norm's shift (+ residual, ReLU).
  const Tensor x0 = Tensor::zeros({1, 0, 3, 3}, ctx), w0 = Tensor::zeros({4, 0, 1, 1}, ctx);
  const BatchNormEval bn4 = random_bn(ctx, 4, 9);
  const Tensor r0 = Tensor::from_host(random_values(36, 10), Shape{1, 4, 3, 3}, ctx);
  const std::vector<float> got = fused(ctx, x0, w0, Tensor(), bn4, Conv2dParams{}, r0, true).to_vector(ctx);
  EXPECT_EQ(got, unfused(ctx, x0, w0, Tensor(), bn4, Conv2dParams{}, r0, true).to_vector(ctx));
  EXPECT_TRUE(std::any_of(got.begin(), got.end(), [](float v) { return v > 0.0f; }));
  // No batch: nothing to write, and nothing fails.
  Tensor empty = Tensor::empty({0, 32, 6, 6}, ctx);
  ctx.backend().conv2d_bn_forward(ctx, Tensor::zeros({0, 16, 6, 6}, ctx), w, Tensor(), bn, c.p, Tensor(), true, empty);
  EXPECT_EQ(empty.numel(), 0);
}

TEST(FusedConvBn, HalfPrecisionIsTheUnfusedComposition) {
  Context ctx(Device::cpu());
  const Case c = cases()[0];
  const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
  const BatchNormEval bn = random_bn(ctx, c.w[0], 11);
  for (DType t : {DType::bf16, DType::f16}) {
    const Tensor x = Tensor::from_host(random_values(c.x.numel(), 3), c.x, ctx, t);
    const Tensor w = Tensor::from_host(random_values(c.w.numel(), 4), c.w, ctx, t);
    const Tensor r = Tensor::from_host(random_values(ys.numel(), 5), ys, ctx, t);
    const Tensor got = fused(ctx, x, w, Tensor(), bn, c.p, r, true);
    EXPECT_EQ(got.dtype(), t);
    EXPECT_EQ(got.to_vector(ctx), unfused(ctx, x, w, Tensor(), bn, c.p, r, true).to_vector(ctx)) << dtype_name(t);
  }
}

TEST(FusedConvBn, BadArgumentsNameTheFusedOp) {
  Context ctx(Device::cpu());
  const Tensor x = Tensor::zeros({1, 3, 5, 5}, ctx), w = Tensor::zeros({4, 3, 3, 3}, ctx);
  Tensor y = Tensor::zeros({1, 4, 3, 3}, ctx);
  BatchNormEval bn = random_bn(ctx, 4, 1);
  bn.running_var = Tensor::zeros({5}, ctx);
  cudl::testing::expect_error(
      [&] { ctx.backend().conv2d_bn_forward(ctx, x, w, Tensor(), bn, Conv2dParams{}, Tensor(), true, y); },
      {"conv2d_bn_forward", "running_var=[5]", "4 channels"});
  bn = random_bn(ctx, 4, 1);
  const Tensor wrong = Tensor::zeros({1, 4, 5, 5}, ctx);
  cudl::testing::expect_error(
      [&] { ctx.backend().conv2d_bn_forward(ctx, x, w, Tensor(), bn, Conv2dParams{}, wrong, true, y); },
      {"conv2d_bn_forward", "residual"});
  bn.eps = -1.0f;
  cudl::testing::expect_error(
      [&] { ctx.backend().conv2d_bn_forward(ctx, x, w, Tensor(), bn, Conv2dParams{}, Tensor(), false, y); },
      {"conv2d_bn_forward", "eps=-1"});
}

// The CUDA op against the CPU's: skips visibly without a GPU.
TEST(FusionCudaVsCpu, FusedConvBnMatchesTheCpu) {
  CUDL_REQUIRE_CUDA();
  Context cpu(Device::cpu());
  Context gpu(Device::cuda(0));
  unsigned seed = 60;
  for (const Case& c : cases()) {
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    const std::vector<float> xv = random_values(c.x.numel(), seed++), wv = random_values(c.w.numel(), seed++);
    const std::vector<float> rv = random_values(ys.numel(), seed++);
    const unsigned bn_seed = seed += 4;
    for (bool with_res : {false, true}) {
      const auto on = [&](Context& ctx) {
        const Tensor r = with_res ? Tensor::from_host(rv, ys, ctx) : Tensor();
        return fused(ctx, Tensor::from_host(xv, c.x, ctx), Tensor::from_host(wv, c.w, ctx), Tensor(),
                     random_bn(ctx, c.w[0], bn_seed), c.p, r, true)
            .to_vector(ctx);
      };
      expect_close(on(gpu), on(cpu), tolerance(c.w), fmt::format("x={} w={} residual={}", c.x, c.w, with_res));
    }
  }
}

}  // namespace
