// The network's fusion pass (models/network/fusion.hpp, Sequential): which Conv2d + ReLU pairs it
// fuses, and that a fused network gives the unfused network's outputs, input gradient and
// parameter gradients to float rounding, in training and inference, in f32 and bf16 autocast.
#include <gtest/gtest.h>

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
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::random_values;

Conv2dParams padded(int pad) {
  Conv2dParams p;
  p.pad_h = p.pad_w = pad;
  return p;
}

// conv-relu, conv-relu, pool, conv(no bias)-relu, conv-leaky, flatten, linear: three fusible pairs,
// one Conv2d followed by a LeakyReLU that is not fused.
Sequential small_cnn() {
  Sequential m;
  m.add("c1", std::make_unique<Conv2d>(3, 8, 3, padded(1)));
  m.add("r1", relu());
  m.add("c2", std::make_unique<Conv2d>(8, 8, 3, padded(1)));
  m.add("r2", relu());
  m.add("pool", std::make_unique<MaxPool2d>(2));
  m.add("c3", std::make_unique<Conv2d>(8, 6, 3, padded(1), /*bias=*/false));
  m.add("r3", relu());
  m.add("c4", std::make_unique<Conv2d>(6, 4, 1));
  m.add("leaky", std::make_unique<ActivationLayer>(Activation::leaky_relu, 0.1f));
  m.add("flat", std::make_unique<Flatten>());
  m.add("fc", std::make_unique<Linear>(4 * 5 * 5, 7));
  return m;
}

struct StepResult {
  std::vector<float> out, dx, grads;
};

// One training step's forward and backward (or inference's forward) with fusion on or off.
StepResult run(Context& ctx, Sequential& m, bool fuse, bool train, const Tensor& x, const Tensor& dy) {
  ctx.set_fuse_layers(fuse);
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

void expect_fused_equals_unfused(Precision precision, float atol, float rtol) {
  Context ctx(Device::cpu());
  ctx.set_precision(precision);
  Sequential m = small_cnn();
  m.build(ctx, 7);
  EXPECT_EQ(m.fused_layers(), (std::vector<std::string>{"c1", "c2", "c3"}));
  const Shape in{2, 3, 10, 10};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 11), in, ctx);
  const Tensor dy = Tensor::from_host(random_values(2 * 7, 12), Shape{2, 7}, ctx);
  const std::string mode(precision_name(precision));
  for (bool train : {true, false}) {
    const StepResult f = run(ctx, m, true, train, x, dy);
    const StepResult u = run(ctx, m, false, train, x, dy);
    const std::string what = mode + (train ? " training" : " inference");
    expect_close(f.out, u.out, atol, rtol, what + " output");
    if (!train) continue;
    expect_close(f.dx, u.dx, atol, rtol, what + " input gradient");
    expect_close(f.grads, u.grads, atol, rtol, what + " parameter gradients");
  }
}

// |a - ref|_2 / |ref|_2.
double relative_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - ref[i]) * (static_cast<double>(a[i]) - ref[i]);
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(diff / norm);
}

TEST(NetworkFusion, FusedAndUnfusedAgreeInOutputsAndGradients) {
  expect_fused_equals_unfused(Precision::fp32, 1e-5f, 1e-4f);
}

// In bf16 the fused op (a native oneDNN kernel here) rounds each convolution's output once where
// the unfused ops round twice; those differences of up to a unit in the last place change which
// values a ReLU zeroes and a max pool picks, so the two networks' input gradients can differ by
// several percent where an argmax moved. What must hold: the fused network is as close to the
// fp32 network (the same weights and data) as the unfused one, in outputs and every gradient.
TEST(NetworkFusion, FusedAndUnfusedAgreeUnderBf16Autocast) {
  const Shape in{2, 3, 10, 10};
  Context ref_ctx(Device::cpu());
  Sequential ref_model = small_cnn();
  ref_model.build(ref_ctx, 7);
  const Tensor x = Tensor::from_host(random_values(in.numel(), 11), in, ref_ctx);
  const Tensor dy = Tensor::from_host(random_values(2 * 7, 12), Shape{2, 7}, ref_ctx);
  Context ctx(Device::cpu());
  ctx.set_precision(Precision::bf16);
  Sequential m = small_cnn();
  m.build(ctx, 7);
  EXPECT_EQ(m.fused_layers(), (std::vector<std::string>{"c1", "c2", "c3"}));
  for (bool train : {true, false}) {
    const StepResult ref = run(ref_ctx, ref_model, false, train, x, dy);
    const StepResult f = run(ctx, m, true, train, x, dy);
    const StepResult u = run(ctx, m, false, train, x, dy);
    const std::string what = train ? "training" : "inference";
    const auto check = [&](const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& r,
                           const std::string& name) {
      ASSERT_EQ(a.size(), r.size()) << what << name;
      ASSERT_EQ(b.size(), r.size()) << what << name;
      const double fused = relative_error(a, r), unfused = relative_error(b, r);
      EXPECT_LE(fused, 1.25 * unfused + 0x1p-8) << what << name << ": fused " << fused << ", unfused " << unfused;
    };
    check(f.out, u.out, ref.out, " output");
    if (!train) continue;
    check(f.dx, u.dx, ref.dx, " input gradient");
    check(f.grads, u.grads, ref.grads, " parameter gradients");
  }
}

TEST(NetworkFusion, FusesOnlyAConvWhoseOnlyReaderIsAReluAndThatIsNotTapped) {
  Sequential m;
  m.add("c1", std::make_unique<Conv2d>(3, 4, 3, padded(1)));
  m.add("r1", relu());
  m.add("c2", std::make_unique<Conv2d>(4, 4, 3, padded(1)));  // read by r2 and by the Add
  m.add("r2", relu());
  m.add("sum", std::make_unique<Add>(), {"r2", "c2"});
  m.add("c3", std::make_unique<Conv2d>(4, 4, 3, padded(1)));
  m.add("r3", relu(), {"sum"});  // reads the Add, not c3
  m.add("c4", std::make_unique<Conv2d>(4, 4, 1), {"r3"});
  m.add("r4", relu());
  EXPECT_EQ(m.fused_layers(), (std::vector<std::string>{"c1", "c4"}));
  // A tapped convolution's own output is needed: not fused.
  m.set_taps({"c1"});
  EXPECT_EQ(m.fused_layers(), (std::vector<std::string>{"c4"}));

  // The summary names both halves of a fused pair.
  const std::vector<LayerSummary> rows = m.summary(Shape{1, 3, 6, 6});
  EXPECT_EQ(rows[7].fused_with, "r4");
  EXPECT_EQ(rows[8].fused_with, "c4");
  EXPECT_EQ(rows[0].fused_with, "");
  EXPECT_EQ(rows[2].fused_with, "");
}

TEST(NetworkFusion, AGroupedConvolutionStaysUnfusedAndTheFusedOpRefusesGroups) {
  Conv2dParams depthwise = padded(1);
  depthwise.groups = 4;
  Sequential m;
  m.add("c1", std::make_unique<Conv2d>(3, 4, 3, padded(1)));
  m.add("r1", relu());
  m.add("dw", std::make_unique<Conv2d>(4, 4, 3, depthwise));
  m.add("r2", relu());
  EXPECT_EQ(m.fused_layers(), (std::vector<std::string>{"c1"}));
  Context ctx(Device::cpu());
  const Tensor x = Tensor::from_host(random_values(4 * 36, 3), Shape{1, 4, 6, 6}, ctx);
  const Tensor w = Tensor::from_host(random_values(4 * 9, 4), Shape{4, 1, 3, 3}, ctx);
  Tensor y = Tensor::empty(Shape{1, 4, 6, 6}, ctx);
  cudl::testing::expect_error([&] { ctx.backend().conv2d_bias_relu_forward(ctx, x, w, Tensor(), depthwise, y); },
                              {"conv2d_bias_relu_forward", "groups=4", "dense convolutions only"});
}

TEST(NetworkFusion, AGraphWithAFusedPairTrainsAsTheUnfusedOne) {
  Context ctx(Device::cpu());
  Sequential m;
  m.add("c1", std::make_unique<Conv2d>(2, 4, 3, padded(1)));
  m.add("r1", relu());
  m.add("c2", std::make_unique<Conv2d>(4, 4, 3, padded(1)));
  m.add("r2", relu());
  m.add("sum", std::make_unique<Add>(), {"r2", "r1"});  // r1 is read twice: c1 still fuses
  m.add("flat", std::make_unique<Flatten>());
  m.build(ctx, 3);
  ASSERT_EQ(m.fused_layers(), (std::vector<std::string>{"c1", "c2"}));
  const Shape in{2, 2, 5, 5};
  const Tensor x = Tensor::from_host(random_values(in.numel(), 1), in, ctx);
  const Tensor dy = Tensor::from_host(random_values(2 * 4 * 25, 2), Shape{2, 100}, ctx);
  const StepResult f = run(ctx, m, true, true, x, dy), u = run(ctx, m, false, true, x, dy);
  expect_close(f.out, u.out, 1e-5f, 1e-4f, "output");
  expect_close(f.dx, u.dx, 1e-5f, 1e-4f, "input gradient");
  expect_close(f.grads, u.grads, 1e-5f, 1e-4f, "parameter gradients");
}

TEST(NetworkFusion, ProfileShowsTheReluInsideItsConvolution) {
  Context ctx(Device::cpu());
  Sequential m = small_cnn();
  m.build(ctx, 1);
  m.set_profiling(true);
  const Shape in{1, 3, 10, 10};
  (void)m.forward(ctx, Tensor::from_host(random_values(in.numel(), 1), in, ctx), false);
  std::vector<std::string> fused_into;
  for (const auto& t : m.profile()) fused_into.push_back(t.fused_into);
  EXPECT_EQ(fused_into, (std::vector<std::string>{"", "c1", "", "c2", "", "", "c3", "", "", "", ""}));
  // Unfused, no row says so.
  ctx.set_fuse_layers(false);
  m.set_profiling(true);
  (void)m.forward(ctx, Tensor::from_host(random_values(in.numel(), 1), in, ctx), false);
  for (const auto& t : m.profile()) EXPECT_EQ(t.fused_into, "") << t.name;
}

}  // namespace

namespace {

using cudl::testing::contains;
using cudl::testing::run_cli;
using cudl::testing::TempDir;

TEST(NetworkFusionCli, SummaryAndBenchProfileShowTheFusedPairsAndFuseFalseTurnsThemOff) {
  TempDir dir;
  const auto on = run_cli(dir, "summary --model mnist_cnn");
  ASSERT_EQ(on.status, 0) << on.err;
  EXPECT_TRUE(contains(on.out, "[fused with relu1]")) << on.out;
  EXPECT_TRUE(contains(on.out, "[fused with conv2]")) << on.out;
  // fc1 is a Linear read only by relu3: fused too (linear_bias_relu_forward).
  EXPECT_TRUE(contains(on.out, "[fused with relu3]")) << on.out;
  EXPECT_TRUE(contains(on.out, "[fused with fc1]")) << on.out;
  const auto off = run_cli(dir, "summary --model mnist_cnn --fuse false");
  ASSERT_EQ(off.status, 0) << off.err;
  EXPECT_FALSE(contains(off.out, "fused")) << off.out;

  const auto bench =
      run_cli(dir, "bench --device cpu --models mnist_cnn --batch-sizes 2 --repeat 1 --profile --json b.json");
  ASSERT_EQ(bench.status, 0) << bench.err;
  EXPECT_TRUE(contains(bench.out, "(forward fused into conv1: conv2d_bias_relu_forward)")) << bench.out;
  EXPECT_TRUE(contains(bench.out, "(forward fused into fc1: linear_bias_relu_forward)")) << bench.out;
  EXPECT_TRUE(contains(cudl::testing::slurp(dir.file("b.json")), "\"fuse\": true"));
  const auto unfused = run_cli(dir,
                               "bench --device cpu --models mnist_cnn --batch-sizes 2 --repeat 1 --profile "
                               "--fuse false");
  ASSERT_EQ(unfused.status, 0) << unfused.err;
  EXPECT_FALSE(contains(unfused.out, "fused into")) << unfused.out;

  const auto bad = run_cli(dir, "summary --model mnist_cnn --fuse maybe");
  EXPECT_EQ(bad.status, 1);
  EXPECT_TRUE(contains(bad.err, "--fuse")) << bad.err;
}

}  // namespace
