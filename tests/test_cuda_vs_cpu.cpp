// The CUDA backend against the CPU backend, op by op: the same seeded inputs on a CPU and a CUDA
// context, compared elementwise as |gpu - cpu| <= atol + rtol * |cpu|. Indices (argmax), counts
// (accuracy), dropout masks and uniform fills must match exactly. Every test skips with "no CUDA
// device" when there is none (CUDL_REQUIRE_CUDA in SetUp), so a GPU-less run shows them skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/op_table.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/cuda_vs_cpu_fixture.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;

// The tolerance classes and the ops' shapes come from the op table (engine/op_table.hpp).
using Tolerance = OpTolerance;
// Elementwise maps: a few float roundings apart at most (expf/tanhf/sqrtf ulps, FMA contraction).
const Tolerance kElementwise = op_tolerance(ToleranceClass::elementwise);
// GEMM, convolution, reductions and losses: summation order differs between the backends.
const Tolerance kAccumulated = op_tolerance(ToleranceClass::accumulated);
// Box-Muller is computed in double on both sides; the float results agree to rounding.
const Tolerance kNormal = op_tolerance(ToleranceClass::normal);
// Reductions past the CUDA small-size paths: the CPU accumulates in double and rounds once (CUDA is
// to as well), so the two agree to a few ulps; a float accumulator misses by about 1e-2 on the
// drifting data used there.
const Tolerance kDoubleSum = op_tolerance(ToleranceClass::double_sum);

// The CUDA-vs-CPU checks below, by the op table's names (test_op_table.cpp holds them to the table).
CUDL_OP_COVERAGE(cuda_vs_cpu, "gemm", "bias_add", "bias_grad", "gram", "conv2d", "activation", "maxpool2d", "avgpool2d",
                 "softmax", "log_softmax", "softmax_cross_entropy", "mse_loss", "l1_loss", "tv_loss", "dropout", "mul",
                 "sgd_step", "adam_step", "sum", "mean", "max", "argmax_rows", "accuracy", "fill", "copy", "axpy",
                 "scale", "fill_uniform", "fill_normal", "channel_affine", "batchnorm", "batchnorm_relu", "dot",
                 "clamp", "abs_sum");

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

using cudl::testing::Both;
using cudl::testing::NanRule;
using cudl::testing::Side;

// NaN on both sides agrees: several checks below feed NaN and infinities on purpose.
class CudaVsCpu : public cudl::testing::CudaVsCpuTest<> {
 protected:
  CudaVsCpu() : CudaVsCpuTest(NanRule::matches_nan) {}

  // Multiples of 0.25 in [-2, 2]: plenty of exact ties for argmax-style tests.
  static std::vector<float> tied_values(std::int64_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> dist(-8, 8);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = 0.25f * static_cast<float>(dist(rng));
    return v;
  }
  static std::vector<std::int32_t> random_labels(std::int64_t n, std::int32_t classes, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<std::int32_t> dist(0, classes - 1);
    std::vector<std::int32_t> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = dist(rng);
    return v;
  }

  Both from_int(const std::vector<std::int32_t>& v, const Shape& s) {
    return {Tensor::from_host(std::span<const std::int32_t>(v), s, cpu()),
            Tensor::from_host(std::span<const std::int32_t>(v), s, gpu())};
  }
  Both random(const Shape& s, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    return from(values(s.numel(), seed, DType::f32, lo, hi), s);
  }

  // The convolution cases (defined with the convolution tests).
  void conv2d_cases(Tolerance tol);

  // Equal values, or NaN on both sides whatever its payload (a NaN made on the GPU need not have
  // the CPU's bits).
  void expect_same_values(const Both& t, const std::string& what) { expect_close(t, Tolerance{0.0f, 0.0f}, what); }

  // v with about `percent`% each of NaN, +inf and -inf, at positions drawn from `seed`.
  static std::vector<float> with_non_finite(std::vector<float> v, std::uint32_t seed, int percent = 5) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> dist(0, 99);
    for (float& x : v) {
      const int r = dist(rng);
      if (r < percent)
        x = kNaN;
      else if (r < 2 * percent)
        x = kInf;
      else if (r < 3 * percent)
        x = -kInf;
    }
    return v;
  }
};

// ---------------------------------------------------------------- dense linear algebra

TEST_F(CudaVsCpu, Gemm) {
  const Shape& mkn = op_spec("gemm").shapes.at(0);
  const std::int64_t m = mkn[0], k = mkn[1], n = mkn[2];
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Both a = random(ta ? Shape{k, m} : Shape{m, k}, 1);
      Both b = random(tb ? Shape{n, k} : Shape{k, n}, 2);
      Both c = random(Shape{m, n}, 3);
      on_both([&](Backend& be, Context& ctx, Side s) { be.gemm(ctx, ta, tb, 0.7f, a.*s, b.*s, 0.3f, c.*s); });
      expect_close(c, kAccumulated, fmt::format("gemm trans_a={} trans_b={}", ta, tb));
    }
}

TEST_F(CudaVsCpu, BiasAddAndGrad) {
  for (const Shape& shape : op_spec("bias_add").shapes) {
    Both y = random(shape, 4);
    Both bias = random(Shape{5}, 5);
    on_both([&](Backend& be, Context& ctx, Side s) { be.bias_add(ctx, y.*s, bias.*s); });
    expect_close(y, kElementwise, fmt::format("bias_add {}", shape));

    Both dy = random(shape, 6);
    Both db = random(Shape{5}, 7);
    on_both([&](Backend& be, Context& ctx, Side s) { be.bias_grad(ctx, dy.*s, db.*s, false); });
    expect_close(db, kAccumulated, fmt::format("bias_grad {}", shape));
    on_both([&](Backend& be, Context& ctx, Side s) { be.bias_grad(ctx, dy.*s, db.*s, true); });
    expect_close(db, kAccumulated, fmt::format("bias_grad accumulate {}", shape));
  }
}

TEST_F(CudaVsCpu, Gram) {
  const Shape xs = op_spec("gram").shapes.at(0);
  const Shape gs{xs[0], xs[1], xs[1]};
  Both x = random(xs, 8);
  Both g = zeros(gs);
  on_both([&](Backend& be, Context& ctx, Side s) { be.gram_forward(ctx, x.*s, g.*s); });
  expect_close(g, kAccumulated, "gram_forward");

  Both dg = random(gs, 9);  // deliberately not symmetric
  Both dx = zeros(xs);
  on_both([&](Backend& be, Context& ctx, Side s) { be.gram_backward(ctx, x.*s, dg.*s, dx.*s); });
  expect_close(dx, kAccumulated, "gram_backward");
}

// ---------------------------------------------------------------- convolution

// Forward, backward data and backward filter (overwriting and accumulating) on eight shapes (four
// of them grouped or depthwise), with
// the GPU context's current math mode and algorithm search.
void CudaVsCpu::conv2d_cases(Tolerance tol) {
  struct Case {
    Shape x, w;
    Conv2dParams p;
  };
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  Conv2dParams strided;
  strided.stride_h = 2;
  strided.stride_w = 3;
  strided.pad_w = 1;
  Conv2dParams dilated;
  dilated.pad_h = dilated.pad_w = 2;
  dilated.dilation_h = dilated.dilation_w = 2;
  // Grouped (cuDNN's group count on the convolution descriptor) and depthwise.
  Conv2dParams two_groups = same;
  two_groups.groups = 2;
  Conv2dParams depthwise_strided = same;
  depthwise_strided.stride_h = depthwise_strided.stride_w = 2;
  depthwise_strided.groups = 6;
  Conv2dParams depthwise_x2 = same;
  depthwise_x2.groups = 4;
  Conv2dParams depthwise_32 = same;
  depthwise_32.groups = 32;
  const std::vector<Case> cases = {
      {Shape{2, 3, 9, 11}, Shape{4, 3, 3, 3}, same},        {Shape{2, 3, 9, 11}, Shape{4, 3, 3, 2}, strided},
      {Shape{1, 2, 10, 8}, Shape{3, 2, 3, 3}, dilated},     {Shape{3, 16, 6, 6}, Shape{8, 16, 1, 1}, Conv2dParams{}},
      {Shape{2, 8, 9, 11}, Shape{6, 4, 3, 3}, two_groups},  {Shape{2, 6, 10, 10}, Shape{6, 1, 3, 3}, depthwise_strided},
      {Shape{1, 4, 7, 7}, Shape{8, 1, 3, 3}, depthwise_x2}, {Shape{2, 32, 14, 14}, Shape{32, 1, 3, 3}, depthwise_32},
  };
  std::uint32_t seed = 10;
  for (const Case& tc : cases) {
    const std::string name = fmt::format("x={} w={} groups={}", tc.x, tc.w, tc.p.groups);
    const Shape ys = conv2d_output_shape(tc.x, tc.w, tc.p);
    Both x = random(tc.x, seed++);
    Both w = random(tc.w, seed++);
    Both y = zeros(ys);
    on_both([&](Backend& be, Context& ctx, Side s) { be.conv2d_forward(ctx, x.*s, w.*s, tc.p, y.*s); });
    expect_close(y, tol, "conv2d_forward " + name);

    Both dy = random(ys, seed++);
    Both dx = zeros(tc.x);
    on_both([&](Backend& be, Context& ctx, Side s) { be.conv2d_backward_data(ctx, dy.*s, w.*s, tc.p, dx.*s); });
    expect_close(dx, tol, "conv2d_backward_data " + name);

    // Accumulating first: under the measured search this call is the one timed, and the timing
    // must leave dw's running sum alone.
    Both dw = random(tc.w, seed++);
    on_both([&](Backend& be, Context& ctx, Side s) { be.conv2d_backward_filter(ctx, x.*s, dy.*s, tc.p, dw.*s, true); });
    expect_close(dw, tol, "conv2d_backward_filter accumulate " + name);
    on_both(
        [&](Backend& be, Context& ctx, Side s) { be.conv2d_backward_filter(ctx, x.*s, dy.*s, tc.p, dw.*s, false); });
    expect_close(dw, tol, "conv2d_backward_filter " + name);
  }
}

TEST_F(CudaVsCpu, Conv2d) {
  gpu().set_conv_search(ConvSearch::heuristic);  // the default is measured, checked below
  conv2d_cases(kAccumulated);
}

TEST_F(CudaVsCpu, Conv2dWithMeasuredAlgorithmSearch) {
  gpu().set_conv_search(ConvSearch::measured);
  conv2d_cases(kAccumulated);
  gpu().set_deterministic(false);  // more candidates, the atomics ones among them
  conv2d_cases(kAccumulated);
}

TEST_F(CudaVsCpu, Conv2dInTf32) {
  // TF32 products keep 10 mantissa bits (relative error about 5e-4 each, sums of up to 144 here).
  gpu().set_math_mode(MathMode::tf32);
  gpu().set_conv_search(ConvSearch::heuristic);
  conv2d_cases(Tolerance{1e-2f, 1e-2f});
  gpu().set_conv_search(ConvSearch::measured);
  conv2d_cases(Tolerance{1e-2f, 1e-2f});
}

// ---------------------------------------------------------------- activations

TEST_F(CudaVsCpu, Activations) {
  const Shape shape = op_spec("activation").shapes.at(0);
  for (Activation a :
       {Activation::relu, Activation::leaky_relu, Activation::sigmoid, Activation::tanh, Activation::relu6}) {
    const std::string name(activation_name(a));
    const float range = a == Activation::relu6 ? 8.0f : 4.0f;  // relu6: both kinks, 0 and 6
    Both x = random(shape, 20, -range, range);
    Both y = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.activation_forward(ctx, a, 0.1f, x.*s, y.*s); });
    expect_close(y, kElementwise, name + " forward");

    Both dy = random(shape, 21);
    Both dx = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.activation_backward(ctx, a, 0.1f, x.*s, y.*s, dy.*s, dx.*s); });
    expect_close(dx, kElementwise, name + " backward");
  }
}

// ---------------------------------------------------------------- pooling

std::vector<Pool2dParams> pool_cases() {
  Pool2dParams two;  // 2x2 stride 2
  Pool2dParams three;
  three.kernel_h = three.kernel_w = 3;
  three.stride_h = three.stride_w = 2;
  three.pad_h = three.pad_w = 1;
  Pool2dParams odd;
  odd.kernel_h = 3;
  odd.kernel_w = 2;
  odd.stride_h = 1;
  odd.stride_w = 2;
  odd.pad_h = 1;
  return {two, three, odd};
}

TEST_F(CudaVsCpu, MaxPool) {
  const Shape xs = op_spec("maxpool2d").shapes.at(0);
  for (const Pool2dParams& p : pool_cases()) {
    const std::string name = fmt::format("kernel {}x{} stride {}x{} pad {}x{}", p.kernel_h, p.kernel_w, p.stride_h,
                                         p.stride_w, p.pad_h, p.pad_w);
    const Shape ys = pool2d_output_shape(xs, p);
    Both x = from(tied_values(xs.numel(), 30), xs);  // ties: the first maximum must win on both
    Both y = zeros(ys);
    Both arg = zeros(ys, DType::i32);
    on_both([&](Backend& be, Context& ctx, Side s) { be.maxpool2d_forward(ctx, x.*s, p, y.*s, arg.*s); });
    expect_bits_equal(y, "maxpool2d_forward " + name);
    expect_ints_equal(arg, "maxpool2d argmax " + name);

    Both dy = random(ys, 31);
    Both dx = random(xs, 32);  // overwritten
    on_both([&](Backend& be, Context& ctx, Side s) { be.maxpool2d_backward(ctx, dy.*s, arg.*s, p, dx.*s); });
    expect_close(dx, kElementwise, "maxpool2d_backward " + name);
  }
}

TEST_F(CudaVsCpu, AvgPool) {
  const Shape xs = op_spec("avgpool2d").shapes.at(0);
  for (const Pool2dParams& p : pool_cases()) {
    const std::string name = fmt::format("kernel {}x{} stride {}x{} pad {}x{}", p.kernel_h, p.kernel_w, p.stride_h,
                                         p.stride_w, p.pad_h, p.pad_w);
    const Shape ys = pool2d_output_shape(xs, p);
    Both x = random(xs, 33);
    Both y = zeros(ys);
    on_both([&](Backend& be, Context& ctx, Side s) { be.avgpool2d_forward(ctx, x.*s, p, y.*s); });
    expect_close(y, kElementwise, "avgpool2d_forward " + name);

    Both dy = random(ys, 34);
    Both dx = random(xs, 35);  // overwritten
    on_both([&](Backend& be, Context& ctx, Side s) { be.avgpool2d_backward(ctx, dy.*s, p, dx.*s); });
    expect_close(dx, kElementwise, "avgpool2d_backward " + name);
  }
}

// ---------------------------------------------------------------- softmax family

TEST_F(CudaVsCpu, SoftmaxAndLogSoftmax) {
  for (const Shape& shape : op_spec("softmax").shapes) {
    const std::string name = fmt::format("{}", shape);
    Both x = random(shape, 40, -6.0f, 6.0f);
    Both dy = random(shape, 41);

    Both y = zeros(shape), dx = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.softmax_forward(ctx, x.*s, y.*s); });
    expect_close(y, kElementwise, "softmax_forward " + name);
    on_both([&](Backend& be, Context& ctx, Side s) { be.softmax_backward(ctx, y.*s, dy.*s, dx.*s); });
    expect_close(dx, kElementwise, "softmax_backward " + name);

    Both ly = zeros(shape), ldx = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.log_softmax_forward(ctx, x.*s, ly.*s); });
    expect_close(ly, kElementwise, "log_softmax_forward " + name);
    on_both([&](Backend& be, Context& ctx, Side s) { be.log_softmax_backward(ctx, ly.*s, dy.*s, ldx.*s); });
    expect_close(ldx, kElementwise, "log_softmax_backward " + name);
  }
}

TEST_F(CudaVsCpu, SoftmaxCrossEntropy) {
  const Shape& nk = op_spec("softmax_cross_entropy").shapes.at(0);
  const std::int64_t n = nk[0], k = nk[1];
  Both logits = random(Shape{n, k}, 50, -5.0f, 5.0f);
  Both labels = from_int(random_labels(n, static_cast<std::int32_t>(k), 51), Shape{n});
  Both probs = zeros(Shape{n, k});
  Both loss = zeros(Shape{1});
  on_both([&](Backend& be, Context& ctx, Side s) {
    be.softmax_cross_entropy_forward(ctx, logits.*s, labels.*s, probs.*s, loss.*s);
  });
  expect_close(probs, kElementwise, "softmax_cross_entropy probs");
  expect_close(loss, kAccumulated, "softmax_cross_entropy loss");

  Both dlogits = zeros(Shape{n, k});
  on_both([&](Backend& be, Context& ctx, Side s) {
    be.softmax_cross_entropy_backward(ctx, probs.*s, labels.*s, 0.75f, dlogits.*s);
  });
  expect_close(dlogits, kElementwise, "softmax_cross_entropy_backward");
}

// ---------------------------------------------------------------- losses

TEST_F(CudaVsCpu, MseAndL1Losses) {
  const Shape shape = op_spec("mse_loss").shapes.at(0);
  Both a = random(shape, 60), b = random(shape, 61);
  Both loss = zeros(Shape{1}), da = zeros(shape);

  on_both([&](Backend& be, Context& ctx, Side s) { be.mse_loss_forward(ctx, a.*s, b.*s, loss.*s); });
  expect_close(loss, kAccumulated, "mse_loss_forward");
  on_both([&](Backend& be, Context& ctx, Side s) { be.mse_loss_backward(ctx, a.*s, b.*s, 1.5f, da.*s); });
  expect_close(da, kElementwise, "mse_loss_backward");

  on_both([&](Backend& be, Context& ctx, Side s) { be.l1_loss_forward(ctx, a.*s, b.*s, loss.*s); });
  expect_close(loss, kAccumulated, "l1_loss_forward");
  on_both([&](Backend& be, Context& ctx, Side s) { be.l1_loss_backward(ctx, a.*s, b.*s, 1.5f, da.*s); });
  expect_close(da, kElementwise, "l1_loss_backward");
}

TEST_F(CudaVsCpu, TotalVariationLoss) {
  const Shape shape = op_spec("tv_loss").shapes.at(0);
  Both x = random(shape, 62);
  Both loss = zeros(Shape{1});
  on_both([&](Backend& be, Context& ctx, Side s) { be.tv_loss_forward(ctx, x.*s, loss.*s); });
  expect_close(loss, kAccumulated, "tv_loss_forward");

  Both dx = random(shape, 63);
  on_both([&](Backend& be, Context& ctx, Side s) { be.tv_loss_backward(ctx, x.*s, 0.5f, dx.*s, false); });
  expect_close(dx, kElementwise, "tv_loss_backward");
  on_both([&](Backend& be, Context& ctx, Side s) { be.tv_loss_backward(ctx, x.*s, 0.5f, dx.*s, true); });
  expect_close(dx, kElementwise, "tv_loss_backward accumulate");
}

// ---------------------------------------------------------------- dropout, mul

TEST_F(CudaVsCpu, DropoutMaskIsIdentical) {
  const Shape shape = op_spec("dropout").shapes.at(0);
  for (float p : {0.0f, 0.3f, 0.5f}) {
    Both x = random(shape, 70);
    Both y = zeros(shape), mask = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.dropout_forward(ctx, x.*s, p, 1234, 77, y.*s, mask.*s); });
    expect_bits_equal(mask, fmt::format("dropout mask p={}", p));
    expect_bits_equal(y, fmt::format("dropout y p={}", p));
  }
}

TEST_F(CudaVsCpu, Mul) {
  const Shape shape = op_spec("mul").shapes.at(0);
  Both a = random(shape, 71), b = random(shape, 72), out = zeros(shape);
  on_both([&](Backend& be, Context& ctx, Side s) { be.mul(ctx, a.*s, b.*s, out.*s); });
  expect_bits_equal(out, "mul");
}

// ---------------------------------------------------------------- optimizers

TEST_F(CudaVsCpu, SgdStep) {
  std::vector<SgdParams> cases(4);
  cases[1].momentum = 0.9f;
  cases[2].momentum = 0.9f;
  cases[2].nesterov = true;
  cases[2].weight_decay = 1e-2f;
  cases[3].momentum = 0.8f;
  cases[3].dampening = 0.1f;
  cases[3].weight_decay = 5e-4f;
  cases[3].lr = 0.1f;
  const Shape shape = op_spec("sgd_step").shapes.at(0);
  int index = 0;
  for (const SgdParams& p : cases) {
    Both param = random(shape, 80);
    Both buf = zeros(shape);  // the momentum buffer starts at zero
    for (std::uint32_t step = 0; step < 3; ++step) {
      Both grad = random(shape, 81 + step);
      on_both([&](Backend& be, Context& ctx, Side s) { be.sgd_step(ctx, p, param.*s, grad.*s, buf.*s); });
    }
    expect_close(param, kElementwise, fmt::format("sgd case {} param", index));
    if (p.momentum != 0.0f) expect_close(buf, kElementwise, fmt::format("sgd case {} momentum", index));
    ++index;
  }
}

TEST_F(CudaVsCpu, AdamAndAdamWSteps) {
  for (bool decoupled : {false, true}) {
    AdamParams p;
    p.lr = 1e-2f;
    p.weight_decay = 1e-2f;
    p.decoupled_weight_decay = decoupled;
    const Shape shape = op_spec("adam_step").shapes.at(0);
    Both param = random(shape, 90);
    Both m = zeros(shape), v = zeros(shape);
    for (std::int64_t step = 1; step <= 3; ++step) {
      p.step = step;
      Both grad = random(shape, 91 + static_cast<std::uint32_t>(step));
      on_both([&](Backend& be, Context& ctx, Side s) { be.adam_step(ctx, p, param.*s, grad.*s, m.*s, v.*s); });
    }
    const std::string name = decoupled ? "adamw" : "adam";
    expect_close(param, kElementwise, name + " param");
    expect_close(m, kElementwise, name + " m");
    expect_close(v, kElementwise, name + " v");
  }
}

// ---------------------------------------------------------------- reductions

TEST_F(CudaVsCpu, SumMeanMax) {
  for (const Shape& shape : op_spec("sum").shapes) {
    const std::int64_t n = shape[0];
    Both x = random(Shape{n}, 100, -1.0f, 2.0f);
    Both out = zeros(Shape{1});
    on_both([&](Backend& be, Context& ctx, Side s) { be.sum(ctx, x.*s, out.*s); });
    expect_close(out, kAccumulated, fmt::format("sum n={}", n));
    on_both([&](Backend& be, Context& ctx, Side s) { be.mean(ctx, x.*s, out.*s); });
    expect_close(out, kAccumulated, fmt::format("mean n={}", n));
    on_both([&](Backend& be, Context& ctx, Side s) { be.max(ctx, x.*s, out.*s); });
    expect_bits_equal(out, fmt::format("max n={}", n));
  }
}

TEST_F(CudaVsCpu, ArgmaxRowsAndAccuracy) {
  for (const Shape& shape : op_spec("argmax_rows").shapes) {
    const std::string name = fmt::format("{}", shape);
    Both x = from(tied_values(shape.numel(), 110), shape);  // ties: the first index must win on both
    Both arg = zeros(Shape{shape[0]}, DType::i32);
    on_both([&](Backend& be, Context& ctx, Side s) { be.argmax_rows(ctx, x.*s, arg.*s); });
    expect_ints_equal(arg, "argmax_rows " + name);

    Both labels = from_int(random_labels(shape[0], static_cast<std::int32_t>(shape[1]), 111), Shape{shape[0]});
    Both acc = zeros(Shape{1});
    on_both([&](Backend& be, Context& ctx, Side s) { be.accuracy(ctx, x.*s, labels.*s, acc.*s); });
    expect_bits_equal(acc, "accuracy " + name);
  }
}

// ---------------------------------------------------------------- elementwise basics

TEST_F(CudaVsCpu, FillCopyAxpyScale) {
  const Shape shape = op_spec("fill").shapes.at(0);
  Both x = random(shape, 120);
  on_both([&](Backend& be, Context& ctx, Side s) { be.fill(ctx, x.*s, 2.5f); });
  expect_bits_equal(x, "fill");

  Both src = random(shape, 121), dst = zeros(shape);
  on_both([&](Backend& be, Context& ctx, Side s) { be.copy(ctx, src.*s, dst.*s); });
  expect_bits_equal(dst, "copy");

  Both y = random(shape, 122);
  on_both([&](Backend& be, Context& ctx, Side s) { be.axpy(ctx, -0.37f, src.*s, y.*s); });
  expect_close(y, kElementwise, "axpy");

  on_both([&](Backend& be, Context& ctx, Side s) { be.scale(ctx, y.*s, 1.7f); });
  expect_close(y, kElementwise, "scale");
}

TEST_F(CudaVsCpu, SeededRandomFills) {
  const Shape shape = op_spec("fill_uniform").shapes.at(0);
  Both u = zeros(shape);
  on_both([&](Backend& be, Context& ctx, Side s) { be.fill_uniform(ctx, u.*s, -0.5f, 1.5f, 42, 1000); });
  expect_bits_equal(u, "fill_uniform");

  Both g = zeros(shape);
  on_both([&](Backend& be, Context& ctx, Side s) { be.fill_normal(ctx, g.*s, 0.1f, 0.02f, 42, 1000); });
  expect_close(g, kNormal, "fill_normal");
  Both z = zeros(shape);
  on_both([&](Backend& be, Context& ctx, Side s) { be.fill_normal(ctx, z.*s, 0.0f, 1.0f, 7, 0); });
  expect_close(z, kNormal, "fill_normal standard");
}

// ---------------------------------------------------------------- per-channel ops, batch norm, dot, clamp

TEST_F(CudaVsCpu, ChannelAffine) {
  for (const Shape& shape : op_spec("channel_affine").shapes) {
    Both x = random(shape, 130), scale = random(Shape{5}, 131, -2.0f, 2.0f), shift = random(Shape{5}, 132);
    Both y = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.channel_affine(ctx, x.*s, scale.*s, shift.*s, y.*s); });
    expect_close(y, kElementwise, fmt::format("channel_affine {}", shape));
    Both dy = random(shape, 133), dx = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.channel_affine_backward(ctx, dy.*s, scale.*s, dx.*s); });
    expect_close(dx, kElementwise, fmt::format("channel_affine_backward {}", shape));
  }
}

// cuDNN (spatial mode) against the CPU's double-precision loops: y, the saved statistics, the
// running-statistics update (unbiased variance), eval, and backward with accumulation.
TEST_F(CudaVsCpu, BatchNorm) {
  for (const Shape& shape : op_spec("batchnorm").shapes) {
    const std::string name = fmt::format("{}", shape);
    const Shape ps{shape[1]};
    Both x = random(shape, 140, -1.0f, 3.0f);
    Both gamma = random(ps, 141, 0.5f, 1.5f), beta = random(ps, 142);
    Both rm = random(ps, 143), rv = random(ps, 144, 0.5f, 2.0f);
    Both y = zeros(shape), sm = zeros(ps), si = zeros(ps);
    for (int step = 0; step < 2; ++step)  // twice: the running statistics blend, not overwrite
      on_both([&](Backend& be, Context& ctx, Side s) {
        be.batchnorm_forward_train(ctx, x.*s, gamma.*s, beta.*s, 1e-5f, 0.1f, rm.*s, rv.*s, y.*s, sm.*s, si.*s);
      });
    expect_close(y, kAccumulated, "batchnorm_forward_train y " + name);
    expect_close(sm, kAccumulated, "batchnorm save_mean " + name);
    expect_close(si, kAccumulated, "batchnorm save_invstd " + name);
    expect_close(rm, kAccumulated, "batchnorm running_mean " + name);
    expect_close(rv, kAccumulated, "batchnorm running_var " + name);

    Both ye = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) {
      be.batchnorm_forward_eval(ctx, x.*s, gamma.*s, beta.*s, rm.*s, rv.*s, 1e-5f, ye.*s);
    });
    expect_close(ye, kAccumulated, "batchnorm_forward_eval " + name);

    Both dy = random(shape, 145), dx = zeros(shape), dgamma = random(ps, 146), dbeta = random(ps, 147);
    on_both([&](Backend& be, Context& ctx, Side s) {
      be.batchnorm_backward(ctx, x.*s, dy.*s, gamma.*s, sm.*s, si.*s, 1e-5f, dx.*s, dgamma.*s, dbeta.*s);
    });
    expect_close(dx, kAccumulated, "batchnorm_backward dx " + name);
    expect_close(dgamma, kAccumulated, "batchnorm_backward dgamma (accumulated) " + name);
    expect_close(dbeta, kAccumulated, "batchnorm_backward dbeta (accumulated) " + name);
  }
}

// Our fused batch norm + ReLU kernels against the CPU's double-precision loops: y (a ReLU of the
// normalised values, so about half zeros), the saved and running statistics, and backward with the
// mask read from y. The backward runs from the CPU's y on both sides, so that a value within
// rounding of 0 cannot take different masks; the GPU's own y is checked against it first.
TEST_F(CudaVsCpu, BatchNormRelu) {
  for (const Shape& shape : op_spec("batchnorm_relu").shapes) {
    const std::string name = fmt::format("{}", shape);
    const Shape ps{shape[1]};
    Both x = random(shape, 160, -1.0f, 3.0f);
    Both gamma = random(ps, 161, 0.5f, 1.5f), beta = random(ps, 162, -0.5f, 0.5f);
    Both rm = random(ps, 163), rv = random(ps, 164, 0.5f, 2.0f);
    Both y = zeros(shape), sm = zeros(ps), si = zeros(ps);
    for (int step = 0; step < 2; ++step)  // twice: the running statistics blend, not overwrite
      on_both([&](Backend& be, Context& ctx, Side s) {
        be.batchnorm_relu_forward_train(ctx, x.*s, gamma.*s, beta.*s, 1e-5f, 0.1f, rm.*s, rv.*s, y.*s, sm.*s, si.*s);
      });
    expect_close(y, kAccumulated, "batchnorm_relu_forward_train y " + name);
    expect_close(sm, kAccumulated, "batchnorm_relu save_mean " + name);
    expect_close(si, kAccumulated, "batchnorm_relu save_invstd " + name);
    expect_close(rm, kAccumulated, "batchnorm_relu running_mean " + name);
    expect_close(rv, kAccumulated, "batchnorm_relu running_var " + name);

    Both mask = from(y.c.to_vector(cpu()), shape);
    Both dy = random(shape, 165), dx = zeros(shape), dgamma = random(ps, 166), dbeta = random(ps, 167);
    on_both([&](Backend& be, Context& ctx, Side s) {
      be.batchnorm_relu_backward(ctx, x.*s, mask.*s, dy.*s, gamma.*s, sm.*s, si.*s, 1e-5f, dx.*s, dgamma.*s, dbeta.*s);
    });
    expect_close(dx, kAccumulated, "batchnorm_relu_backward dx " + name);
    expect_close(dgamma, kAccumulated, "batchnorm_relu_backward dgamma (accumulated) " + name);
    expect_close(dbeta, kAccumulated, "batchnorm_relu_backward dbeta (accumulated) " + name);
  }
  // A NaN in a channel makes its statistics NaN, and the ReLU turns the channel's outputs to 0 on
  // both backends (as the unfused ReLU does); the other channel is untouched.
  const Shape shape{2, 2, 2, 2};
  std::vector<float> xs = values(shape.numel(), 168);
  xs[1] = kNaN;  // channel 0
  Both x = from(xs, shape), gamma = random(Shape{2}, 169, 0.5f, 1.5f), beta = random(Shape{2}, 170);
  Both rm = zeros(Shape{2}), rv = random(Shape{2}, 171, 0.5f, 2.0f), y = zeros(shape), sm = zeros(Shape{2}),
       si = zeros(Shape{2});
  on_both([&](Backend& be, Context& ctx, Side s) {
    be.batchnorm_relu_forward_train(ctx, x.*s, gamma.*s, beta.*s, 1e-5f, 0.1f, rm.*s, rv.*s, y.*s, sm.*s, si.*s);
  });
  expect_close(y, kAccumulated, "batchnorm_relu_forward_train y with a NaN (0 in its channel, not NaN)");
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t i = 0; i < 4; ++i) EXPECT_EQ(y.c.to_vector(cpu())[static_cast<std::size_t>(n * 8 + i)], 0.0f);
  expect_close(rm, kAccumulated, "batchnorm_relu running_mean with a NaN");
}

TEST_F(CudaVsCpu, DotAndClamp) {
  for (const Shape& shape : op_spec("dot").shapes) {
    const std::int64_t n = shape[0];
    Both a = random(Shape{n}, 150), b = random(Shape{n}, 151, -2.0f, 2.0f), out = zeros(Shape{1});
    on_both([&](Backend& be, Context& ctx, Side s) { be.dot(ctx, a.*s, b.*s, out.*s); });
    expect_close(out, kAccumulated, fmt::format("dot n={}", n));
  }
  Both x = random(op_spec("clamp").shapes.at(0), 152, -2.0f, 2.0f);
  on_both([&](Backend& be, Context& ctx, Side s) { be.clamp(ctx, x.*s, -0.5f, 1.25f); });
  expect_bits_equal(x, "clamp");
}

// ---------------------------------------------------------------- NaN and ±inf (the CPU's rules, pinned in
// test_ops_edge.cpp)

TEST_F(CudaVsCpu, MaxPoolWithNaNAndInf) {
  const Shape xs{2, 3, 9, 10};
  std::vector<float> v = with_non_finite(tied_values(xs.numel(), 200), 201);
  std::fill(v.begin() + 90, v.begin() + 180, -kInf);  // plane 1 all -inf: windows of -inf and padding
  for (const Pool2dParams& p : pool_cases()) {
    const std::string name = fmt::format("kernel {}x{} stride {}x{} pad {}x{}", p.kernel_h, p.kernel_w, p.stride_h,
                                         p.stride_w, p.pad_h, p.pad_w);
    const Shape ys = pool2d_output_shape(xs, p);
    Both x = from(v, xs);
    Both y = zeros(ys);
    Both arg = zeros(ys, DType::i32);
    on_both([&](Backend& be, Context& ctx, Side s) { be.maxpool2d_forward(ctx, x.*s, p, y.*s, arg.*s); });
    expect_same_values(y, "maxpool2d_forward with NaN/inf " + name);
    expect_ints_equal(arg, "maxpool2d argmax with NaN/inf " + name);

    Both dy = random(ys, 202);
    Both dx = random(xs, 203);  // overwritten
    on_both([&](Backend& be, Context& ctx, Side s) { be.maxpool2d_backward(ctx, dy.*s, arg.*s, p, dx.*s); });
    expect_close(dx, kElementwise, "maxpool2d_backward with NaN/inf " + name);
  }
}

TEST_F(CudaVsCpu, AvgPoolWithNaNAndInf) {
  const Shape xs{2, 3, 9, 10};
  Both x = from(with_non_finite(values(xs.numel(), 204), 205, 2), xs);
  for (const Pool2dParams& p : pool_cases()) {
    const Shape ys = pool2d_output_shape(xs, p);
    Both y = zeros(ys);
    on_both([&](Backend& be, Context& ctx, Side s) { be.avgpool2d_forward(ctx, x.*s, p, y.*s); });
    expect_close(
        y, kElementwise,
        fmt::format("avgpool2d_forward with NaN/inf kernel {}x{} pad {}x{}", p.kernel_h, p.kernel_w, p.pad_h, p.pad_w));
  }
}

TEST_F(CudaVsCpu, ArgmaxRowsAndAccuracyWithNaNAndInf) {
  std::uint32_t seed = 210;
  for (const Shape& shape : {Shape{64, 10}, Shape{33, 70}, Shape{9, 1000}, Shape{5, 1}}) {
    const std::string name = fmt::format("{}", shape);
    const std::int64_t n = shape[0], k = shape[1];
    std::vector<float> v = with_non_finite(tied_values(shape.numel(), seed), seed + 1);
    // Rows that separate the rules: a NaN in a lane's first column with the maximum 32 columns
    // later, a NaN in column 0, and rows of -inf and of NaN only.
    for (std::int64_t r = 0; r < n; ++r) {
      float* row = v.data() + r * k;
      if (r % 4 == 0 && k > 37) row[5] = kNaN, row[37] = 100.0f;
      if (r % 4 == 1) row[0] = kNaN;
      if (r == 2) std::fill(row, row + k, -kInf);
      if (r == 3) std::fill(row, row + k, kNaN);
    }
    Both x = from(v, shape);
    Both arg = zeros(Shape{n}, DType::i32);
    on_both([&](Backend& be, Context& ctx, Side s) { be.argmax_rows(ctx, x.*s, arg.*s); });
    expect_ints_equal(arg, "argmax_rows with NaN/inf " + name);

    Both labels = from_int(random_labels(n, static_cast<std::int32_t>(k), seed + 2), Shape{n});
    Both acc = zeros(Shape{1});
    on_both([&](Backend& be, Context& ctx, Side s) { be.accuracy(ctx, x.*s, labels.*s, acc.*s); });
    expect_bits_equal(acc, "accuracy with NaN/inf " + name);
    seed += 3;
  }
}

TEST_F(CudaVsCpu, MaxAndClampWithNaNAndInf) {
  for (std::int64_t n : {1000, 100003, 300007}) {
    const std::string name = fmt::format("n={}", n);
    Both x = from(with_non_finite(values(n, 220), 221, 1), Shape{n});
    Both out = zeros(Shape{1});
    on_both([&](Backend& be, Context& ctx, Side s) { be.max(ctx, x.*s, out.*s); });
    expect_same_values(out, "max with NaN/inf " + name);
    for (float fill : {-kInf, kNaN}) {
      Both same = from(std::vector<float>(static_cast<std::size_t>(n), fill), Shape{n});
      on_both([&](Backend& be, Context& ctx, Side s) { be.max(ctx, same.*s, out.*s); });
      expect_same_values(out, fmt::format("max of all {} {}", fill, name));
    }
    // NaN and +inf, no finite maximum larger than +inf: the +inf.
    std::vector<float> v(static_cast<std::size_t>(n), kNaN);
    v[static_cast<std::size_t>(n / 2)] = kInf;
    Both inf = from(v, Shape{n});
    on_both([&](Backend& be, Context& ctx, Side s) { be.max(ctx, inf.*s, out.*s); });
    expect_same_values(out, "max of NaN and one +inf " + name);

    on_both([&](Backend& be, Context& ctx, Side s) { be.clamp(ctx, x.*s, -0.5f, 0.75f); });
    expect_same_values(x, "clamp with NaN/inf " + name);
  }
}

TEST_F(CudaVsCpu, ActivationsWithNaNAndInf) {
  const Shape shape{4, 3, 5, 7};
  for (Activation a :
       {Activation::relu, Activation::leaky_relu, Activation::sigmoid, Activation::tanh, Activation::relu6}) {
    const std::string name(activation_name(a));
    Both x = from(with_non_finite(values(shape.numel(), 230, DType::f32, -4.0f, 4.0f), 231), shape);
    Both y = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.activation_forward(ctx, a, 0.1f, x.*s, y.*s); });
    expect_close(y, kElementwise, name + " forward with NaN/inf");

    Both dy = from(with_non_finite(values(shape.numel(), 232), 233), shape);
    Both dx = zeros(shape);
    on_both([&](Backend& be, Context& ctx, Side s) { be.activation_backward(ctx, a, 0.1f, x.*s, y.*s, dy.*s, dx.*s); });
    expect_close(dx, kElementwise, name + " backward with NaN/inf");
  }
}

// ---------------------------------------------------------------- reductions past the small-size paths

TEST_F(CudaVsCpu, ReductionsPastTheSmallSizePaths) {
  const std::int64_t n = 300007;
  Both x = from(cudl::testing::drifting_values(n, 240), Shape{n});
  Both out = zeros(Shape{1});
  on_both([&](Backend& be, Context& ctx, Side s) { be.sum(ctx, x.*s, out.*s); });
  expect_close(out, kDoubleSum, "sum n=300007");
  on_both([&](Backend& be, Context& ctx, Side s) { be.mean(ctx, x.*s, out.*s); });
  expect_close(out, kDoubleSum, "mean n=300007");
  Both ones = from(std::vector<float>(static_cast<std::size_t>(n), 1.0f), Shape{n});
  on_both([&](Backend& be, Context& ctx, Side s) { be.dot(ctx, x.*s, ones.*s, out.*s); });
  expect_close(out, kDoubleSum, "dot n=300007");

  Both a = random(Shape{n}, 241, -1.0f, 3.0f), b = random(Shape{n}, 242);
  on_both([&](Backend& be, Context& ctx, Side s) { be.abs_sum(ctx, a.*s, out.*s); });
  expect_close(out, kDoubleSum, "abs_sum n=300007");
  on_both([&](Backend& be, Context& ctx, Side s) { be.mse_loss_forward(ctx, a.*s, b.*s, out.*s); });
  expect_close(out, kDoubleSum, "mse_loss_forward n=300007");
  on_both([&](Backend& be, Context& ctx, Side s) { be.l1_loss_forward(ctx, a.*s, b.*s, out.*s); });
  expect_close(out, kDoubleSum, "l1_loss_forward n=300007");

  Both img = random(Shape{1, 3, 317, 317}, 243);
  on_both([&](Backend& be, Context& ctx, Side s) { be.tv_loss_forward(ctx, img.*s, out.*s); });
  expect_close(out, kDoubleSum, "tv_loss_forward 1x3x317x317");

  // 150,094 drifting values per channel.
  const Shape dys{7, 2, 151, 142};
  Both dy = from(cudl::testing::drifting_values(dys.numel(), 244), dys);
  Both db = zeros(Shape{2});
  on_both([&](Backend& be, Context& ctx, Side s) { be.bias_grad(ctx, dy.*s, db.*s, false); });
  expect_close(db, kDoubleSum, "bias_grad 7x2x151x142");
}

TEST_F(CudaVsCpu, SumOfOnesPast2To24) {
  const std::int64_t n = (std::int64_t{1} << 24) + 4097;
  Both x{Tensor::empty({n}, cpu()), Tensor::empty({n}, gpu())};
  Both out = zeros(Shape{1});
  on_both([&](Backend& be, Context& ctx, Side s) {
    be.fill(ctx, x.*s, 1.0f);
    be.sum(ctx, x.*s, out.*s);
  });
  expect_bits_equal(out, "sum of 2^24 + 4097 ones");
}

}  // namespace
