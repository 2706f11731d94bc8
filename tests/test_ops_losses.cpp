// MSE, L1 and total-variation losses against hand cases and naive loops, with gradient checks.
#include <cmath>
#include <string>
#include <vector>

#include "cudl/engine/cpu_threads.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"

using namespace cudl;
using cudl::testing::BackendTest;

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "mse_loss", "l1_loss", "tv_loss");

std::vector<float> pseudo_random(int n, int seed) {
  std::vector<float> v;
  for (int i = 0; i < n; ++i) v.push_back(std::sin(static_cast<float>(i * 3 + seed) * 0.77f));
  return v;
}

double naive_tv(const std::vector<float>& x, int planes, int h, int w) {
  double s = 0;
  for (int p = 0; p < planes; ++p)
    for (int i = 0; i < h; ++i)
      for (int j = 0; j < w; ++j) {
        auto at = [&](int a, int b) { return static_cast<double>(x[static_cast<std::size_t>((p * h + a) * w + b)]); };
        if (i + 1 < h) s += (at(i + 1, j) - at(i, j)) * (at(i + 1, j) - at(i, j));
        if (j + 1 < w) s += (at(i, j + 1) - at(i, j)) * (at(i, j + 1) - at(i, j));
      }
  return s;
}

}  // namespace

class LossOps : public BackendTest {};

TEST_P(LossOps, MseAndL1HandCase) {
  Tensor a = make({1, 2, 3, 4}, {2, 2}), b = make({0, 2, 5, 3}, {2, 2});
  Tensor loss = Tensor::empty({1}, ctx()), da = Tensor::empty({2, 2}, ctx());
  backend().mse_loss_forward(ctx(), a, b, loss);
  EXPECT_FLOAT_EQ(loss.item(ctx()), (1 + 0 + 4 + 1) / 4.0f);
  backend().mse_loss_backward(ctx(), a, b, 2.0f, da);  // 2 * 2(a-b)/4
  EXPECT_EQ(host(da), (std::vector<float>{1.0f, 0.0f, -2.0f, 1.0f}));
  backend().l1_loss_forward(ctx(), a, b, loss);
  EXPECT_FLOAT_EQ(loss.item(ctx()), (1 + 0 + 2 + 1) / 4.0f);
  backend().l1_loss_backward(ctx(), a, b, 2.0f, da);  // 2 * sign(a-b)/4, 0 at equality
  EXPECT_EQ(host(da), (std::vector<float>{0.5f, 0.0f, -0.5f, 0.5f}));
}

TEST_P(LossOps, TvHandCase1x1x2x2) {
  // x = [[1, 2], [4, 8]]: vertical (4-1)² + (8-2)² = 45, horizontal (2-1)² + (8-4)² = 17.
  Tensor x = make({1, 2, 4, 8}, {1, 1, 2, 2});
  Tensor loss = Tensor::empty({1}, ctx());
  backend().tv_loss_forward(ctx(), x, loss);
  EXPECT_FLOAT_EQ(loss.item(ctx()), 62.0f);
  // ∂/∂x00 = -2(3) - 2(1) = -8; x01: -2(6) + 2(1) = -10; x10: 2(3) - 2(4) = -2; x11: 2(6) + 2(4) = 20.
  Tensor dx = Tensor::empty(x.shape(), ctx());
  backend().tv_loss_backward(ctx(), x, 0.5f, dx, false);
  EXPECT_EQ(host(dx), (std::vector<float>{-4.0f, -5.0f, -1.0f, 10.0f}));
  backend().tv_loss_backward(ctx(), x, 0.5f, dx, true);
  EXPECT_EQ(host(dx), (std::vector<float>{-8.0f, -10.0f, -2.0f, 20.0f}));
}

TEST_P(LossOps, TvSumsEverySampleAndChannel) {
  const int n = 2, c = 3, h = 5, w = 4;
  std::vector<float> xs = pseudo_random(n * c * h * w, 4);
  Tensor x = make(xs, {n, c, h, w}), loss = Tensor::empty({1}, ctx());
  backend().tv_loss_forward(ctx(), x, loss);
  EXPECT_NEAR(loss.item(ctx()), naive_tv(xs, n * c, h, w), 1e-4);
}

TEST_P(LossOps, MismatchedShapesThrowNamingTheOp) {
  Tensor a = Tensor::zeros({2, 3}, ctx()), b = Tensor::zeros({3, 2}, ctx()), loss = Tensor::empty({1}, ctx());
  for (bool l1 : {false, true}) {
    try {
      l1 ? backend().l1_loss_forward(ctx(), a, b, loss) : backend().mse_loss_forward(ctx(), a, b, loss);
      FAIL() << "expected an Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(l1 ? "l1_loss_forward" : "mse_loss_forward"), std::string::npos) << e.what();
    }
  }
  Tensor two = Tensor::empty({2}, ctx());
  EXPECT_THROW(backend().mse_loss_forward(ctx(), a, a, two), Error);
  EXPECT_THROW(backend().tv_loss_forward(ctx(), a, loss), Error);
}

CUDL_INSTANTIATE_BACKENDS(LossOps);

TEST(GradientLosses, MseAndL1WithRespectToA) {
  Context ctx;
  Backend& be = ctx.backend();
  std::vector<float> bs = pseudo_random(24, 1);
  for (bool l1 : {false, true}) {
    Tensor a = Tensor::from_host(pseudo_random(24, 8), {4, 6}, ctx), b = Tensor::from_host(bs, {4, 6}, ctx);
    Tensor loss = Tensor::empty({1}, ctx), da = Tensor::empty(a.shape(), ctx);
    const float dloss = 0.7f;
    l1 ? be.l1_loss_backward(ctx, a, b, dloss, da) : be.mse_loss_backward(ctx, a, b, dloss, da);
    auto f = [&] {
      l1 ? be.l1_loss_forward(ctx, a, b, loss) : be.mse_loss_forward(ctx, a, b, loss);
      return dloss * static_cast<double>(loss.item(ctx));
    };
    cudl::testing::GradCheckOptions opts;
    // |a-b| has a kink at a == b.
    if (l1) opts.skip = [&](std::int64_t i, float v) { return std::abs(v - bs[static_cast<std::size_t>(i)]) < 0.05f; };
    cudl::testing::expect_gradient_matches(ctx, a, da, f, l1 ? "l1" : "mse", opts);
  }
}

TEST(GradientLosses, TvInputGradient) {
  Context ctx;
  Backend& be = ctx.backend();
  Tensor x = Tensor::from_host(pseudo_random(2 * 2 * 4 * 5, 3), {2, 2, 4, 5}, ctx);
  Tensor loss = Tensor::empty({1}, ctx), dx = Tensor::empty(x.shape(), ctx);
  be.tv_loss_backward(ctx, x, 1.0f, dx, false);
  auto f = [&] {
    be.tv_loss_forward(ctx, x, loss);
    return static_cast<double>(loss.item(ctx));
  };
  cudl::testing::expect_gradient_matches(ctx, x, dx, f, "tv");
}

// The CPU sums in double per chunk (lanes, then pairwise, then the tail) and adds the chunks in
// order: within a few double roundings of the ordered sum, so the f32 loss is its rounding or one
// f32 ulp from it, and the same bits whatever the thread count (chunks larger than one thread's
// share, a tail that is not a whole lane group).
TEST(LossSums, CpuMseAndL1AreTheOrderedDoubleSumAndIndependentOfThreads) {
  Context ctx(Device::cpu());
  const int n = 3 * 4096 * 9 + 37;
  const auto av = pseudo_random(n, 5), bv = pseudo_random(n, 11);
  const Tensor a = Tensor::from_host(av, Shape{n}, ctx), b = Tensor::from_host(bv, Shape{n}, ctx);
  double squared = 0, absolute = 0;
  for (int i = 0; i < n; ++i) {
    const double d = static_cast<double>(av[static_cast<std::size_t>(i)]) - bv[static_cast<std::size_t>(i)];
    squared += d * d;
    absolute += std::fabs(d);
  }
  const int before = cpu_threads();
  std::vector<float> seen;
  for (const int threads : {1, 2, 3}) {
    set_cpu_threads(threads);
    Tensor mse = Tensor::empty(Shape{1}, ctx), l1 = Tensor::empty(Shape{1}, ctx);
    ctx.backend().mse_loss_forward(ctx, a, b, mse);
    ctx.backend().l1_loss_forward(ctx, a, b, l1);
    const float m = mse.to_vector(ctx)[0], l = l1.to_vector(ctx)[0];
    const auto expected_m = static_cast<float>(squared / n), expected_l = static_cast<float>(absolute / n);
    EXPECT_LE(std::fabs(m - expected_m), std::nextafter(expected_m, 1e9f) - expected_m) << threads;
    EXPECT_LE(std::fabs(l - expected_l), std::nextafter(expected_l, 1e9f) - expected_l) << threads;
    if (seen.empty()) {
      seen = {m, l};
    } else {
      EXPECT_EQ(m, seen[0]) << threads << " threads";
      EXPECT_EQ(l, seen[1]) << threads << " threads";
    }
  }
  set_cpu_threads(before);
}
