// The CUDA backend in bf16 and fp16 against the CPU backend, op by op (issue 20). Inputs are drawn
// in f32 and rounded to the half format on the host, so both sides see the same values; the CUDA
// side runs in that format, the CPU side in f32 on the widened values (cpu_dtype() below: switch it
// to the half dtype once the CPU half paths are the oracle). Every op accumulates in f32 and rounds
// a half output once, so an elementwise half result is within the format's unit roundoff u of the
// f32 one (u = 2^-8 bf16, 2^-11 f16); f32 outputs of half inputs (losses, sums, Gram, GEMM into
// f32) agree to f32 accumulation error; cuDNN/cuBLAS results get a few u, scaled by the outputs'
// magnitude. Each test skips with "no CUDA device" where there is none. The suite name matches
// the GPU kit's CUDA filter (tools/gpu-check.sh: *Cuda*).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/op_table.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/cuda_vs_cpu_fixture.hpp"
#include "tests/op_coverage.hpp"

namespace {

// The ops this suite checks in bf16 and f16, by the op table's names (see test_op_table.cpp).
CUDL_OP_COVERAGE(cuda_vs_cpu_half, "activation", "mul", "axpy", "scale", "fill", "dropout", "cast", "bias_add",
                 "bias_grad", "channel_affine", "maxpool2d", "avgpool2d", "sum", "mean", "max", "mse_loss", "l1_loss",
                 "argmax_rows", "accuracy", "gemm", "gram", "conv2d", "batchnorm", "batchnorm_relu");

using namespace cudl;

using Tol = OpTolerance;
// One tensor on each side: c on the CPU (f32), g on the GPU (the half dtype, or f32 where the op
// table says so).
using cudl::testing::Both;

std::string name_of(DType t) { return t == DType::bf16 ? "bf16" : "f16"; }

// NaN on both sides agrees.
class CudaVsCpuHalf : public cudl::testing::CudaVsCpuTest<::testing::TestWithParam<DType>> {
 protected:
  CudaVsCpuHalf() : CudaVsCpuTest(cudl::testing::NanRule::matches_nan) {}

  DType half() const { return GetParam(); }
  // The CPU's dtype for the tensors the GPU holds in half (see the top).
  static DType cpu_dtype() { return DType::f32; }
  // The format's unit roundoff.
  float u() const { return half() == DType::bf16 ? 1.0f / 256.0f : 1.0f / 2048.0f; }
  // An elementwise result rounded once (plus f32 library ulps and f16 subnormals).
  Tol rounded() const { return {1e-6f, u() + 1e-5f}; }
  // An f32 result accumulated from half inputs (the same inputs on both sides).
  static Tol accumulated() { return {1e-4f, 1e-3f}; }

  // Values rounded to the half format and widened again: what both sides compute from.
  std::vector<float> uniform(std::int64_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) const {
    return values(n, seed, half(), lo, hi);
  }
  // Half on the GPU, the same (representable) values in cpu_dtype() on the CPU.
  Both half_from(const std::vector<float>& v, const Shape& s) {
    return {Tensor::from_host(v, s, cpu(), cpu_dtype()), Tensor::from_host(v, s, gpu(), half())};
  }
  Both half_random(const Shape& s, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    return half_from(uniform(s.numel(), seed, lo, hi), s);
  }
  Both f32_from(const std::vector<float>& v, const Shape& s) { return from(v, s); }
  Both half_zeros(const Shape& s) { return {Tensor::zeros(s, cpu(), cpu_dtype()), Tensor::zeros(s, gpu(), half())}; }
  Both f32_zeros(const Shape& s) { return zeros(s); }
  Both i32_zeros(const Shape& s) { return zeros(s, DType::i32); }

  // The fixture's checks, with the half dtype in the label.
  void expect_close(const Both& t, Tol tol, const std::string& what) {
    CudaVsCpuTest::expect_close(t, tol, what + " (" + name_of(half()) + ")");
  }
  void expect_equal_ints(const Both& t, const std::string& what) {
    expect_ints_equal(t, what + " (" + name_of(half()) + ")");
  }
  // A tolerance of `k` u relative to the largest |cpu| value (cuDNN/cuBLAS results in half).
  Tol scaled(const Both& t, float k) {
    float m = 0.0f;
    for (float v : t.c.to_vector(cpu())) m = std::max(m, std::fabs(v));
    return {k * u() * std::max(m, 1e-3f), k * u()};
  }
};

// Sizes that take the 16-byte vector path with and without a tail, and the scalar path (a view one
// element into its storage is not 16-byte aligned).
const std::vector<std::int64_t> kElementwiseSizes = {8, 1003, 4096};

TEST_P(CudaVsCpuHalf, Activations) {
  for (const std::int64_t n : kElementwiseSizes) {
    for (const Activation a :
         {Activation::relu, Activation::leaky_relu, Activation::sigmoid, Activation::tanh, Activation::relu6}) {
      const std::string what = std::string(activation_name(a)) + " n=" + std::to_string(n);
      const float range = a == Activation::relu6 ? 8.0f : 4.0f;  // relu6: both kinks, 0 and 6
      Both x = half_random(Shape{n}, 1, -range, range), y = half_zeros(Shape{n});
      on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.activation_forward(ctx, a, 0.1f, x.*s, y.*s); });
      expect_close(y, rounded(), what + " forward");
      // Backward from the GPU's (rounded) y on both sides, so only the gradient's own rounding differs.
      const std::vector<float> y_half = y.g.to_vector(gpu());
      Both ys = half_from(y_half, Shape{n});
      Both dy = half_random(Shape{n}, 2), dx = half_zeros(Shape{n});
      on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
        b.activation_backward(ctx, a, 0.1f, x.*s, ys.*s, dy.*s, dx.*s);
      });
      expect_close(dx, rounded(), what + " backward");
    }
  }
  // Unaligned views: the scalar path.
  Both x = half_random(Shape{1001}, 3), y = half_zeros(Shape{1001});
  Tensor xc = x.c.view(1, Shape{1000}), xg = x.g.view(1, Shape{1000});
  Tensor yc = y.c.view(1, Shape{1000}), yg = y.g.view(1, Shape{1000});
  cpu().backend().activation_forward(cpu(), Activation::relu, 0.0f, xc, yc);
  gpu().backend().activation_forward(gpu(), Activation::relu, 0.0f, xg, yg);
  expect_close(y, rounded(), "relu on an unaligned view");
}

TEST_P(CudaVsCpuHalf, ElementwiseBasics) {
  for (const std::int64_t n : kElementwiseSizes) {
    const std::string size = " n=" + std::to_string(n);
    Both x = half_random(Shape{n}, 4), y = half_random(Shape{n}, 5), out = half_zeros(Shape{n});
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.mul(ctx, x.*s, y.*s, out.*s); });
    expect_close(out, rounded(), "mul" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.axpy(ctx, 0.3f, x.*s, y.*s); });
    expect_close(y, rounded(), "axpy" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.scale(ctx, x.*s, -1.7f); });
    expect_close(x, rounded(), "scale" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.fill(ctx, out.*s, 0.1f); });
    expect_close(out, rounded(), "fill" + size);
  }
}

TEST_P(CudaVsCpuHalf, Dropout) {
  for (const std::int64_t n : kElementwiseSizes) {
    Both x = half_random(Shape{n}, 6), y = half_zeros(Shape{n}), mask = half_zeros(Shape{n});
    on_both(
        [&](Backend& b, Context& ctx, Tensor Both::*s) { b.dropout_forward(ctx, x.*s, 0.3f, 42, 7, y.*s, mask.*s); });
    expect_close(mask, rounded(), "dropout mask n=" + std::to_string(n));
    expect_close(y, rounded(), "dropout y n=" + std::to_string(n));
  }
}

TEST_P(CudaVsCpuHalf, CastMatchesTheCpuExactly) {
  for (const std::int64_t n : kElementwiseSizes) {
    std::vector<float> v(static_cast<std::size_t>(n));
    std::mt19937 rng(8);
    std::uniform_real_distribution<float> dist(-70000.0f, 70000.0f);
    for (float& x : v) x = dist(rng) * (dist(rng) > 0 ? 1.0f : 1e-6f);
    Both src = f32_from(v, Shape{n});
    Both dst{Tensor::zeros(Shape{n}, cpu(), half()), Tensor::zeros(Shape{n}, gpu(), half())};
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.cast(ctx, src.*s, dst.*s); });
    expect_close(dst, Tol{0.0f, 0.0f}, "cast f32 -> half n=" + std::to_string(n));
    Both back = f32_zeros(Shape{n});
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.cast(ctx, dst.*s, back.*s); });
    expect_close(back, Tol{0.0f, 0.0f}, "cast half -> f32 n=" + std::to_string(n));
  }
}

TEST_P(CudaVsCpuHalf, BiasAndChannelAffine) {
  // Plane sizes 1 ([N, C]), 49 (no whole packs: scalar) and 64 (vector).
  for (const Shape& shape : {Shape{5, 7}, Shape{2, 3, 7, 7}, Shape{2, 3, 8, 8}}) {
    const std::string what = " shape " + std::to_string(shape.numel());
    const std::int64_t c = shape[1];
    Both y = half_random(shape, 9), bias = f32_from(uniform(c, 10), Shape{c});
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.bias_add(ctx, y.*s, bias.*s); });
    expect_close(y, rounded(), "bias_add" + what);
    Both dbias = f32_from(uniform(c, 11), Shape{c});
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.bias_grad(ctx, y.*s, dbias.*s, true); });
    expect_close(dbias, Tol{1e-5f, 1e-5f}, "bias_grad" + what);
    Both scale = f32_from(uniform(c, 12), Shape{c}), shift = f32_from(uniform(c, 13), Shape{c});
    Both out = half_zeros(shape);
    on_both(
        [&](Backend& b, Context& ctx, Tensor Both::*s) { b.channel_affine(ctx, y.*s, scale.*s, shift.*s, out.*s); });
    expect_close(out, rounded(), "channel_affine" + what);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.channel_affine_backward(ctx, y.*s, scale.*s, out.*s); });
    expect_close(out, rounded(), "channel_affine_backward" + what);
  }
}

TEST_P(CudaVsCpuHalf, Pooling) {
  const Shape xs{2, 3, 9, 8};
  for (const Pool2dParams& p : {Pool2dParams{}, Pool2dParams{3, 3, 2, 2, 1, 1}}) {
    const Shape ys = pool2d_output_shape(xs, p);
    Both x = half_random(xs, 14), y = half_zeros(ys), argmax = i32_zeros(ys);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.maxpool2d_forward(ctx, x.*s, p, y.*s, argmax.*s); });
    expect_close(y, Tol{0.0f, 0.0f}, "maxpool forward");
    expect_equal_ints(argmax, "maxpool argmax");
    Both dy = half_random(ys, 15), dx = half_zeros(xs);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.maxpool2d_backward(ctx, dy.*s, argmax.*s, p, dx.*s); });
    expect_close(dx, rounded(), "maxpool backward");
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.avgpool2d_forward(ctx, x.*s, p, y.*s); });
    expect_close(y, rounded(), "avgpool forward");
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.avgpool2d_backward(ctx, dy.*s, p, dx.*s); });
    expect_close(dx, rounded(), "avgpool backward");
  }
}

TEST_P(CudaVsCpuHalf, ReductionsAndLosses) {
  for (const std::int64_t n : {std::int64_t{37}, std::int64_t{100003}}) {
    const std::string size = " n=" + std::to_string(n);
    Both x = half_random(Shape{n}, 16), out = f32_zeros(Shape{1});
    // The same half values summed in double on both sides.
    const Tol sum_tol{1e-6f, 1e-6f};
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.sum(ctx, x.*s, out.*s); });
    expect_close(out, sum_tol, "sum" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.mean(ctx, x.*s, out.*s); });
    expect_close(out, sum_tol, "mean" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.max(ctx, x.*s, out.*s); });
    expect_close(out, Tol{0.0f, 0.0f}, "max" + size);
    Both y = half_random(Shape{n}, 17), da = half_zeros(Shape{n});
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.mse_loss_forward(ctx, x.*s, y.*s, out.*s); });
    expect_close(out, sum_tol, "mse_loss_forward" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.l1_loss_forward(ctx, x.*s, y.*s, out.*s); });
    expect_close(out, sum_tol, "l1_loss_forward" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.mse_loss_backward(ctx, x.*s, y.*s, 1.5f, da.*s); });
    expect_close(da, Tol{1e-12f, u() + 1e-5f}, "mse_loss_backward" + size);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.l1_loss_backward(ctx, x.*s, y.*s, 1.5f, da.*s); });
    expect_close(da, Tol{1e-12f, u() + 1e-5f}, "l1_loss_backward" + size);
  }
  // Rows with ties (multiples of 0.25 are exact in both formats).
  std::vector<float> tied(64 * 10);
  std::mt19937 rng(18);
  std::uniform_int_distribution<int> dist(-4, 4);
  for (float& v : tied) v = 0.25f * static_cast<float>(dist(rng));
  Both logits = half_from(tied, Shape{64, 10}), arg = i32_zeros(Shape{64});
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.argmax_rows(ctx, logits.*s, arg.*s); });
  expect_equal_ints(arg, "argmax_rows");
  std::vector<std::int32_t> labels(64);
  for (auto& l : labels) l = dist(rng) + 4;
  Both lab{Tensor::from_host(std::span<const std::int32_t>(labels), Shape{64}, cpu()),
           Tensor::from_host(std::span<const std::int32_t>(labels), Shape{64}, gpu())};
  Both acc = f32_zeros(Shape{1});
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.accuracy(ctx, logits.*s, lab.*s, acc.*s); });
  expect_close(acc, Tol{0.0f, 0.0f}, "accuracy");
}

TEST_P(CudaVsCpuHalf, Gemm) {
  for (const bool ta : {false, true}) {
    for (const bool tb : {false, true}) {
      const std::int64_t m = 33, k = 70, n = 17;
      Both a = half_random(ta ? Shape{k, m} : Shape{m, k}, 19), b = half_random(tb ? Shape{n, k} : Shape{k, n}, 20);
      const std::string what = std::string("gemm ta=") + (ta ? "1" : "0") + " tb=" + (tb ? "1" : "0");
      // c f32: the products of the same half values, accumulated in f32.
      Both c32 = f32_from(uniform(m * n, 21), Shape{m, n});
      on_both(
          [&](Backend& be, Context& ctx, Tensor Both::*s) { be.gemm(ctx, ta, tb, 0.5f, a.*s, b.*s, 0.25f, c32.*s); });
      expect_close(c32, accumulated(), what + " into f32");
      // c in the half dtype: also rounded once.
      Both ch = half_random(Shape{m, n}, 22);
      on_both([&](Backend& be, Context& ctx, Tensor Both::*s) { be.gemm(ctx, ta, tb, 1.0f, a.*s, b.*s, 1.0f, ch.*s); });
      expect_close(ch, scaled(ch, 2.0f), what + " into half");
    }
  }
}

TEST_P(CudaVsCpuHalf, Gram) {
  const Shape xs{2, 5, 6, 7};
  Both x = half_random(xs, 23), g = f32_zeros(Shape{2, 5, 5});
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.gram_forward(ctx, x.*s, g.*s); });
  expect_close(g, accumulated(), "gram_forward");
  Both dg = f32_from(uniform(2 * 5 * 5, 24), Shape{2, 5, 5}), dx = half_zeros(xs);
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.gram_backward(ctx, x.*s, dg.*s, dx.*s); });
  // dg + dgᵀ is rounded to the half format before the GEMM, then dx once more.
  expect_close(dx, scaled(dx, 8.0f), "gram_backward");
}

TEST_P(CudaVsCpuHalf, Conv2d) {
  struct Case {
    Shape x, w;
    Conv2dParams p;
  };
  const Conv2dParams pad1{1, 1, 1, 1, 1, 1};
  const Conv2dParams strided{0, 0, 2, 2, 1, 1};
  const Conv2dParams two_groups{1, 1, 1, 1, 1, 1, 2}, depthwise{1, 1, 2, 2, 1, 1, 16};
  for (const Case& c :
       {Case{Shape{2, 3, 9, 9}, Shape{8, 3, 3, 3}, pad1}, Case{Shape{2, 16, 8, 8}, Shape{8, 16, 3, 3}, pad1},
        Case{Shape{1, 8, 11, 11}, Shape{16, 8, 1, 1}, strided}, Case{Shape{2, 16, 8, 8}, Shape{8, 8, 3, 3}, two_groups},
        Case{Shape{2, 16, 9, 9}, Shape{16, 1, 3, 3}, depthwise}}) {
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    Both x = half_random(c.x, 25), w = half_random(c.w, 26), y = half_zeros(ys);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.conv2d_forward(ctx, x.*s, w.*s, c.p, y.*s); });
    expect_close(y, scaled(y, 4.0f), "conv2d_forward");
    Both dy = half_random(ys, 27), dx = half_zeros(c.x);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.conv2d_backward_data(ctx, dy.*s, w.*s, c.p, dx.*s); });
    expect_close(dx, scaled(dx, 4.0f), "conv2d_backward_data");
    // dw in the half dtype, and in f32 (through the half scratch), overwritten and accumulated.
    Both dwh = half_zeros(c.w);
    on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
      b.conv2d_backward_filter(ctx, x.*s, dy.*s, c.p, dwh.*s, false);
    });
    expect_close(dwh, scaled(dwh, 4.0f), "conv2d_backward_filter into half");
    for (const bool accumulate : {false, true}) {
      Both dw = f32_from(uniform(c.w.numel(), 28), c.w);
      on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
        b.conv2d_backward_filter(ctx, x.*s, dy.*s, c.p, dw.*s, accumulate);
      });
      expect_close(dw, scaled(dw, 4.0f),
                   std::string("conv2d_backward_filter into f32") + (accumulate ? " (accumulate)" : ""));
    }
  }
}

TEST_P(CudaVsCpuHalf, Conv2dWithMeasuredAlgorithmSearch) {
  gpu().set_conv_search(ConvSearch::measured);
  const Conv2dParams pad1{1, 1, 1, 1, 1, 1};
  const Shape xs{4, 32, 16, 16}, ws{32, 32, 3, 3};
  const Shape ys = conv2d_output_shape(xs, ws, pad1);
  Both x = half_random(xs, 29), w = half_random(ws, 30), y = half_zeros(ys);
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) { b.conv2d_forward(ctx, x.*s, w.*s, pad1, y.*s); });
  expect_close(y, scaled(y, 4.0f), "conv2d_forward (measured)");
  Both dy = half_random(ys, 31), dw = f32_zeros(ws);
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
    b.conv2d_backward_filter(ctx, x.*s, dy.*s, pad1, dw.*s, true);
  });
  expect_close(dw, scaled(dw, 4.0f), "conv2d_backward_filter into f32 (measured, accumulate)");
}

TEST_P(CudaVsCpuHalf, BatchNorm) {
  const Shape xs{4, 3, 5, 6};
  const std::int64_t c = 3;
  Both x = half_random(xs, 32, -2.0f, 3.0f), y = half_zeros(xs);
  Both gamma = f32_from(uniform(c, 33, 0.5f, 1.5f), Shape{c}), beta = f32_from(uniform(c, 34), Shape{c});
  Both rmean = f32_zeros(Shape{c}), rvar = f32_from(std::vector<float>(c, 1.0f), Shape{c});
  Both smean = f32_zeros(Shape{c}), sinv = f32_zeros(Shape{c});
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
    b.batchnorm_forward_train(ctx, x.*s, gamma.*s, beta.*s, 1e-5f, 0.1f, rmean.*s, rvar.*s, y.*s, smean.*s, sinv.*s);
  });
  expect_close(y, scaled(y, 2.0f), "batchnorm_forward_train y");
  expect_close(smean, accumulated(), "batchnorm save_mean");
  expect_close(sinv, accumulated(), "batchnorm save_invstd");
  expect_close(rmean, accumulated(), "batchnorm running_mean");
  expect_close(rvar, accumulated(), "batchnorm running_var");
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
    b.batchnorm_forward_eval(ctx, x.*s, gamma.*s, beta.*s, rmean.*s, rvar.*s, 1e-5f, y.*s);
  });
  expect_close(y, scaled(y, 2.0f), "batchnorm_forward_eval y");
  Both dy = half_random(xs, 35), dx = half_zeros(xs);
  Both dgamma = f32_zeros(Shape{c}), dbeta = f32_zeros(Shape{c});
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
    b.batchnorm_backward(ctx, x.*s, dy.*s, gamma.*s, smean.*s, sinv.*s, 1e-5f, dx.*s, dgamma.*s, dbeta.*s);
  });
  expect_close(dx, scaled(dx, 4.0f), "batchnorm_backward dx");
  expect_close(dgamma, accumulated(), "batchnorm_backward dgamma");
  expect_close(dbeta, accumulated(), "batchnorm_backward dbeta");
}

// The fused batch norm + ReLU in half data: y rounded once from f32 statistics (within 2 u of the
// largest output, as for cuDNN's batch norm above); backward from the GPU's own y on both sides
// (widened for the CPU), so both apply one mask.
TEST_P(CudaVsCpuHalf, BatchNormRelu) {
  const Shape xs{4, 3, 5, 8};
  const std::int64_t c = 3;
  Both x = half_random(xs, 36, -2.0f, 3.0f), y = half_zeros(xs);
  Both gamma = f32_from(uniform(c, 37, 0.5f, 1.5f), Shape{c}), beta = f32_from(uniform(c, 38), Shape{c});
  Both rmean = f32_zeros(Shape{c}), rvar = f32_from(std::vector<float>(c, 1.0f), Shape{c});
  Both smean = f32_zeros(Shape{c}), sinv = f32_zeros(Shape{c});
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
    b.batchnorm_relu_forward_train(ctx, x.*s, gamma.*s, beta.*s, 1e-5f, 0.1f, rmean.*s, rvar.*s, y.*s, smean.*s,
                                   sinv.*s);
  });
  expect_close(y, scaled(y, 2.0f), "batchnorm_relu_forward_train y");
  expect_close(smean, accumulated(), "batchnorm_relu save_mean");
  expect_close(sinv, accumulated(), "batchnorm_relu save_invstd");
  expect_close(rmean, accumulated(), "batchnorm_relu running_mean");
  expect_close(rvar, accumulated(), "batchnorm_relu running_var");
  Both mask = half_from(y.g.to_vector(gpu()), xs);
  Both dy = half_random(xs, 39), dx = half_zeros(xs);
  Both dgamma = f32_zeros(Shape{c}), dbeta = f32_zeros(Shape{c});
  on_both([&](Backend& b, Context& ctx, Tensor Both::*s) {
    b.batchnorm_relu_backward(ctx, x.*s, mask.*s, dy.*s, gamma.*s, smean.*s, sinv.*s, 1e-5f, dx.*s, dgamma.*s,
                              dbeta.*s);
  });
  expect_close(dx, scaled(dx, 4.0f), "batchnorm_relu_backward dx");
  expect_close(dgamma, accumulated(), "batchnorm_relu_backward dgamma");
  expect_close(dbeta, accumulated(), "batchnorm_relu_backward dbeta");
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaVsCpuHalf, ::testing::Values(DType::bf16, DType::f16),
                         [](const ::testing::TestParamInfo<DType>& p) { return name_of(p.param); });

}  // namespace
