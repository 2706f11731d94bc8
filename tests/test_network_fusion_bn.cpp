// The network's conv + batch norm fusion pass (models/network/fusion_bn.hpp, Sequential): which
// chains it fuses (a tapped or twice-read intermediate stops a chain, a residual computed after
// the convolution keeps the Add out), that fused inference gives the unfused network's outputs on
// a small graph and on the zoo's ResNet-18, and that training is untouched by it.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/layers/normalization.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/zoo/resnet.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::random_values;
using Chains = std::vector<std::vector<std::string>>;

Conv2dParams padded(int pad) {
  Conv2dParams p;
  p.pad_h = p.pad_w = pad;
  return p;
}

std::unique_ptr<Conv2d> conv(std::int64_t in, std::int64_t out, int k, bool bias = false) {
  return std::make_unique<Conv2d>(in, out, k, padded(k / 2), bias);
}

// Every chain form: conv-bn-relu (c1), conv-bn-add-relu whose residual is ready (c2), conv-bn alone
// (c3, whose Add's other input comes later: c4's chain takes that Add), conv-bn-add without ReLU
// (c4, its Add read by a Conv2d), and a conv with a bias (c5) ending the net.
Sequential graph() {
  Sequential m;
  m.add("c1", conv(3, 8, 3, true));
  m.add("b1", std::make_unique<BatchNorm2d>(8));
  m.add("r1", relu());
  m.add("c2", conv(8, 8, 3));
  m.add("b2", std::make_unique<BatchNorm2d>(8));
  m.add("add2", std::make_unique<Add>(), {"r1", "b2"});  // the chain is the Add's second input
  m.add("r2", relu());
  m.add("c3", conv(8, 8, 1));
  m.add("b3", std::make_unique<BatchNorm2d>(8));
  m.add("c4", conv(8, 8, 3), {"r2"});
  m.add("b4", std::make_unique<BatchNorm2d>(8));
  m.add("add4", std::make_unique<Add>(), {"b4", "b3"});
  m.add("c5", conv(8, 4, 3, true));
  m.add("b5", std::make_unique<BatchNorm2d>(4));
  m.add("r5", relu());
  return m;
}

// Random batch norm statistics and affine parameters (a fresh model's are the identity), and the
// other parameters as build() drew them.
void randomize_batchnorms(Sequential& m, unsigned seed) {
  for (auto& [name, layer] : m.layers()) {
    if (dynamic_cast<BatchNorm2d*>(layer.get()) == nullptr) continue;
    for (Parameter* p : layer->parameters()) {
      const bool var = p->name == "running_var";
      const std::vector<float> v = random_values(p->shape.numel(), seed++, var ? 0.2f : -1.0f, var ? 2.0f : 1.0f);
      std::copy(v.begin(), v.end(), p->value.data<float>());
    }
  }
  m.parameters_changed();
}

std::vector<float> infer(Context& ctx, Sequential& m, bool fuse, const Tensor& x) {
  ctx.set_fuse_layers(fuse);
  return m.forward(ctx, x, /*train=*/false).to_vector(ctx);
}

// Fused against unfused, elementwise within atol + rtol * (largest unfused magnitude): the folded
// batch norm rounds each layer's output differently by a few float eps of its magnitude, and those
// differences pass through the layers after it (a ReLU can turn one into a difference of its size
// only where the value was within it of 0).
void expect_close(const std::vector<float>& got, const std::vector<float>& want, float rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_FALSE(got.empty()) << what;
  float scale = 0.0f;
  for (float v : want) scale = std::max(scale, std::fabs(v));
  int misses = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= rtol * scale) && ++misses <= 5)
      ADD_FAILURE() << what << " [" << i << "]: fused " << got[i] << " vs unfused " << want[i];
  EXPECT_EQ(misses, 0) << what;
}

TEST(NetworkBnFusion, FindsEveryChainFormInAGraph) {
  Sequential m = graph();
  EXPECT_EQ(
      m.fused_bn_chains(),
      (Chains{{"c1", "b1", "r1"}, {"c2", "b2", "add2", "r2"}, {"c3", "b3"}, {"c4", "b4", "add4"}, {"c5", "b5", "r5"}}));
}

TEST(NetworkBnFusion, ATappedOrTwiceReadIntermediateEndsTheChainBeforeIt) {
  Sequential m = graph();
  m.set_taps({"b2", "c5"});  // b2 tapped: no Add; c5 tapped: no chain at all
  EXPECT_EQ(m.fused_bn_chains(), (Chains{{"c1", "b1", "r1"}, {"c2", "b2"}, {"c3", "b3"}, {"c4", "b4", "add4"}}));

  Sequential n;
  n.add("c1", conv(3, 4, 3));
  n.add("b1", std::make_unique<BatchNorm2d>(4));
  n.add("r1", relu());
  n.add("c2", conv(4, 4, 3));  // read twice: by b2 and by the Add
  n.add("b2", std::make_unique<BatchNorm2d>(4));
  n.add("sum", std::make_unique<Add>(), {"b2", "c2"});
  n.add("c3", conv(4, 4, 3), {"r1"});
  n.add("b3", std::make_unique<BatchNorm2d>(4));  // read twice: by r3 and by the last Add
  n.add("r3", relu());
  n.add("join", std::make_unique<Add>(), {"r3", "b3"});
  EXPECT_EQ(n.fused_bn_chains(), (Chains{{"c1", "b1", "r1"}, {"c3", "b3"}}));
}

TEST(NetworkBnFusion, FusedInferenceMatchesLayerByLayerOnAGraph) {
  Context ctx(Device::cpu());
  Sequential m = graph();
  m.build(ctx, 3);
  randomize_batchnorms(m, 100);
  const Shape in{2, 3, 9, 9};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 5), in, ctx);
  m.set_profiling(true);
  const std::vector<float> got = infer(ctx, m, true, x);
  // The chains ran as one op: their members' rows name their head and the fused op.
  for (const auto& row : m.profile()) {
    if (row.name == "add2" || row.name == "r2") {
      EXPECT_EQ(row.fused_into, "c2") << row.name;
      EXPECT_EQ(row.fused_op, "conv2d_bn_forward") << row.name;
    }
  }
  m.set_profiling(false);
  expect_close(got, infer(ctx, m, false, x), 1e-5f, "graph");
}

TEST(NetworkBnFusion, FusedInferenceMatchesLayerByLayerOnResNet18) {
  Context ctx(Device::cpu());
  Sequential m = make_resnet(18);
  m.build(ctx, 1);
  randomize_batchnorms(m, 200);
  // Every convolution heads a chain, and each of the 8 blocks' Add and ReLU join one (the first
  // block of a stage through its downsample branch, whose residual, bn2, is ready before it).
  const Chains chains = m.fused_bn_chains();
  EXPECT_EQ(chains.size(), 20u);
  int with_add = 0;
  for (const auto& c : chains) with_add += c.size() == 4 ? 1 : 0;
  EXPECT_EQ(with_add, 8);
  EXPECT_EQ(chains[0], (std::vector<std::string>{"conv1", "bn1", "relu"}));
  const Shape in{1, 3, 40, 40};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 9, 0.0f, 1.0f), in, ctx);
  const auto hold = m.hold_parameters_constant(ctx);
  expect_close(infer(ctx, m, true, x), infer(ctx, m, false, x), 1e-4f, "resnet18 logits");
}

TEST(NetworkBnFusion, TrainingIsUnchangedAndNeverFusesBatchNorm) {
  Context ctx(Device::cpu());
  Sequential m = graph();
  m.build(ctx, 4);
  randomize_batchnorms(m, 300);
  m.set_input_grad(true);
  m.set_profiling(true);
  const Shape in{2, 3, 9, 9};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 6), in, ctx);
  const Tensor dy = Tensor::from_host(random_values(2 * 4 * 81, 7), Shape{2, 4, 9, 9}, ctx);
  struct Step {
    std::vector<float> out, dx, grads, running;
  };
  const auto step = [&](bool fuse) {
    ctx.set_fuse_layers(fuse);
    m.zero_grad(ctx);
    Step s;
    s.out = m.forward(ctx, x, /*train=*/true).to_vector(ctx);
    s.dx = m.backward(ctx, dy).to_vector(ctx);
    s.grads = m.gradient_block().to_vector(ctx);
    for (const NamedParameter& b : m.buffers()) {
      const std::vector<float> v = b.parameter->value.to_vector(ctx);
      s.running.insert(s.running.end(), v.begin(), v.end());
    }
    return s;
  };
  // The same arithmetic in both (no Conv2d here is read by a ReLU directly; b1 + r1 and b5 + r5 run
  // as the fused batch norm + ReLU pair, whose CPU ops compute the unfused ones' bits), so the same
  // bits; each step moves the running statistics, so the second starts from the first's.
  const std::vector<NamedParameter> buffers = m.buffers();
  std::vector<std::vector<float>> saved;
  for (const NamedParameter& b : buffers) saved.push_back(b.parameter->value.to_vector(ctx));
  const Step fused = step(true);
  for (std::size_t i = 0; i < buffers.size(); ++i)
    std::copy(saved[i].begin(), saved[i].end(), buffers[i].parameter->value.data<float>());
  const Step unfused = step(false);
  EXPECT_EQ(fused.out, unfused.out);
  EXPECT_EQ(fused.dx, unfused.dx);
  EXPECT_EQ(fused.grads, unfused.grads);
  EXPECT_EQ(fused.running, unfused.running);
  for (const auto& row : m.profile()) EXPECT_NE(row.fused_op, "conv2d_bn_forward") << row.name;

  // After a fused inference forward, backward says that it needs a training forward.
  ctx.set_fuse_layers(true);
  (void)m.forward(ctx, x, /*train=*/false);
  cudl::testing::expect_error([&] { (void)m.backward(ctx, dy); }, {"Sequential::backward", "train=true"});
}

}  // namespace
