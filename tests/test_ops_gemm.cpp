// gemm, bias_add and bias_grad against hand-computed cases and naive loops, on every backend;
// gradient checks of the backward formulas on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;  // BackendTest, expect_close, expect_error, random_values, zeros

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "gemm", "bias_add", "bias_grad");

// C = alpha * op(A) op(B) + beta * C in double, from row-major storage.
std::vector<double> naive_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                               const std::vector<float>& a, const std::vector<float>& b, float beta,
                               const std::vector<float>& c) {
  std::vector<double> out(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t l = 0; l < k; ++l) {
        const double av = ta ? a[static_cast<std::size_t>(l * m + i)] : a[static_cast<std::size_t>(i * k + l)];
        const double bv = tb ? b[static_cast<std::size_t>(j * k + l)] : b[static_cast<std::size_t>(l * n + j)];
        s += av * bv;
      }
      out[static_cast<std::size_t>(i * n + j)] =
          alpha * s + beta * static_cast<double>(c[static_cast<std::size_t>(i * n + j)]);
    }
  }
  return out;
}

}  // namespace

class GemmTest : public BackendTest {};

TEST_P(GemmTest, HandComputed) {
  auto a = make({1, 2, 3, 4, 5, 6}, {2, 3});
  auto b = make({1, 0, 0, 1, 2, -1}, {3, 2});
  auto c = make({100, 100, 100, 100}, {2, 2});
  backend().gemm(ctx(), false, false, 1.0f, a, b, 0.0f, c);
  // [1,2,3;4,5,6] * [1,0;0,1;2,-1] = [7,-1;16,-1]
  EXPECT_EQ(host(c), (std::vector<float>{7, -1, 16, -1}));
  // D = 2 Aᵀ I + D: the transposed operand and beta = 1.
  auto eye = make({1, 0, 0, 1}, {2, 2});
  auto d = make({1, 1, 1, 1, 1, 1}, {3, 2});
  backend().gemm(ctx(), true, false, 2.0f, a, eye, 1.0f, d);
  EXPECT_EQ(host(d), (std::vector<float>{3, 9, 5, 11, 7, 13}));
}

TEST_P(GemmTest, MatchesNaiveForEveryTransposition) {
  struct Dims {
    std::int64_t m, n, k;
  };
  unsigned seed = 1;
  for (Dims d : {Dims{3, 5, 4}, Dims{1, 7, 2}, Dims{6, 2, 9}, Dims{17, 13, 33}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        const auto av = random_values(d.m * d.k, seed++);
        const auto bv = random_values(d.k * d.n, seed++);
        const auto cv = random_values(d.m * d.n, seed++);
        auto a = make(av, ta ? Shape{d.k, d.m} : Shape{d.m, d.k});
        auto b = make(bv, tb ? Shape{d.n, d.k} : Shape{d.k, d.n});
        auto c = make(cv, {d.m, d.n});
        backend().gemm(ctx(), ta, tb, 1.5f, a, b, 0.5f, c);
        expect_close(host(c), naive_gemm(ta, tb, d.m, d.n, d.k, 1.5f, av, bv, 0.5f, cv),
                     "gemm m=" + std::to_string(d.m) + " n=" + std::to_string(d.n) + " k=" + std::to_string(d.k) +
                         " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
      }
    }
  }
}

TEST_P(GemmTest, BadShapesThrow) {
  auto a = make(random_values(6, 1), {2, 3});
  auto b = make(random_values(8, 2), {4, 2});
  auto c = make(random_values(4, 3), {2, 2});
  expect_error([&] { backend().gemm(ctx(), false, false, 1.0f, a, b, 0.0f, c); }, {"gemm", "[2,3]", "[4,2]"});
  auto b2 = make(random_values(6, 2), {3, 2});
  auto c2 = make(random_values(6, 3), {3, 2});
  expect_error([&] { backend().gemm(ctx(), false, false, 1.0f, a, b2, 0.0f, c2); }, {"gemm", "c=[3,2]", "[2,2]"});
  auto v = make(random_values(3, 4), {3});
  expect_error([&] { backend().gemm(ctx(), false, false, 1.0f, v, b2, 0.0f, c); }, {"gemm", "rank 2", "[3]"});
}

TEST_P(GemmTest, BiasAddHandComputedAndNaive) {
  auto y = make({1, 2, 3, 4, 5, 6}, {2, 3});
  auto bias = make({10, 20, 30}, {3});
  backend().bias_add(ctx(), y, bias);
  EXPECT_EQ(host(y), (std::vector<float>{11, 22, 33, 14, 25, 36}));

  const Shape s{2, 3, 4, 5};
  const auto yv = random_values(s.numel(), 7);
  const auto bv = random_values(3, 8);
  auto y4 = make(yv, s);
  auto b4 = make(bv, {3});
  backend().bias_add(ctx(), y4, b4);
  std::vector<double> expected(yv.size());
  for (std::size_t i = 0; i < yv.size(); ++i) expected[i] = yv[i] + bv[(i / 20) % 3];
  expect_close(host(y4), expected, "bias_add 4-D");
}

TEST_P(GemmTest, BiasGradHandComputedNaiveAndAccumulate) {
  auto dy = make({1, 2, 3, 4, 5, 6}, {2, 3});
  auto db = make({100, 100, 100}, {3});
  backend().bias_grad(ctx(), dy, db, false);
  EXPECT_EQ(host(db), (std::vector<float>{5, 7, 9}));
  backend().bias_grad(ctx(), dy, db, true);
  EXPECT_EQ(host(db), (std::vector<float>{10, 14, 18}));

  const Shape s{3, 4, 2, 5};
  const auto dv = random_values(s.numel(), 9);
  const auto init = random_values(4, 10);
  auto dy4 = make(dv, s);
  auto db4 = make(init, {4});
  backend().bias_grad(ctx(), dy4, db4, true);
  std::vector<double> expected(init.begin(), init.end());
  for (std::size_t i = 0; i < dv.size(); ++i) expected[(i / 10) % 4] += dv[i];
  expect_close(host(db4), expected, "bias_grad 4-D accumulate");
}

// Values k/64 with |k| <= 128 are exact in f32, bf16 and f16, and every partial sum here is a
// multiple of 1/64 below 2^17, exact in any order: the sum per channel must be exact, so a lane, a
// tail element or a row counted twice or missed shows. Inner sizes around the CPU's 32-lane blocks,
// 1 (a Linear's bias) and MNIST's 24x24, in every dtype; accumulate adds to what db held.
TEST_P(GemmTest, BiasGradIsExactOverLanesAndTailsInEveryDtype) {
  for (const DType dt : {DType::f32, DType::bf16, DType::f16}) {
    for (const std::int64_t inner : {1, 3, 31, 32, 33, 95, 576}) {
      SCOPED_TRACE(fmt::format("{} inner={}", dtype_name(dt), inner));
      const std::int64_t outer = 3, channels = 5;
      std::vector<float> dv(static_cast<std::size_t>(outer * channels * inner));
      std::vector<double> want(static_cast<std::size_t>(channels), 0.25);
      for (std::size_t i = 0; i < dv.size(); ++i) {
        dv[i] = static_cast<float>(static_cast<int>((i * 37 + 11) % 257) - 128) / 64.0f;
        want[(i / static_cast<std::size_t>(inner)) % static_cast<std::size_t>(channels)] += dv[i];
      }
      const Shape s = inner == 1 ? Shape{outer, channels} : Shape{outer, channels, 1, inner};
      Tensor dy = Tensor::from_host(dv, s, ctx(), dt), db = Tensor::full({channels}, 0.25f, ctx());
      backend().bias_grad(ctx(), dy, db, true);
      const std::vector<float> got = host(db);
      for (std::size_t c = 0; c < got.size(); ++c) EXPECT_EQ(got[c], static_cast<float>(want[c])) << "channel " << c;
    }
  }
}

TEST_P(GemmTest, BiasBadShapesThrow) {
  auto y = make(random_values(6, 1), {2, 3});
  auto bias = make(random_values(2, 2), {2});
  expect_error([&] { backend().bias_add(ctx(), y, bias); }, {"bias_add", "[2]", "[2,3]"});
  expect_error([&] { backend().bias_grad(ctx(), y, bias, false); }, {"bias_grad", "[2]", "[2,3]"});
  auto v = make(random_values(3, 3), {3});
  auto b3 = make(random_values(3, 2), {3});
  expect_error([&] { backend().bias_add(ctx(), v, b3); }, {"bias_add", "[3]"});
}

CUDL_INSTANTIATE_BACKENDS(GemmTest);

// ---- gradient checks (CPU, finite differences) ----

TEST(GradientGemm, DaAndDbFromGemmCalls) {
  Context ctx;
  Backend& be = ctx.backend();
  const std::int64_t m = 3, k = 4, n = 5;
  auto a = Tensor::from_host(random_values(m * k, 1), {m, k}, ctx);
  auto b = Tensor::from_host(random_values(k * n, 2), {k, n}, ctx);
  auto c = zeros({m, n}, ctx);
  const auto weights = random_values(m * n, 3);
  auto g = Tensor::from_host(weights, {m, n}, ctx);
  auto loss = [&] {
    be.gemm(ctx, false, false, 1.0f, a, b, 0.0f, c);
    return cudl::testing::weighted_sum(c.to_vector(ctx), weights);
  };
  // C = A B: dA = G Bᵀ, dB = Aᵀ G.
  auto da = zeros({m, k}, ctx);
  auto db = zeros({k, n}, ctx);
  be.gemm(ctx, false, true, 1.0f, g, b, 0.0f, da);
  be.gemm(ctx, true, false, 1.0f, a, g, 0.0f, db);
  cudl::testing::expect_gradient_matches(ctx, a, da, loss, "gemm dA");
  cudl::testing::expect_gradient_matches(ctx, b, db, loss, "gemm dB");
}

TEST(GradientGemm, TransposedOperands) {
  Context ctx;
  Backend& be = ctx.backend();
  const std::int64_t m = 2, k = 3, n = 4;
  auto a = Tensor::from_host(random_values(k * m, 4), {k, m}, ctx);  // used as Aᵀ
  auto b = Tensor::from_host(random_values(n * k, 5), {n, k}, ctx);  // used as Bᵀ
  auto c = zeros({m, n}, ctx);
  const auto weights = random_values(m * n, 6);
  auto g = Tensor::from_host(weights, {m, n}, ctx);
  auto loss = [&] {
    be.gemm(ctx, true, true, 1.0f, a, b, 0.0f, c);
    return cudl::testing::weighted_sum(c.to_vector(ctx), weights);
  };
  // C = aᵀ bᵀ: da = (G b)ᵀ = bᵀ Gᵀ, db = (aG)ᵀ = Gᵀ aᵀ.
  auto da = zeros({k, m}, ctx);
  auto db = zeros({n, k}, ctx);
  be.gemm(ctx, true, true, 1.0f, b, g, 0.0f, da);
  be.gemm(ctx, true, true, 1.0f, g, a, 0.0f, db);
  cudl::testing::expect_gradient_matches(ctx, a, da, loss, "gemm(trans, trans) da");
  cudl::testing::expect_gradient_matches(ctx, b, db, loss, "gemm(trans, trans) db");
}

TEST(GradientBias, BiasGradIsTheGradientOfBiasAdd) {
  Context ctx;
  Backend& be = ctx.backend();
  const Shape s{2, 3, 2, 2};
  const auto x = random_values(s.numel(), 1);
  auto bias = Tensor::from_host(random_values(3, 2), {3}, ctx);
  const auto weights = random_values(s.numel(), 3);
  auto loss = [&] {
    auto fresh = Tensor::from_host(x, s, ctx);
    be.bias_add(ctx, fresh, bias);
    return cudl::testing::weighted_sum(fresh.to_vector(ctx), weights);
  };
  auto g = Tensor::from_host(weights, s, ctx);
  auto db = zeros({3}, ctx);
  be.bias_grad(ctx, g, db, false);
  cudl::testing::expect_gradient_matches(ctx, bias, db, loss, "bias_add dbias");
}
