// Optimizer steps against scalar re-implementations of the PyTorch update rules, three steps each.
#include <cmath>
#include <string>
#include <vector>

#include "tests/backend_fixture.hpp"

using namespace cudl;
using cudl::testing::BackendTest;

namespace {

const std::vector<float> kParam = {0.5f, -1.0f, 2.0f, 0.0f, -0.25f};
const std::vector<std::vector<float>> kGrads = {
    {0.1f, -0.2f, 0.3f, 0.0f, 1.0f}, {-0.4f, 0.5f, 0.05f, 0.2f, -1.0f}, {0.3f, 0.3f, -0.3f, -0.1f, 0.5f}};

struct SgdRef {
  SgdParams p;
  double buf = 0;
  void step(double& w, double g) {
    g += p.weight_decay * w;
    if (p.momentum > 0) {
      buf = p.momentum * buf + (1 - p.dampening) * g;
      g = p.nesterov ? g + p.momentum * buf : buf;
    }
    w -= p.lr * g;
  }
};

struct AdamRef {
  AdamParams p;
  double m = 0, v = 0;
  void step(double& w, double g, int t) {
    if (p.decoupled_weight_decay) {
      w *= 1 - p.lr * p.weight_decay;
    } else {
      g += p.weight_decay * w;
    }
    m = p.beta1 * m + (1 - p.beta1) * g;
    v = p.beta2 * v + (1 - p.beta2) * g * g;
    const double mhat = m / (1 - std::pow(p.beta1, t)), vhat = v / (1 - std::pow(p.beta2, t));
    w -= p.lr * mhat / (std::sqrt(vhat) + p.eps);
  }
};

}  // namespace

class OptimizerOps : public BackendTest {};

TEST_P(OptimizerOps, SgdThreeStepsMatchScalarReference) {
  std::vector<SgdParams> configs(4);
  configs[0] = {0.1f, 0.0f, 0.0f, 0.0f, false, {}};  // {}: no per-step scalars tensor
  configs[1] = {0.1f, 0.9f, 0.0f, 0.01f, false, {}};
  configs[2] = {0.05f, 0.9f, 0.0f, 0.0f, true, {}};
  configs[3] = {0.1f, 0.5f, 0.3f, 0.1f, false, {}};
  for (std::size_t c = 0; c < configs.size(); ++c) {
    Tensor w = make(kParam, {5}), buf = Tensor::zeros({5}, ctx());
    std::vector<double> ref(kParam.begin(), kParam.end());
    std::vector<SgdRef> state(5, SgdRef{configs[c]});
    for (const auto& g : kGrads) {
      backend().sgd_step(ctx(), configs[c], w, make(g, {5}), buf);
      for (std::size_t i = 0; i < 5; ++i) state[i].step(ref[i], g[i]);
    }
    std::vector<float> got = host(w);
    for (std::size_t i = 0; i < 5; ++i) EXPECT_NEAR(got[i], ref[i], 1e-6) << "config " << c << " element " << i;
  }
}

TEST_P(OptimizerOps, AdamAndAdamWThreeStepsMatchScalarReference) {
  for (bool decoupled : {false, true}) {
    AdamParams p;
    p.lr = 0.01f;
    p.weight_decay = 0.1f;
    p.decoupled_weight_decay = decoupled;
    Tensor w = make(kParam, {5}), m = Tensor::zeros({5}, ctx()), v = Tensor::zeros({5}, ctx());
    std::vector<double> ref(kParam.begin(), kParam.end());
    std::vector<AdamRef> state(5, AdamRef{p});
    for (int t = 1; t <= 3; ++t) {
      p.step = t;
      const auto& g = kGrads[static_cast<std::size_t>(t - 1)];
      backend().adam_step(ctx(), p, w, make(g, {5}), m, v);
      for (std::size_t i = 0; i < 5; ++i) state[i].step(ref[i], g[i], t);
    }
    std::vector<float> got = host(w);
    for (std::size_t i = 0; i < 5; ++i) EXPECT_NEAR(got[i], ref[i], 1e-6) << (decoupled ? "AdamW" : "Adam") << " " << i;
  }
}

TEST_P(OptimizerOps, BadArgumentsThrowNamingTheOp) {
  Tensor w = Tensor::zeros({5}, ctx()), g = Tensor::zeros({4}, ctx()), buf = Tensor::zeros({5}, ctx());
  try {
    backend().sgd_step(ctx(), SgdParams{}, w, g, buf);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sgd_step"), std::string::npos) << e.what();
  }
  AdamParams p;
  p.step = 0;
  try {
    backend().adam_step(ctx(), p, w, buf, buf, buf);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("adam_step"), std::string::npos) << e.what();
  }
  Tensor small = Tensor::zeros({4}, ctx());
  EXPECT_THROW(backend().adam_step(ctx(), AdamParams{}, w, buf, small, buf), Error);
}

CUDL_INSTANTIATE_BACKENDS(OptimizerOps);
