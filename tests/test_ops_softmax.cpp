// Softmax, log-softmax and softmax cross-entropy against hand cases and naive loops.
#include <cmath>
#include <string>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::BackendTest;
using cudl::testing::expect_error_by_next_read;
using cudl::testing::label_error_fragments;

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "softmax", "log_softmax", "softmax_cross_entropy");

std::vector<double> naive_softmax(const std::vector<float>& row) {
  double m = row[0];
  for (float v : row) m = std::max<double>(m, v);
  double s = 0;
  for (float v : row) s += std::exp(v - m);
  std::vector<double> out;
  for (float v : row) out.push_back(std::exp(v - m) / s);
  return out;
}

std::vector<float> pseudo_random(int n, int seed) {
  std::vector<float> v;
  for (int i = 0; i < n; ++i) v.push_back(std::sin(static_cast<float>(i * 7 + seed) * 0.37f) * 3.0f);
  return v;
}

}  // namespace

class SoftmaxOps : public BackendTest {};

TEST_P(SoftmaxOps, ForwardMatchesNaiveRowsAndIsStableForHugeLogits) {
  std::vector<float> xs = {1, 2, 3, 4, 1000, 1001, 1002, 1003, -5, 0, 5, 0};
  Tensor x = make(xs, {3, 4});
  Tensor y = Tensor::empty(x.shape(), ctx()), ly = Tensor::empty(x.shape(), ctx());
  backend().softmax_forward(ctx(), x, y);
  backend().log_softmax_forward(ctx(), x, ly);
  std::vector<float> yh = host(y), lyh = host(ly);
  for (int r = 0; r < 3; ++r) {
    std::vector<float> row(xs.begin() + r * 4, xs.begin() + r * 4 + 4);
    std::vector<double> ref = naive_softmax(row);
    for (int j = 0; j < 4; ++j) {
      EXPECT_NEAR(yh[static_cast<std::size_t>(r * 4 + j)], ref[static_cast<std::size_t>(j)], 1e-6);
      EXPECT_NEAR(lyh[static_cast<std::size_t>(r * 4 + j)], std::log(ref[static_cast<std::size_t>(j)]), 1e-5);
    }
  }
  // Rows 0 and 1 differ by a constant shift, so their softmax agrees.
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(yh[static_cast<std::size_t>(j)], yh[static_cast<std::size_t>(4 + j)], 1e-6);
}

TEST_P(SoftmaxOps, BackwardMatchesJacobianProduct) {
  std::vector<float> xs = pseudo_random(10, 1), gs = pseudo_random(10, 2);
  Tensor x = make(xs, {2, 5}), dy = make(gs, {2, 5});
  Tensor y = Tensor::empty(x.shape(), ctx()), dx = Tensor::empty(x.shape(), ctx());
  Tensor ly = Tensor::empty(x.shape(), ctx()), ldx = Tensor::empty(x.shape(), ctx());
  backend().softmax_forward(ctx(), x, y);
  backend().softmax_backward(ctx(), y, dy, dx);
  backend().log_softmax_forward(ctx(), x, ly);
  backend().log_softmax_backward(ctx(), ly, dy, ldx);
  std::vector<float> dxh = host(dx), ldxh = host(ldx);
  for (int r = 0; r < 2; ++r) {
    std::vector<double> s = naive_softmax(std::vector<float>(xs.begin() + r * 5, xs.begin() + r * 5 + 5));
    for (int i = 0; i < 5; ++i) {
      double soft = 0, logsoft = 0;
      for (int j = 0; j < 5; ++j) {
        const double g = gs[static_cast<std::size_t>(r * 5 + j)];
        const auto si = s[static_cast<std::size_t>(i)], sj = s[static_cast<std::size_t>(j)];
        soft += g * sj * ((i == j ? 1.0 : 0.0) - si);  // ∂y_j/∂x_i
        logsoft += g * ((i == j ? 1.0 : 0.0) - si);    // ∂log y_j/∂x_i
      }
      EXPECT_NEAR(dxh[static_cast<std::size_t>(r * 5 + i)], soft, 1e-5);
      EXPECT_NEAR(ldxh[static_cast<std::size_t>(r * 5 + i)], logsoft, 1e-5);
    }
  }
}

TEST_P(SoftmaxOps, CrossEntropyHandCase) {
  // Row 0: uniform logits over 2 classes -> -log(1/2). Row 1: logits (0, ln 3) -> p = (1/4, 3/4), label 1.
  Tensor logits = make({0.0f, 0.0f, 0.0f, std::log(3.0f)}, {2, 2});
  Tensor labels = make_int({0, 1}, {2});
  Tensor probs = Tensor::empty({2, 2}, ctx()), loss = Tensor::empty({1}, ctx());
  backend().softmax_cross_entropy_forward(ctx(), logits, labels, probs, loss);
  const double expected = (std::log(2.0) - std::log(0.75)) / 2.0;
  EXPECT_NEAR(loss.item(ctx()), expected, 1e-6);
  std::vector<float> p = host(probs);
  EXPECT_NEAR(p[0], 0.5, 1e-6);
  EXPECT_NEAR(p[2], 0.25, 1e-6);
  EXPECT_NEAR(p[3], 0.75, 1e-6);

  Tensor dlogits = Tensor::empty({2, 2}, ctx());
  backend().softmax_cross_entropy_backward(ctx(), probs, labels, 2.0f, dlogits);
  // (probs - onehot) * 2 / 2
  std::vector<float> d = host(dlogits);
  EXPECT_NEAR(d[0], -0.5, 1e-6);
  EXPECT_NEAR(d[1], 0.5, 1e-6);
  EXPECT_NEAR(d[2], 0.25, 1e-6);
  EXPECT_NEAR(d[3], -0.25, 1e-6);
}

TEST_P(SoftmaxOps, CrossEntropyIsFiniteWhenTheLabelProbabilityUnderflows) {
  Tensor logits = make({0.0f, 200.0f}, {1, 2}), labels = make_int({0}, {1});
  Tensor probs = Tensor::empty({1, 2}, ctx()), loss = Tensor::empty({1}, ctx());
  backend().softmax_cross_entropy_forward(ctx(), logits, labels, probs, loss);
  EXPECT_NEAR(loss.item(ctx()), 200.0, 1e-3);
}

// Out-of-range labels. The CPU checks them on the host, inside the call; CUDA checks them on the
// device and reports them at the next synchronising read of the result (here `loss.item`), so the
// error may come from either. See label_error_fragments for what the message must say.
TEST_P(SoftmaxOps, LabelOutOfRangeThrowsNamingRowLabelAndK) {
  const bool on_cpu = GetParam() == DeviceType::cpu;
  Tensor logits = Tensor::zeros({3, 4}, ctx()), probs = Tensor::empty({3, 4}, ctx());
  Tensor loss = Tensor::empty({1}, ctx());
  for (std::int32_t bad : {4, -1}) {
    SCOPED_TRACE("label " + std::to_string(bad));
    Tensor labels = make_int({0, bad, 2}, {3});
    expect_error_by_next_read(
        [&] { backend().softmax_cross_entropy_forward(ctx(), logits, labels, probs, loss); },
        [&] { (void)loss.item(ctx()); },
        label_error_fragments(on_cpu, "softmax_cross_entropy", "softmax_cross_entropy_forward", 1, bad, 4));
  }
}

TEST_P(SoftmaxOps, CrossEntropyBackwardLabelOutOfRangeThrowsNamingRowLabelAndK) {
  const bool on_cpu = GetParam() == DeviceType::cpu;
  Tensor probs = Tensor::full({3, 4}, 0.25f, ctx()), dlogits = Tensor::empty({3, 4}, ctx());
  for (std::int32_t bad : {4, -1}) {
    SCOPED_TRACE("label " + std::to_string(bad));
    Tensor labels = make_int({0, 1, bad}, {3});
    expect_error_by_next_read(
        [&] { backend().softmax_cross_entropy_backward(ctx(), probs, labels, 1.0f, dlogits); },
        [&] { (void)host(dlogits); },
        label_error_fragments(on_cpu, "softmax_cross_entropy", "softmax_cross_entropy_backward", 2, bad, 4));
  }
  // A good call afterwards works: the fault does not stick to the context.
  Tensor good = make_int({0, 1, 3}, {3});
  backend().softmax_cross_entropy_backward(ctx(), probs, good, 3.0f, dlogits);
  EXPECT_EQ(host(dlogits), (std::vector<float>{-0.75f, 0.25f, 0.25f, 0.25f,  //
                                               0.25f, -0.75f, 0.25f, 0.25f,  //
                                               0.25f, 0.25f, 0.25f, -0.75f}));
}

TEST_P(SoftmaxOps, BadShapesThrow) {
  Tensor x3 = Tensor::zeros({2, 3, 4}, ctx()), y3 = Tensor::zeros({2, 3, 4}, ctx());
  EXPECT_THROW(backend().softmax_forward(ctx(), x3, y3), Error);
  Tensor x = Tensor::zeros({2, 3}, ctx()), y = Tensor::zeros({3, 2}, ctx());
  EXPECT_THROW(backend().log_softmax_forward(ctx(), x, y), Error);
  Tensor labels = make_int({0, 1, 2}, {3}), loss = Tensor::empty({1}, ctx());
  Tensor probs = Tensor::empty({2, 3}, ctx());
  EXPECT_THROW(backend().softmax_cross_entropy_forward(ctx(), x, labels, probs, loss), Error);
}

CUDL_INSTANTIATE_BACKENDS(SoftmaxOps);

TEST(GradientSoftmax, SoftmaxAndLogSoftmax) {
  Context ctx;
  Backend& b = ctx.backend();
  std::vector<float> ws = pseudo_random(12, 5);
  for (bool log : {false, true}) {
    Tensor x = Tensor::from_host(pseudo_random(12, 3), {3, 4}, ctx);
    Tensor y = Tensor::empty(x.shape(), ctx), dx = Tensor::empty(x.shape(), ctx);
    Tensor dy = Tensor::from_host(ws, x.shape(), ctx);
    auto forward = [&] { log ? b.log_softmax_forward(ctx, x, y) : b.softmax_forward(ctx, x, y); };
    forward();
    log ? b.log_softmax_backward(ctx, y, dy, dx) : b.softmax_backward(ctx, y, dy, dx);
    auto loss = [&] {
      forward();
      return cudl::testing::weighted_sum(y.to_vector(ctx), ws);
    };
    cudl::testing::expect_gradient_matches(ctx, x, dx, loss, log ? "log_softmax" : "softmax");
  }
}

TEST(GradientSoftmax, CrossEntropyWithRespectToLogits) {
  Context ctx;
  Backend& b = ctx.backend();
  Tensor x = Tensor::from_host(pseudo_random(15, 9), {3, 5}, ctx);
  Tensor labels = Tensor::from_host(std::vector<std::int32_t>{4, 0, 2}, {3}, ctx);
  Tensor probs = Tensor::empty(x.shape(), ctx), loss = Tensor::empty({1}, ctx), dx = Tensor::empty(x.shape(), ctx);
  const float dloss = 1.5f;
  b.softmax_cross_entropy_forward(ctx, x, labels, probs, loss);
  b.softmax_cross_entropy_backward(ctx, probs, labels, dloss, dx);
  auto f = [&] {
    b.softmax_cross_entropy_forward(ctx, x, labels, probs, loss);
    return dloss * static_cast<double>(loss.item(ctx));
  };
  cudl::testing::expect_gradient_matches(ctx, x, dx, f, "softmax_cross_entropy");
}
