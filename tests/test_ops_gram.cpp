// Gram matrices against a hand case and a naive triple loop, and the gradient of the input.
#include <cmath>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"

using namespace cudl;
using cudl::testing::BackendTest;

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "gram");

std::vector<float> pseudo_random(int n, int seed) {
  std::vector<float> v;
  for (int i = 0; i < n; ++i) v.push_back(std::cos(static_cast<float>(i * 5 + seed) * 0.61f));
  return v;
}

}  // namespace

class GramOps : public BackendTest {};

TEST_P(GramOps, HandCase1x2x1x2) {
  // F = [[1, 2], [3, 4]]; F Fᵀ = [[5, 11], [11, 25]]; C*H*W = 4.
  Tensor x = make({1, 2, 3, 4}, {1, 2, 1, 2});
  Tensor g = Tensor::empty({1, 2, 2}, ctx());
  backend().gram_forward(ctx(), x, g);
  EXPECT_EQ(host(g), (std::vector<float>{1.25f, 2.75f, 2.75f, 6.25f}));

  // dg = [[1, 0], [2, 0]]: dg + dgᵀ = [[2, 2], [2, 0]]; times F / 4 = [[2, 3], [0.5, 1]].
  Tensor dg = make({1, 0, 2, 0}, {1, 2, 2}), dx = Tensor::empty(x.shape(), ctx());
  backend().gram_backward(ctx(), x, dg, dx);
  EXPECT_EQ(host(dx), (std::vector<float>{2.0f, 3.0f, 0.5f, 1.0f}));
}

TEST_P(GramOps, MatchesNaiveLoopPerSample) {
  const int n = 2, c = 3, h = 4, w = 5, hw = h * w;
  std::vector<float> xs = pseudo_random(n * c * hw, 1);
  Tensor x = make(xs, {n, c, h, w}), g = Tensor::empty({n, c, c}, ctx());
  backend().gram_forward(ctx(), x, g);
  std::vector<float> gh = host(g);
  for (int s = 0; s < n; ++s)
    for (int i = 0; i < c; ++i)
      for (int j = 0; j < c; ++j) {
        double acc = 0;
        for (int k = 0; k < hw; ++k)
          acc += static_cast<double>(xs[static_cast<std::size_t>((s * c + i) * hw + k)]) *
                 xs[static_cast<std::size_t>((s * c + j) * hw + k)];
        EXPECT_NEAR(gh[static_cast<std::size_t>((s * c + i) * c + j)], acc / (c * hw), 1e-6);
      }
}

TEST_P(GramOps, BadShapesThrowNamingTheOp) {
  Tensor x = Tensor::zeros({1, 2, 3, 3}, ctx()), g = Tensor::zeros({1, 3, 3}, ctx());
  try {
    backend().gram_forward(ctx(), x, g);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gram_forward"), std::string::npos) << e.what();
  }
  Tensor flat = Tensor::zeros({2, 9}, ctx());
  EXPECT_THROW(backend().gram_forward(ctx(), flat, g), Error);
  Tensor dx = Tensor::zeros({1, 2, 3, 3}, ctx());
  EXPECT_THROW(backend().gram_backward(ctx(), x, g, dx), Error);
}

CUDL_INSTANTIATE_BACKENDS(GramOps);

TEST(GradientGram, InputGradient) {
  Context ctx;
  Backend& b = ctx.backend();
  Tensor x = Tensor::from_host(pseudo_random(2 * 3 * 3 * 4, 2), {2, 3, 3, 4}, ctx);
  std::vector<float> ws = pseudo_random(2 * 3 * 3, 7);
  Tensor g = Tensor::empty({2, 3, 3}, ctx), dg = Tensor::from_host(ws, g.shape(), ctx);
  Tensor dx = Tensor::empty(x.shape(), ctx);
  b.gram_backward(ctx, x, dg, dx);
  auto loss = [&] {
    b.gram_forward(ctx, x, g);
    return cudl::testing::weighted_sum(g.to_vector(ctx), ws);
  };
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "gram dx");
}
