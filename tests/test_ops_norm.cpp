// Per-channel affine, batch norm (train, eval, backward), dot and clamp against naive loops and
// hand cases on both backends, with gradient checks on the CPU.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"

using namespace cudl;
using cudl::testing::BackendTest;

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "channel_affine", "batchnorm");

std::vector<float> pseudo_random(std::int64_t n, int seed, float amplitude = 1.0f, float offset = 0.0f) {
  std::vector<float> v;
  for (std::int64_t i = 0; i < n; ++i)
    v.push_back(offset + amplitude * std::sin(static_cast<float>(i * 7 + seed) * 0.61f));
  return v;
}

// x viewed as [outer, C, inner]; element (o, c, i) at (o * C + c) * inner + i.
struct Dims {
  std::int64_t outer, channels, inner;
  std::size_t at(std::int64_t o, std::int64_t c, std::int64_t i) const {
    return static_cast<std::size_t>((o * channels + c) * inner + i);
  }
};

Dims dims_of(const Shape& s) {
  Dims d{s[0], s[1], 1};
  for (int i = 2; i < s.rank(); ++i) d.inner *= s[i];
  return d;
}

// Batch statistics in double: mean and biased variance per channel.
void naive_stats(const std::vector<float>& x, const Dims& d, std::vector<double>& mean, std::vector<double>& var) {
  mean.assign(static_cast<std::size_t>(d.channels), 0.0);
  var.assign(mean.size(), 0.0);
  const double count = static_cast<double>(d.outer * d.inner);
  for (std::int64_t c = 0; c < d.channels; ++c) {
    const auto uc = static_cast<std::size_t>(c);
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t i = 0; i < d.inner; ++i) mean[uc] += x[d.at(o, c, i)];
    mean[uc] /= count;
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t i = 0; i < d.inner; ++i) var[uc] += std::pow(x[d.at(o, c, i)] - mean[uc], 2);
    var[uc] /= count;
  }
}

void expect_near_all(const std::vector<float>& got, const std::vector<double>& want, double tol,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1.0 + std::abs(want[i]))) << what << " [" << i << "]";
}

}  // namespace

class NormOps : public BackendTest {};

TEST_P(NormOps, ChannelAffineMatchesNaiveLoop) {
  for (const Shape& shape : {Shape{2, 3, 4, 5}, Shape{4, 3}, Shape{2, 3, 2, 2, 3}}) {
    const std::vector<float> xs = pseudo_random(shape.numel(), 1, 2.0f), scale = {0.5f, -2.0f, 3.0f},
                             shift = {1.0f, 0.25f, -4.0f};
    Tensor x = make(xs, shape), s = make(scale, {3}), b = make(shift, {3}), y = Tensor::empty(shape, ctx());
    backend().channel_affine(ctx(), x, s, b, y);
    const Dims d = dims_of(shape);
    std::vector<double> want(xs.size()), want_dx(xs.size());
    const std::vector<float> dys = pseudo_random(shape.numel(), 2);
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t c = 0; c < d.channels; ++c)
        for (std::int64_t i = 0; i < d.inner; ++i) {
          const std::size_t k = d.at(o, c, i);
          want[k] =
              static_cast<double>(xs[k]) * scale[static_cast<std::size_t>(c)] + shift[static_cast<std::size_t>(c)];
          want_dx[k] = static_cast<double>(dys[k]) * scale[static_cast<std::size_t>(c)];
        }
    expect_near_all(host(y), want, 1e-6, fmt::format("channel_affine {}", shape));

    Tensor dy = make(dys, shape), dx = Tensor::empty(shape, ctx());
    backend().channel_affine_backward(ctx(), dy, s, dx);
    expect_near_all(host(dx), want_dx, 1e-6, fmt::format("channel_affine_backward {}", shape));

    backend().channel_affine(ctx(), x, s, b, x);  // in place
    expect_near_all(host(x), want, 1e-6, fmt::format("channel_affine in place {}", shape));
  }
}

TEST_P(NormOps, BatchNormTrainMatchesNaive) {
  for (const Shape& shape : {Shape{3, 2, 3, 4}, Shape{5, 3}}) {
    const Dims d = dims_of(shape);
    const auto c = static_cast<std::size_t>(d.channels);
    // An offset far from zero: a one-pass E[x²] - E[x]² would lose digits here.
    const std::vector<float> xs = pseudo_random(shape.numel(), 3, 2.0f, 10.0f);
    const std::vector<float> gamma = pseudo_random(d.channels, 4, 1.0f, 1.0f), beta = pseudo_random(d.channels, 5);
    std::vector<float> rm0(c, 0.5f), rv0(c, 2.0f);
    const float eps = 1e-3f, momentum = 0.1f;
    Tensor x = make(xs, shape), g = make(gamma, {d.channels}), b = make(beta, {d.channels});
    Tensor rm = make(rm0, {d.channels}), rv = make(rv0, {d.channels});
    Tensor y = Tensor::empty(shape, ctx()), sm = Tensor::empty({d.channels}, ctx()),
           si = Tensor::empty({d.channels}, ctx());
    backend().batchnorm_forward_train(ctx(), x, g, b, eps, momentum, rm, rv, y, sm, si);

    std::vector<double> mean, var;
    naive_stats(xs, d, mean, var);
    const double count = static_cast<double>(d.outer * d.inner);
    std::vector<double> want_y(xs.size()), want_rm(c), want_rv(c), want_si(c);
    for (std::size_t k = 0; k < c; ++k) {
      want_si[k] = 1.0 / std::sqrt(var[k] + eps);
      want_rm[k] = (1.0 - momentum) * rm0[k] + momentum * mean[k];
      want_rv[k] = (1.0 - momentum) * rv0[k] + momentum * var[k] * count / (count - 1.0);
    }
    for (std::int64_t o = 0; o < d.outer; ++o)
      for (std::int64_t ch = 0; ch < d.channels; ++ch)
        for (std::int64_t i = 0; i < d.inner; ++i) {
          const auto k = static_cast<std::size_t>(ch);
          want_y[d.at(o, ch, i)] = (xs[d.at(o, ch, i)] - mean[k]) * want_si[k] * gamma[k] + beta[k];
        }
    const std::string name = fmt::format("{}", shape);
    expect_near_all(host(y), want_y, 1e-4, "y " + name);
    expect_near_all(host(sm), mean, 1e-5, "save_mean " + name);
    expect_near_all(host(si), want_si, 1e-4, "save_invstd " + name);
    expect_near_all(host(rm), want_rm, 1e-5, "running_mean " + name);
    expect_near_all(host(rv), want_rv, 1e-4, "running_var " + name);
  }
}

TEST_P(NormOps, BatchNormEvalUsesRunningStats) {
  const Shape shape{2, 3, 2, 3};
  const Dims d = dims_of(shape);
  const std::vector<float> xs = pseudo_random(shape.numel(), 6, 3.0f);
  const std::vector<float> gamma = {1.5f, -0.5f, 2.0f}, beta = {0.0f, 1.0f, -1.0f}, rm = {0.25f, -1.0f, 2.0f},
                           rv = {4.0f, 0.5f, 1.0f};
  const float eps = 1e-5f;
  Tensor x = make(xs, shape), y = Tensor::empty(shape, ctx());
  backend().batchnorm_forward_eval(ctx(), x, make(gamma, {3}), make(beta, {3}), make(rm, {3}), make(rv, {3}), eps, y);
  std::vector<double> want(xs.size());
  for (std::int64_t o = 0; o < d.outer; ++o)
    for (std::int64_t c = 0; c < d.channels; ++c)
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const auto k = static_cast<std::size_t>(c);
        want[d.at(o, c, i)] =
            (xs[d.at(o, c, i)] - rm[k]) / std::sqrt(rv[k] + static_cast<double>(eps)) * gamma[k] + beta[k];
      }
  expect_near_all(host(y), want, 1e-5, "batchnorm_forward_eval");
}

// x = [-1, -1, 1, 1] (one channel, N = 4): mean 0, biased variance 1, so with eps = 0 the saved
// inverse deviation is 1 and x̂ = x. With dy = [1, 0, 0, 0] and gamma = 3:
//   dbeta = Σ dy = 1, dgamma = Σ dy x̂ = -1,
//   dx = gamma * invstd / m * (m dy - dbeta - x̂ dgamma) = 0.75 * (4 dy - 1 + x̂) = [1.5, -1.5, 0, 0].
TEST_P(NormOps, BatchNormBackwardHandCase) {
  Tensor x = make({-1, -1, 1, 1}, {4, 1}), dy = make({1, 0, 0, 0}, {4, 1}), gamma = make({3}, {1});
  Tensor mean = make({0}, {1}), invstd = make({1}, {1});
  Tensor dx = Tensor::empty({4, 1}, ctx()), dgamma = make({10}, {1}), dbeta = make({20}, {1});
  backend().batchnorm_backward(ctx(), x, dy, gamma, mean, invstd, 0.0f, dx, dgamma, dbeta);
  const std::vector<float> got = host(dx);
  const std::vector<float> want = {1.5f, -1.5f, 0.0f, 0.0f};
  for (std::size_t i = 0; i < 4; ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
  EXPECT_NEAR(host(dgamma)[0], 9.0f, 1e-6);  // 10 + (-1): accumulated
  EXPECT_NEAR(host(dbeta)[0], 21.0f, 1e-6);  // 20 + 1

  // The train forward saves (nearly) the same statistics: eps = 1e-6 keeps invstd within 1e-6 of 1.
  Tensor rm = make({0}, {1}), rv = make({1}, {1}), y = Tensor::empty({4, 1}, ctx());
  Tensor sm = Tensor::empty({1}, ctx()), si = Tensor::empty({1}, ctx());
  backend().batchnorm_forward_train(ctx(), x, gamma, make({0}, {1}), 1e-6f, 1.0f, rm, rv, y, sm, si);
  EXPECT_NEAR(host(sm)[0], 0.0f, 1e-6);
  EXPECT_NEAR(host(si)[0], 1.0f, 2e-6);
  EXPECT_NEAR(host(rv)[0], 4.0f / 3.0f, 1e-6);  // momentum 1: the unbiased batch variance
  const std::vector<float> ys = host(y);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_NEAR(ys[i], 3.0f * (i < 2 ? -1.0f : 1.0f), 1e-5) << i;
}

TEST_P(NormOps, BatchNormBackwardMatchesFormula) {
  const Shape shape{4, 3, 2, 3};
  const Dims d = dims_of(shape);
  const auto c = static_cast<std::size_t>(d.channels);
  const std::vector<float> xs = pseudo_random(shape.numel(), 7, 1.5f, 0.5f), dys = pseudo_random(shape.numel(), 8);
  const std::vector<float> gamma = {0.5f, -1.5f, 2.0f};
  Tensor x = make(xs, shape), dy = make(dys, shape), g = make(gamma, {3});
  Tensor rm = Tensor::zeros({3}, ctx()), rv = Tensor::full({3}, 1.0f, ctx()), y = Tensor::empty(shape, ctx());
  Tensor sm = Tensor::empty({3}, ctx()), si = Tensor::empty({3}, ctx());
  const float eps = 1e-5f;
  backend().batchnorm_forward_train(ctx(), x, g, Tensor::zeros({3}, ctx()), eps, 0.1f, rm, rv, y, sm, si);
  Tensor dx = Tensor::empty(shape, ctx()), dgamma = Tensor::zeros({3}, ctx()), dbeta = Tensor::zeros({3}, ctx());
  backend().batchnorm_backward(ctx(), x, dy, g, sm, si, eps, dx, dgamma, dbeta);

  std::vector<double> mean, var;
  naive_stats(xs, d, mean, var);
  const double m = static_cast<double>(d.outer * d.inner);
  std::vector<double> want_dg(c, 0.0), want_db(c, 0.0), want_dx(xs.size());
  auto xhat = [&](std::int64_t o, std::int64_t ch, std::int64_t i) {
    const auto k = static_cast<std::size_t>(ch);
    return (xs[d.at(o, ch, i)] - mean[k]) / std::sqrt(var[k] + eps);
  };
  for (std::int64_t o = 0; o < d.outer; ++o)
    for (std::int64_t ch = 0; ch < d.channels; ++ch)
      for (std::int64_t i = 0; i < d.inner; ++i) {
        want_db[static_cast<std::size_t>(ch)] += dys[d.at(o, ch, i)];
        want_dg[static_cast<std::size_t>(ch)] += dys[d.at(o, ch, i)] * xhat(o, ch, i);
      }
  for (std::int64_t o = 0; o < d.outer; ++o)
    for (std::int64_t ch = 0; ch < d.channels; ++ch)
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const auto k = static_cast<std::size_t>(ch);
        want_dx[d.at(o, ch, i)] = gamma[k] / std::sqrt(var[k] + eps) / m *
                                  (m * dys[d.at(o, ch, i)] - want_db[k] - xhat(o, ch, i) * want_dg[k]);
      }
  expect_near_all(host(dx), want_dx, 1e-4, "dx");
  expect_near_all(host(dgamma), want_dg, 1e-4, "dgamma");
  expect_near_all(host(dbeta), want_db, 1e-5, "dbeta");
}

TEST_P(NormOps, BatchNormBadArgumentsThrowNamingTheOp) {
  Tensor x = Tensor::zeros({4, 3, 2, 2}, ctx()), y = Tensor::empty({4, 3, 2, 2}, ctx());
  Tensor p3 = Tensor::full({3}, 1.0f, ctx()), p2 = Tensor::zeros({2}, ctx());
  Tensor a = Tensor::zeros({3}, ctx()), b = Tensor::zeros({3}, ctx()), m = Tensor::zeros({3}, ctx()),
         v = Tensor::full({3}, 1.0f, ctx());
  try {
    backend().batchnorm_forward_train(ctx(), x, p2, p3, 1e-5f, 0.1f, m, v, y, a, b);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batchnorm_forward_train"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("gamma"), std::string::npos) << e.what();
  }
  EXPECT_THROW(backend().batchnorm_forward_train(ctx(), x, p3, p3, -1.0f, 0.1f, m, v, y, a, b), Error);
  EXPECT_THROW(backend().batchnorm_forward_train(ctx(), x, p3, p3, 1e-5f, 1.5f, m, v, y, a, b), Error);
  Tensor one = Tensor::zeros({1, 3}, ctx()), one_y = Tensor::empty({1, 3}, ctx());  // one value per channel
  EXPECT_THROW(backend().batchnorm_forward_train(ctx(), one, p3, p3, 1e-5f, 0.1f, m, v, one_y, a, b), Error);
  EXPECT_THROW(backend().batchnorm_forward_eval(ctx(), x, p3, p3, m, p2, 1e-5f, y), Error);
  Tensor dx = Tensor::empty({4, 3, 2, 1}, ctx());
  EXPECT_THROW(backend().batchnorm_backward(ctx(), x, x, p3, m, v, 1e-5f, dx, a, b), Error);
  Tensor flat = Tensor::zeros({12}, ctx());
  EXPECT_THROW(backend().channel_affine(ctx(), flat, p3, p3, flat), Error);
}

TEST_P(NormOps, DotHandCaseAndNaive) {
  Tensor out = Tensor::empty({1}, ctx());
  backend().dot(ctx(), make({1, 2, 3}, {3}), make({4, 5, 6}, {3}), out);
  EXPECT_EQ(out.item(ctx()), 32.0f);

  const std::int64_t n = 7 * 1429;
  const std::vector<float> as = pseudo_random(n, 9), bs = pseudo_random(n, 10, 2.0f);
  double want = 0;
  for (std::size_t i = 0; i < as.size(); ++i) want += static_cast<double>(as[i]) * bs[i];
  backend().dot(ctx(), make(as, {7, n / 7}), make(bs, {7, n / 7}), out);  // any shape
  EXPECT_NEAR(out.item(ctx()), want, 1e-3 * (1.0 + std::abs(want)));

  Tensor empty = Tensor::empty({0}, ctx());
  backend().dot(ctx(), empty, empty, out);
  EXPECT_EQ(out.item(ctx()), 0.0f);
  EXPECT_THROW(backend().dot(ctx(), make({1, 2}, {2}), make({1, 2, 3}, {3}), out), Error);
}

TEST_P(NormOps, ClampInPlace) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = make({-2.0f, -0.5f, 0.0f, 0.7f, 1.0f, 3.0f, nan}, {7});
  backend().clamp(ctx(), x, -1.0f, 1.0f);
  const std::vector<float> got = host(x);
  const std::vector<float> want = {-1.0f, -0.5f, 0.0f, 0.7f, 1.0f, 1.0f};
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << i;
  EXPECT_TRUE(std::isnan(got[6])) << "NaN stays NaN";
  EXPECT_THROW(backend().clamp(ctx(), x, 1.0f, 0.0f), Error);
}

CUDL_INSTANTIATE_BACKENDS(NormOps);

// ---------------------------------------------------------------- gradient checks (CPU, double loss)

TEST(GradientNorm, ChannelAffineInput) {
  Context ctx;
  Backend& be = ctx.backend();
  const Shape shape{2, 3, 3, 2};
  Tensor x = Tensor::from_host(pseudo_random(shape.numel(), 11), shape, ctx);
  Tensor scale = Tensor::from_host(std::vector<float>{0.5f, -2.0f, 1.5f}, {3}, ctx);
  Tensor shift = Tensor::from_host(std::vector<float>{0.1f, 0.2f, -0.3f}, {3}, ctx);
  const std::vector<float> w = pseudo_random(shape.numel(), 12);
  Tensor y = Tensor::empty(shape, ctx), dy = Tensor::from_host(w, shape, ctx), dx = Tensor::empty(shape, ctx);
  be.channel_affine_backward(ctx, dy, scale, dx);
  auto loss = [&] {
    be.channel_affine(ctx, x, scale, shift, y);
    return cudl::testing::weighted_sum(y.to_vector(ctx), w);
  };
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "channel_affine dx");
}

// loss = Σ w·y through the train forward (batch statistics depend on x, so dx has the two
// extra terms through the mean and the variance).
TEST(GradientNorm, BatchNormTrainInputGammaBeta) {
  Context ctx;
  Backend& be = ctx.backend();
  const Shape shape{3, 2, 3, 2};
  Tensor x = Tensor::from_host(pseudo_random(shape.numel(), 13, 1.5f, 0.3f), shape, ctx);
  Tensor gamma = Tensor::from_host(std::vector<float>{1.3f, -0.7f}, {2}, ctx);
  Tensor beta = Tensor::from_host(std::vector<float>{0.2f, -0.4f}, {2}, ctx);
  Tensor rm = Tensor::zeros({2}, ctx), rv = Tensor::full({2}, 1.0f, ctx);
  Tensor y = Tensor::empty(shape, ctx), sm = Tensor::empty({2}, ctx), si = Tensor::empty({2}, ctx);
  const float eps = 1e-5f;
  const std::vector<float> w = pseudo_random(shape.numel(), 14);
  auto loss = [&] {
    be.batchnorm_forward_train(ctx, x, gamma, beta, eps, 0.1f, rm, rv, y, sm, si);
    return cudl::testing::weighted_sum(y.to_vector(ctx), w);
  };
  loss();  // saved statistics of the unperturbed input
  Tensor dy = Tensor::from_host(w, shape, ctx), dx = Tensor::empty(shape, ctx);
  Tensor dgamma = Tensor::zeros({2}, ctx), dbeta = Tensor::zeros({2}, ctx);
  be.batchnorm_backward(ctx, x, dy, gamma, sm, si, eps, dx, dgamma, dbeta);
  cudl::testing::GradCheckOptions opts;
  opts.step = 5e-3f;
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "batchnorm dx", opts);
  cudl::testing::expect_gradient_matches(ctx, gamma, dgamma, loss, "batchnorm dgamma", opts);
  cudl::testing::expect_gradient_matches(ctx, beta, dbeta, loss, "batchnorm dbeta", opts);
}
