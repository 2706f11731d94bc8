// Activations against naive loops, and their gradients by finite differences.
#include <cmath>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"

using namespace cudl;
using cudl::testing::BackendTest;

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "activation");

std::vector<float> ramp(int n, float lo, float hi) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(n - 1);
  return v;
}

double reference(Activation a, float alpha, double x) {
  switch (a) {
    case Activation::relu:
      return x > 0 ? x : 0;
    case Activation::leaky_relu:
      return x > 0 ? x : alpha * x;
    case Activation::sigmoid:
      return 1.0 / (1.0 + std::exp(-x));
    case Activation::tanh:
      return std::tanh(x);
    case Activation::relu6:
      return x > 0 ? (x < 6 ? x : 6) : 0;
  }
  return 0;
}

double reference_derivative(Activation a, float alpha, double x) {
  switch (a) {
    case Activation::relu:
      return x > 0 ? 1 : 0;
    case Activation::leaky_relu:
      return x > 0 ? 1 : alpha;
    case Activation::sigmoid: {
      double s = 1.0 / (1.0 + std::exp(-x));
      return s * (1 - s);
    }
    case Activation::tanh:
      return 1 - std::tanh(x) * std::tanh(x);
    case Activation::relu6:
      return x > 0 && x < 6 ? 1 : 0;
  }
  return 0;
}

constexpr Activation kAll[] = {Activation::relu, Activation::leaky_relu, Activation::sigmoid, Activation::tanh,
                               Activation::relu6};

}  // namespace

class ActivationOps : public BackendTest {};

TEST_P(ActivationOps, ForwardAndBackwardMatchNaiveLoops) {
  const float alpha = 0.1f;
  // -8 to 8 in steps of 0.4: 0 and 6 (relu6's kinks, gradient 0 there as in PyTorch) are on it.
  std::vector<float> xs = ramp(41, -8.0f, 8.0f);
  std::vector<float> gs = ramp(41, 0.5f, -1.5f);
  Tensor x = make(xs, {41}), dy = make(gs, {41});
  for (Activation a : kAll) {
    Tensor y = Tensor::empty(x.shape(), ctx()), dx = Tensor::empty(x.shape(), ctx());
    backend().activation_forward(ctx(), a, alpha, x, y);
    backend().activation_backward(ctx(), a, alpha, x, y, dy, dx);
    std::vector<float> yh = host(y), dxh = host(dx);
    for (std::size_t i = 0; i < xs.size(); ++i) {
      EXPECT_NEAR(yh[i], reference(a, alpha, xs[i]), 1e-6) << activation_name(a) << " x=" << xs[i];
      EXPECT_NEAR(dxh[i], gs[i] * reference_derivative(a, alpha, xs[i]), 1e-6) << activation_name(a) << " x=" << xs[i];
    }
  }
}

TEST_P(ActivationOps, ReluAtZeroHasZeroGradient) {
  Tensor x = make({0.0f, -0.0f}, {2}), dy = make({1.0f, 1.0f}, {2});
  Tensor y = Tensor::empty({2}, ctx()), dx = Tensor::empty({2}, ctx());
  backend().activation_forward(ctx(), Activation::relu, 0.0f, x, y);
  backend().activation_backward(ctx(), Activation::relu, 0.0f, x, y, dy, dx);
  EXPECT_EQ(host(y), (std::vector<float>{0.0f, 0.0f}));
  EXPECT_EQ(host(dx), (std::vector<float>{0.0f, 0.0f}));
}

TEST_P(ActivationOps, ExtremeInputsStayFinite) {
  Tensor x = make({-100.0f, 100.0f}, {2});
  Tensor y = Tensor::empty({2}, ctx());
  backend().activation_forward(ctx(), Activation::sigmoid, 0.0f, x, y);
  EXPECT_EQ(host(y), (std::vector<float>{0.0f, 1.0f}));
  backend().activation_forward(ctx(), Activation::tanh, 0.0f, x, y);
  EXPECT_EQ(host(y), (std::vector<float>{-1.0f, 1.0f}));
}

TEST_P(ActivationOps, ShapeMismatchThrowsNamingTheOp) {
  Tensor x = Tensor::zeros({2, 3}, ctx()), y = Tensor::zeros({3, 2}, ctx());
  try {
    backend().activation_forward(ctx(), Activation::relu, 0.0f, x, y);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("activation_forward"), std::string::npos) << e.what();
  }
  EXPECT_THROW(backend().activation_backward(ctx(), Activation::tanh, 0.0f, x, y, x, x), Error);
}

CUDL_INSTANTIATE_BACKENDS(ActivationOps);

TEST(GradientActivations, EveryActivationMatchesFiniteDifferences) {
  Context ctx;
  Backend& b = ctx.backend();
  std::vector<float> xs = ramp(60, -3.0f, 3.1f), ws = ramp(60, 1.0f, -0.7f);
  for (Activation a : kAll) {
    Tensor x = Tensor::from_host(xs, {3, 20}, ctx);
    Tensor y = Tensor::empty(x.shape(), ctx), dx = Tensor::empty(x.shape(), ctx);
    Tensor dy = Tensor::from_host(ws, x.shape(), ctx);
    b.activation_forward(ctx, a, 0.2f, x, y);
    b.activation_backward(ctx, a, 0.2f, x, y, dy, dx);
    auto loss = [&] {
      b.activation_forward(ctx, a, 0.2f, x, y);
      return cudl::testing::weighted_sum(y.to_vector(ctx), ws);
    };
    cudl::testing::GradCheckOptions opts;
    // ReLU-like functions have a kink at 0 that the ±step difference would straddle.
    opts.skip = [](std::int64_t, float v) { return std::abs(v) < 0.05f; };
    cudl::testing::expect_gradient_matches(ctx, x, dx, loss, std::string(activation_name(a)), opts);
  }
}

// ReLU6 across both kinks: the slope is 1 inside (0, 6) and 0 outside.
TEST(GradientActivations, Relu6AcrossBothKinks) {
  Context ctx;
  Backend& b = ctx.backend();
  std::vector<float> xs = ramp(50, -2.0f, 8.1f), ws = ramp(50, 1.0f, -0.7f);
  Tensor x = Tensor::from_host(xs, {5, 10}, ctx);
  Tensor y = Tensor::empty(x.shape(), ctx), dx = Tensor::empty(x.shape(), ctx);
  Tensor dy = Tensor::from_host(ws, x.shape(), ctx);
  b.activation_forward(ctx, Activation::relu6, 0.0f, x, y);
  b.activation_backward(ctx, Activation::relu6, 0.0f, x, y, dy, dx);
  auto loss = [&] {
    b.activation_forward(ctx, Activation::relu6, 0.0f, x, y);
    return cudl::testing::weighted_sum(y.to_vector(ctx), ws);
  };
  cudl::testing::GradCheckOptions opts;
  opts.skip = [](std::int64_t, float v) { return std::abs(v) < 0.05f || std::abs(v - 6.0f) < 0.05f; };
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "relu6", opts);
  // Values beyond 6 are clamped: the slope there is 0.
  const auto g = dx.to_vector(ctx);
  EXPECT_EQ(g.back(), 0.0f);
  EXPECT_EQ(g.front(), 0.0f);
}
