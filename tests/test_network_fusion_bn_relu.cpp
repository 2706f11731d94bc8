// The network's batch norm + ReLU fusion in training (models/network/fusion_bn_relu.hpp,
// Sequential): which pairs it plans (training only; not a frozen, tapped or twice-read batch norm),
// and that one training step of the fused network gives the unfused network's outputs, input
// gradient, parameter gradients and running statistics on a small chain and on the zoo's ResNet-18,
// in f32 and under bf16 autocast. On the CPU the fused ops compute the unfused ones' exact
// arithmetic (the ReLU folded into the one rounding of each output, its mask into the backward's
// reads), so the comparisons are bit for bit: a looser tolerance would hide a real difference.
#include <gtest/gtest.h>

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
using Names = std::vector<std::string>;

Conv2dParams padded(int pad) {
  Conv2dParams p;
  p.pad_h = p.pad_w = pad;
  return p;
}

// conv-bn-relu twice, then a batch norm read by a ReLU and by an Add (not fused), and a final
// conv-bn-relu: b1, b2 and b4 fuse with their ReLUs.
Sequential chain() {
  Sequential m;
  m.add("c1", std::make_unique<Conv2d>(3, 6, 3, padded(1), /*bias=*/false));
  m.add("b1", std::make_unique<BatchNorm2d>(6));
  m.add("r1", relu());
  m.add("c2", std::make_unique<Conv2d>(6, 6, 3, padded(1), /*bias=*/false));
  m.add("b2", std::make_unique<BatchNorm2d>(6));
  m.add("r2", relu());
  m.add("c3", std::make_unique<Conv2d>(6, 6, 1));
  m.add("b3", std::make_unique<BatchNorm2d>(6));
  m.add("r3", relu());
  m.add("sum", std::make_unique<Add>(), {"r3", "b3"});
  m.add("c4", std::make_unique<Conv2d>(6, 4, 3, padded(1)));
  m.add("b4", std::make_unique<BatchNorm2d>(4));
  m.add("r4", relu());
  return m;
}

// Random batch norm parameters and running statistics (a fresh model's are the identity).
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

struct Step {
  std::vector<float> out, dx, grads, running;
};

// One training step (forward, backward) with fusion on or off, from the same running statistics:
// they are put back as they were before the step, so that each run starts from the same state.
Step train_step(Context& ctx, Sequential& m, bool fuse, const Tensor& x, const Tensor& dy) {
  std::vector<std::vector<float>> before;
  for (const NamedParameter& b : m.buffers()) before.push_back(b.parameter->value.to_vector(ctx));
  ctx.set_fuse_layers(fuse);
  m.set_input_grad(true);
  m.zero_grad(ctx);
  Step s;
  s.out = m.forward(ctx, x, /*train=*/true).to_vector(ctx);
  s.dx = m.backward(ctx, dy).to_vector(ctx);
  s.grads = m.gradient_block().to_vector(ctx);
  std::size_t i = 0;
  for (const NamedParameter& b : m.buffers()) {
    const std::vector<float> v = b.parameter->value.to_vector(ctx);
    s.running.insert(s.running.end(), v.begin(), v.end());
    std::copy(before[i].begin(), before[i].end(), b.parameter->value.data<float>());
    ++i;
  }
  return s;
}

void expect_same_step(const Step& fused, const Step& unfused, const std::string& what) {
  ASSERT_FALSE(fused.out.empty()) << what;
  EXPECT_EQ(fused.out, unfused.out) << what << " output";
  EXPECT_EQ(fused.dx, unfused.dx) << what << " input gradient";
  EXPECT_EQ(fused.grads, unfused.grads) << what << " parameter gradients";
  EXPECT_EQ(fused.running, unfused.running) << what << " running statistics";
}

TEST(NetworkBnReluFusion, PlansUnfrozenUntappedSoleReadBatchNormsInTrainingOnly) {
  Sequential m = chain();
  EXPECT_EQ(m.fused_layers(/*train=*/true), (Names{"b1", "b2", "b4"}));
  EXPECT_EQ(m.fused_layers(/*train=*/false), Names{});  // inference folds batch norm into the conv instead
  m.set_taps({"b2"});                                   // its own output is wanted: no fusion
  EXPECT_EQ(m.fused_layers(true), (Names{"b1", "b4"}));
  m.set_taps({});
  m.layer("b4").set_frozen(true);  // normalises with running statistics: runs unfused
  EXPECT_EQ(m.fused_layers(true), (Names{"b1", "b2"}));
}

void expect_chain_step_unchanged(Precision precision) {
  Context ctx(Device::cpu());
  ctx.set_precision(precision);
  Sequential m = chain();
  m.build(ctx, 5);
  randomize_batchnorms(m, 40);
  const Shape in{3, 3, 7, 7};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 41, -1.0f, 2.0f), in, ctx);
  const Tensor dy = Tensor::from_host(random_values(3 * 4 * 49, 42), Shape{3, 4, 7, 7}, ctx);
  m.set_profiling(true);
  const Step fused = train_step(ctx, m, true, x, dy);
  // The ReLUs ran inside their batch norms' fused op; r3 (its batch norm also read by the Add) did not.
  for (const auto& row : m.profile()) {
    if (row.name == "r1" || row.name == "r2" || row.name == "r4") {
      EXPECT_EQ(row.fused_op, "batchnorm_relu_forward_train") << row.name;
      std::string bn = "b";
      bn += row.name.back();  // r1 -> b1
      EXPECT_EQ(row.fused_into, bn) << row.name;
    } else {
      EXPECT_EQ(row.fused_op, "") << row.name;
    }
  }
  m.set_profiling(false);
  expect_same_step(fused, train_step(ctx, m, false, x, dy), std::string(precision_name(precision)));
  // A frozen batch norm (running statistics, no parameter gradients) runs unfused and still agrees.
  m.layer("b2").set_frozen(true);
  expect_same_step(train_step(ctx, m, true, x, dy), train_step(ctx, m, false, x, dy),
                   std::string(precision_name(precision)) + " with b2 frozen");
}

TEST(NetworkBnReluFusion, TrainStepMatchesLayerByLayerOnAChain) { expect_chain_step_unchanged(Precision::fp32); }

// Under bf16 autocast the batch norms and ReLUs compute on bf16 activations with f32 statistics;
// the fused pair rounds each output once exactly where the unfused pair did, so the bits still agree.
TEST(NetworkBnReluFusion, TrainStepMatchesLayerByLayerOnAChainUnderBf16) {
  expect_chain_step_unchanged(Precision::bf16);
}

void expect_resnet18_step_unchanged(Precision precision) {
  Context ctx(Device::cpu());
  ctx.set_precision(precision);
  Sequential m = make_resnet(18);
  m.build(ctx, 2);
  randomize_batchnorms(m, 500);
  // The stem's bn1 and each block's bn1 (8 blocks) fuse with the ReLU after them; each block's bn2
  // and the downsample batch norms feed an Add.
  const Names fused = m.fused_layers(/*train=*/true);
  EXPECT_EQ(fused.size(), 9u);
  ASSERT_FALSE(fused.empty());
  EXPECT_EQ(fused.front(), "bn1");
  EXPECT_EQ(fused.back(), "layer4.1.bn1");
  const Shape in{2, 3, 32, 32};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 51, 0.0f, 1.0f), in, ctx);
  const Tensor dy = Tensor::from_host(random_values(2 * 1000, 52), Shape{2, 1000}, ctx);
  expect_same_step(train_step(ctx, m, true, x, dy), train_step(ctx, m, false, x, dy),
                   "resnet18 " + std::string(precision_name(precision)));
}

TEST(NetworkBnReluFusion, TrainStepMatchesLayerByLayerOnResNet18) { expect_resnet18_step_unchanged(Precision::fp32); }

TEST(NetworkBnReluFusion, TrainStepMatchesLayerByLayerOnResNet18UnderBf16) {
  expect_resnet18_step_unchanged(Precision::bf16);
}

// The layer's own guard: a fused forward's state is for backward_relu, not backward.
TEST(NetworkBnReluFusion, BatchNormBackwardRefusesAFusedForward) {
  Context ctx(Device::cpu());
  Sequential m;
  m.add("bn", std::make_unique<BatchNorm2d>(2));
  m.build(ctx, 1);
  auto& bn = static_cast<BatchNorm2d&>(m.layer("bn"));
  const Shape in{2, 2, 3, 3};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 61), in, ctx);
  const Tensor y = bn.forward_relu(ctx, x);
  for (float v : y.to_vector(ctx)) EXPECT_GE(v, 0.0f);
  cudl::testing::expect_error([&] { (void)bn.backward(ctx, y); }, {"BatchNorm2d::backward", "backward_relu"});
  EXPECT_EQ(bn.backward_relu(ctx, y).shape(), in);
  cudl::testing::expect_error([&] { (void)bn.backward_relu(ctx, y); }, {"BatchNorm2d::backward_relu", "forward_relu"});
  bn.set_frozen(true);
  cudl::testing::expect_error([&] { (void)bn.forward_relu(ctx, x); }, {"BatchNorm2d::forward_relu", "frozen"});
}

}  // namespace
