// Convolution + bias + ReLU fusion: the fused op (Backend::conv2d_bias_relu_forward) against the
// three unfused ops it replaces, on the CPU under every convolution policy and on CUDA against the
// CPU; and the network's fusion pass (models/network/fusion.hpp): which layers it fuses, and that
// a fused network's outputs and gradients are the unfused network's to float rounding, in
// training and inference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/models/network/sequential.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::random_values;

CUDL_OP_COVERAGE(cuda_vs_cpu, "conv2d_bias_relu");

struct ConvCase {
  Shape x, w;
  Conv2dParams p;
};

std::vector<ConvCase> conv_cases() {
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  Conv2dParams strided;
  strided.stride_h = 2;
  strided.stride_w = 3;
  strided.pad_w = 1;
  Conv2dParams dilated;
  dilated.pad_h = dilated.pad_w = 2;
  dilated.dilation_h = dilated.dilation_w = 2;
  return {{Shape{2, 3, 9, 11}, Shape{4, 3, 3, 3}, same},
          {Shape{2, 16, 12, 12}, Shape{16, 16, 3, 3}, same},  // a Winograd candidate under `fastest`
          {Shape{2, 3, 9, 11}, Shape{4, 3, 3, 2}, strided},
          {Shape{1, 2, 10, 8}, Shape{3, 2, 3, 3}, dilated},
          {Shape{3, 16, 6, 6}, Shape{8, 16, 1, 1}, Conv2dParams{}},
          {Shape{4, 1, 12, 10}, Shape{8, 1, 3, 3}, Conv2dParams{}}};  // one input channel (MNIST's first layer)
}

// |a - b| <= atol + rtol |b| elementwise; counts and reports the first few misses.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, float atol, float rtol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int misses = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i])) && ++misses <= 5)
      ADD_FAILURE() << what << " [" << i << "]: " << a[i] << " vs " << b[i];
  EXPECT_EQ(misses, 0) << what;
}

// relu(conv(x, w) + bias) through the three unfused ops.
Tensor unfused(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  Tensor y = Tensor::empty(conv2d_output_shape(x.shape(), w.shape(), p), ctx, x.dtype());
  ctx.backend().conv2d_forward(ctx, x, w, p, y);
  if (bias.defined()) ctx.backend().bias_add(ctx, y, bias);
  Tensor r = Tensor::empty(y.shape(), ctx, y.dtype());
  ctx.backend().activation_forward(ctx, Activation::relu, 0.0f, y, r);
  return r;
}

Tensor fused(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  Tensor y = Tensor::empty(conv2d_output_shape(x.shape(), w.shape(), p), ctx, x.dtype());
  ctx.backend().conv2d_bias_relu_forward(ctx, x, w, bias, p, y);
  return y;
}

TEST(FusedConvBiasRelu, MatchesTheUnfusedOpsUnderEveryCpuConvolutionPolicy) {
  for (CpuConv policy : {CpuConv::fastest, CpuConv::direct, CpuConv::im2col}) {
    Context ctx(Device::cpu());
    ctx.set_cpu_conv(policy);
    unsigned seed = 1;
    for (const ConvCase& c : conv_cases()) {
      for (bool with_bias : {true, false}) {
        const std::string what = fmt::format("{} x={} w={} bias={}", cpu_conv_name(policy), c.x, c.w, with_bias);
        const Tensor x = Tensor::from_host(random_values(c.x.numel(), seed++), c.x, ctx);
        const Tensor w = Tensor::from_host(random_values(c.w.numel(), seed++), c.w, ctx);
        const Tensor b = with_bias ? Tensor::from_host(random_values(c.w[0], seed++), Shape{c.w[0]}, ctx) : Tensor();
        const std::vector<float> got = fused(ctx, x, w, b, c.p).to_vector(ctx);
        const std::vector<float> want = unfused(ctx, x, w, b, c.p).to_vector(ctx);
        expect_close(got, want, 1e-5f, 1e-4f, what);
        // The ReLU was applied (not only the convolution): no negatives, and zeros where the
        // unfused result has them, among a fair share of both signs before it.
        EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float v) { return v >= 0.0f; })) << what;
        const auto zeros = std::count(want.begin(), want.end(), 0.0f);
        EXPECT_GT(zeros, 0) << what;
        EXPECT_LT(zeros, static_cast<std::ptrdiff_t>(want.size())) << what;
        for (std::size_t i = 0; i < got.size(); ++i) {
          if (want[i] == 0.0f) {
            EXPECT_EQ(got[i], 0.0f) << what << " [" << i << "]";
          }
        }
      }
    }
  }
}

// A half fused op where this CPU has a native kernel for it (bf16 with AVX-512 BF16 or AMX) is one
// oneDNN primitive: f32 sums and bias, ReLU, y rounded once. It must then be the f32 result of
// the same (half) inputs rounded once, at most half a unit in the last place of the 7- or 10-bit
// stored mantissa off (plus the f32 sums' own order), and no further from it than the unfused ops,
// which round twice (after the convolution and after the bias). Without a native kernel (bf16 on
// AVX2) the op runs the f32 one on widened copies and rounds once too: the same bound.
TEST(FusedConvBiasRelu, HalfPrecisionRoundsTheF32ResultOnce) {
  Context ctx(Device::cpu());
  ctx.set_cpu_conv(CpuConv::direct);  // the f32 reference without Winograd's larger rounding error
  for (DType t : {DType::bf16, DType::f16}) {
    // Round to nearest is off by at most half a unit in the last place: 2^-8 of the value for
    // bf16's 7 stored mantissa bits, 2^-11 for f16's 10.
    const float half_ulp = t == DType::bf16 ? 0x1p-8f : 0x1p-11f;
    unsigned seed = 30;
    const std::vector<ConvCase> cases = conv_cases();
    for (const ConvCase& c : cases) {
      const std::string what = fmt::format("{} x={} w={}", dtype_name(t), c.x, c.w);
      const Tensor x = Tensor::from_host(random_values(c.x.numel(), seed++), c.x, ctx, t);
      const Tensor w = Tensor::from_host(random_values(c.w.numel(), seed++), c.w, ctx, t);
      const Tensor b = Tensor::from_host(random_values(c.w[0], seed++), Shape{c.w[0]}, ctx);  // f32, as bias_add's
      const Tensor got = fused(ctx, x, w, b, c.p);
      EXPECT_EQ(got.dtype(), t) << what;
      const std::vector<float> g = got.to_vector(ctx), composed = unfused(ctx, x, w, b, c.p).to_vector(ctx);
      // The exact inputs (halves widen exactly) through the f32 fused op.
      const Tensor x32 = Tensor::from_host(x.to_vector(ctx), c.x, ctx),
                   w32 = Tensor::from_host(w.to_vector(ctx), c.w, ctx);
      const std::vector<float> ref = fused(ctx, x32, w32, b, c.p).to_vector(ctx);
      ASSERT_EQ(g.size(), ref.size()) << what;
      int misses = 0;
      double fused_error = 0, composed_error = 0;
      for (std::size_t i = 0; i < g.size(); ++i) {
        if (!(g[i] >= 0.0f && std::fabs(g[i] - ref[i]) <= 1e-5f + half_ulp * std::fabs(ref[i])) && ++misses <= 5)
          ADD_FAILURE() << what << " [" << i << "]: " << g[i] << " vs f32 " << ref[i];
        fused_error += std::fabs(g[i] - ref[i]);
        composed_error += std::fabs(composed[i] - ref[i]);
      }
      EXPECT_EQ(misses, 0) << what;
      EXPECT_LE(fused_error, composed_error * 1.01 + 1e-4) << what;
    }
  }
}

TEST(FusedConvBiasRelu, BadArgumentsNameTheFusedOp) {
  Context ctx(Device::cpu());
  const Tensor x = Tensor::zeros({1, 3, 5, 5}, ctx), w = Tensor::zeros({4, 3, 3, 3}, ctx);
  Tensor y = Tensor::zeros({1, 4, 3, 3}, ctx);
  cudl::testing::expect_error(
      [&] { ctx.backend().conv2d_bias_relu_forward(ctx, x, w, Tensor::zeros({5}, ctx), Conv2dParams{}, y); },
      {"conv2d_bias_relu_forward", "bias=[5]", "4 channels"});
  Tensor wrong = Tensor::zeros({1, 4, 5, 5}, ctx);
  cudl::testing::expect_error(
      [&] { ctx.backend().conv2d_bias_relu_forward(ctx, x, w, Tensor(), Conv2dParams{}, wrong); },
      {"conv2d_bias_relu_forward", "y"});
}

// The CUDA op against the CPU's (which the test above ties to the unfused ops): skips visibly
// without a GPU; tools/gpu-check.sh's CUDA filter (*Cuda*) runs it.
TEST(FusionCudaVsCpu, FusedConvBiasReluMatchesTheCpu) {
  CUDL_REQUIRE_CUDA();
  Context cpu(Device::cpu());
  Context gpu(Device::cuda(0));
  for (ConvSearch search : {ConvSearch::heuristic, ConvSearch::measured}) {
    gpu.set_conv_search(search);
    unsigned seed = 40;
    for (const ConvCase& c : conv_cases()) {
      for (bool with_bias : {true, false}) {
        const std::string what = fmt::format("{} x={} w={} bias={}", conv_search_name(search), c.x, c.w, with_bias);
        const std::vector<float> xv = random_values(c.x.numel(), seed++), wv = random_values(c.w.numel(), seed++);
        const std::vector<float> bv = random_values(c.w[0], seed++);
        const auto on = [&](Context& ctx) {
          const Tensor b = with_bias ? Tensor::from_host(bv, Shape{c.w[0]}, ctx) : Tensor();
          return fused(ctx, Tensor::from_host(xv, c.x, ctx), Tensor::from_host(wv, c.w, ctx), b, c.p).to_vector(ctx);
        };
        expect_close(on(gpu), on(cpu), 1e-4f, 1e-3f, what);  // the op table's `accumulated` class
      }
    }
  }
}

// The fused call passes y itself as the residual input z with alpha2 = 0 (kernels/cudnn/conv_fused.cpp):
// right only if cuDNN never reads z then, or 0 * NaN from a recycled pool block would poison the
// output. y starts as NaN here, in both layouts, so a GPU run shows which it is.
TEST(FusionCudaVsCpu, AnOutputHoldingNaNIsOverwrittenNotBlended) {
  CUDL_REQUIRE_CUDA();
  Context cpu(Device::cpu());
  Context gpu(Device::cuda(0));
  gpu.set_math_mode(MathMode::strict_fp32);
  unsigned seed = 70;
  for (const ConvCase& c : conv_cases()) {
    for (const MemoryFormat format : {MemoryFormat::contiguous, MemoryFormat::channels_last}) {
      const std::string what = fmt::format("x={} w={} {}", c.x, c.w, memory_format_name(format));
      const std::vector<float> xv = random_values(c.x.numel(), seed++), wv = random_values(c.w.numel(), seed++);
      const std::vector<float> bv = random_values(c.w[0], seed++);
      const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
      Tensor y = Tensor::full(ys, std::numeric_limits<float>::quiet_NaN(), gpu).to_format(gpu, format);
      gpu.backend().conv2d_bias_relu_forward(gpu, Tensor::from_host(xv, c.x, gpu).to_format(gpu, format),
                                             Tensor::from_host(wv, c.w, gpu), Tensor::from_host(bv, Shape{c.w[0]}, gpu),
                                             c.p, y);
      const std::vector<float> want = fused(cpu, Tensor::from_host(xv, c.x, cpu), Tensor::from_host(wv, c.w, cpu),
                                            Tensor::from_host(bv, Shape{c.w[0]}, cpu), c.p)
                                          .to_vector(cpu);
      expect_close(y.contiguous(gpu).to_vector(gpu), want, 1e-4f, 1e-3f, what);
    }
  }
}

}  // namespace
