// The network's fusion pass for Linear + ReLU (models/network/fusion_linear.hpp): which pairs it
// fuses (a Linear whose only reader is a ReLU, not tapped), and that an MLP and a VGG-style
// classifier head give the same outputs, input gradient and parameter gradients fused and unfused
// (--fuse true/false), in training and inference, in f32 and under bf16 autocast, on the CPU. The
// batches have at least 8 rows, so the CPU runs its one-primitive path (kernels/cpu/onednn_linear).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::random_values;

// Two fusible pairs (fc1, fc2: one without a bias), then a Linear read by a LeakyReLU (not fused)
// and the output layer.
Sequential mlp() {
  Sequential m;
  m.add("flatten", std::make_unique<Flatten>());
  m.add("fc1", std::make_unique<Linear>(48, 32));
  m.add("relu1", relu());
  m.add("fc2", std::make_unique<Linear>(32, 24, /*bias=*/false));
  m.add("relu2", relu());
  m.add("fc3", std::make_unique<Linear>(24, 16));
  m.add("leaky", std::make_unique<ActivationLayer>(Activation::leaky_relu, 0.1f));
  m.add("out", std::make_unique<Linear>(16, 5));
  return m;
}

// VGG's classifier in miniature, after a conv block: Linear, ReLU, Dropout twice, then the output.
Sequential vgg_head() {
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  Sequential m;
  m.add("features.0", std::make_unique<Conv2d>(3, 8, 3, same));
  m.add("features.1", relu());
  m.add("features.2", std::make_unique<MaxPool2d>(2));
  m.add("flatten", std::make_unique<Flatten>());
  m.add("classifier.0", std::make_unique<Linear>(8 * 4 * 4, 64, true, InitScheme::vgg));
  m.add("classifier.1", relu());
  m.add("classifier.2", std::make_unique<Dropout>(0.5f));
  m.add("classifier.3", std::make_unique<Linear>(64, 64, true, InitScheme::vgg));
  m.add("classifier.4", relu());
  m.add("classifier.5", std::make_unique<Dropout>(0.5f));
  m.add("classifier.6", std::make_unique<Linear>(64, 10, true, InitScheme::vgg));
  return m;
}

struct StepResult {
  std::vector<float> out, dx, grads;
};

// One training step's forward and backward (or inference's forward) with fusion on or off. The
// dropout masks are drawn again from the same stream position, so both runs drop the same units.
StepResult run(Context& ctx, Sequential& m, bool fuse, bool train, const Tensor& x, const Tensor& dy) {
  ctx.set_fuse_layers(fuse);
  for (const auto& [name, layer] : m.layers())
    if (auto* d = dynamic_cast<Dropout*>(layer.get())) d->set_counter(0);
  m.set_input_grad(true);
  m.zero_grad(ctx);
  StepResult r;
  const Tensor y = m.forward(ctx, x, train);
  r.out = y.to_vector(ctx);
  if (!train) return r;
  r.dx = m.backward(ctx, dy).to_vector(ctx);
  r.grads = m.gradient_block().to_vector(ctx);
  return r;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float atol, float rtol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  ASSERT_FALSE(a.empty()) << what;
  int misses = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i])) && ++misses <= 5)
      ADD_FAILURE() << what << " [" << i << "]: fused " << a[i] << " vs unfused " << b[i];
  EXPECT_EQ(misses, 0) << what;
}

// Fused against unfused in training (outputs and every gradient) and inference.
void expect_fused_equals_unfused(Sequential m, const Shape& in, std::int64_t classes, Precision precision, float tol,
                                 const std::vector<std::string>& fused) {
  Context ctx(Device::cpu());
  ctx.set_precision(precision);
  m.build(ctx, 5);
  EXPECT_EQ(m.fused_layers(), fused);
  const Tensor x = Tensor::from_host(random_values(in.numel(), 31), in, ctx);
  const Tensor dy = Tensor::from_host(random_values(in[0] * classes, 32), Shape{in[0], classes}, ctx);
  const std::string mode(precision_name(precision));
  for (bool train : {true, false}) {
    const StepResult f = run(ctx, m, true, train, x, dy);
    const StepResult u = run(ctx, m, false, train, x, dy);
    const std::string what = mode + (train ? " training" : " inference");
    expect_close(f.out, u.out, tol, tol, what + " output");
    if (!train) continue;
    expect_close(f.dx, u.dx, tol, tol, what + " input gradient");
    expect_close(f.grads, u.grads, tol, tol, what + " parameter gradients");
  }
}

TEST(NetworkFusionLinear, AnMlpGivesTheUnfusedOutputsAndGradients) {
  expect_fused_equals_unfused(mlp(), Shape{10, 3, 4, 4}, 5, Precision::fp32, 1e-5f, {"fc1", "fc2"});
}

TEST(NetworkFusionLinear, AVggHeadGivesTheUnfusedOutputsAndGradients) {
  expect_fused_equals_unfused(vgg_head(), Shape{8, 3, 8, 8}, 10, Precision::fp32, 1e-5f,
                              {"features.0", "classifier.0", "classifier.3"});
}

TEST(NetworkFusionLinear, Bf16AutocastAgreesToBf16Rounding) {
  // With a native bf16 matmul the fused op rounds y once where the unfused ops round twice: the
  // two agree to a few bf16 ulps (2^-8 relative), through the gradients as well.
  expect_fused_equals_unfused(mlp(), Shape{10, 3, 4, 4}, 5, Precision::bf16, 3e-2f, {"fc1", "fc2"});
  expect_fused_equals_unfused(vgg_head(), Shape{8, 3, 8, 8}, 10, Precision::bf16, 3e-2f,
                              {"features.0", "classifier.0", "classifier.3"});
}

TEST(NetworkFusionLinear, FusesOnlyALinearWhoseOnlyReaderIsAReluAndThatIsNotTapped) {
  Sequential m;
  m.add("fc1", std::make_unique<Linear>(8, 8));
  m.add("r1", relu());
  m.add("fc2", std::make_unique<Linear>(8, 8));  // read by r2 and by the Add
  m.add("r2", relu());
  m.add("sum", std::make_unique<Add>(), {"r2", "fc2"});
  m.add("fc3", std::make_unique<Linear>(8, 8));
  m.add("r3", relu(), {"sum"});  // reads the Add, not fc3
  m.add("fc4", std::make_unique<Linear>(8, 8), {"r3"});
  m.add("r4", relu());
  EXPECT_EQ(m.fused_layers(), (std::vector<std::string>{"fc1", "fc4"}));
  m.set_taps({"fc1"});  // its own output, before the ReLU, is then needed
  EXPECT_EQ(m.fused_layers(), (std::vector<std::string>{"fc4"}));
  const std::vector<LayerSummary> rows = m.summary(Shape{2, 8});
  EXPECT_EQ(rows[7].fused_with, "r4");
  EXPECT_EQ(rows[8].fused_with, "fc4");
  EXPECT_EQ(rows[0].fused_with, "");
}

TEST(NetworkFusionLinear, TheZoosMlpAndVggClassifiersFuseTheirHiddenLayers) {
  EXPECT_EQ(make_model("mlp").fused_layers(), (std::vector<std::string>{"fc1"}));
  const std::vector<std::string> vgg = make_model("vgg11").fused_layers();
  EXPECT_NE(std::find(vgg.begin(), vgg.end(), "classifier.0"), vgg.end());
  EXPECT_NE(std::find(vgg.begin(), vgg.end(), "classifier.3"), vgg.end());
  EXPECT_EQ(std::find(vgg.begin(), vgg.end(), "classifier.6"), vgg.end());  // the logits: no ReLU
}

TEST(NetworkFusionLinear, AnEmptyBatchRunsFusedAsUnfused) {
  Context ctx(Device::cpu());
  // No Flatten in front: it cannot infer a row length from an empty batch.
  Sequential m;
  m.add("fc1", std::make_unique<Linear>(48, 32));
  m.add("relu1", relu());
  m.add("out", std::make_unique<Linear>(32, 5));
  m.build(ctx, 2);
  ASSERT_EQ(m.fused_layers(), (std::vector<std::string>{"fc1"}));
  const Tensor x = Tensor::zeros({0, 48}, ctx);
  for (bool fuse : {true, false}) {
    ctx.set_fuse_layers(fuse);
    const Tensor y = m.forward(ctx, x, true);
    EXPECT_EQ(y.shape(), (Shape{0, 5}));
    m.zero_grad(ctx);
    m.set_input_grad(true);
    EXPECT_EQ(m.backward(ctx, Tensor::zeros({0, 5}, ctx)).shape(), (Shape{0, 48}));
  }
}

}  // namespace
