// Networks as graphs (models/network/sequential.hpp, layers/merge.hpp): layers that name their inputs,
// Add and Concat joins, gradients summed where an output has several readers, and the ResNets
// of the zoo (models/zoo/resnet.hpp) with torchvision's parameter counts.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::expect_error;

namespace {

Conv2dParams pad(int p) {
  Conv2dParams c;
  c.pad_h = c.pad_w = p;
  return c;
}

// input -> a (conv 3x3) -> tanh -> b (conv 3x3) -> add(b, c) -> concat(add, input) -> gap -> fc,
// with c a 1x1 convolution of the input: the input has three readers (a, c and concat).
Sequential branchy() {
  Sequential m;
  m.add("a", std::make_unique<Conv2d>(3, 4, 3, pad(1)));
  m.add("tanh", std::make_unique<ActivationLayer>(Activation::tanh));
  m.add("b", std::make_unique<Conv2d>(4, 4, 3, pad(1)));
  m.add("c", std::make_unique<Conv2d>(3, 4, 1), {"input"});
  m.add("sum", std::make_unique<Add>(), {"b", "c"});
  m.add("cat", std::make_unique<Concat>(), {"sum", "input"});
  m.add("gap", std::make_unique<GlobalAvgPool2d>());
  m.add("flatten", std::make_unique<Flatten>());
  m.add("fc", std::make_unique<Linear>(7, 5));
  return m;
}

std::vector<float> ramp(std::int64_t n, float scale) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = scale * std::sin(0.7f * static_cast<float>(i));
  return v;
}

}  // namespace

TEST(Graph, GradientsOfABranchingNetworkMatchFiniteDifferences) {
  Context ctx(Device::cpu());
  Sequential m = branchy();
  m.build(ctx, 3);
  m.set_input_grad(true);
  Tensor x = Tensor::from_host(ramp(2 * 3 * 5 * 5, 1.0f), {2, 3, 5, 5}, ctx);
  const std::vector<float> w = ramp(2 * 5, 0.5f);
  auto loss = [&] { return cudl::testing::weighted_sum(m.forward(ctx, x, false).to_vector(ctx), w); };
  const Tensor y = m.forward(ctx, x, true);
  ASSERT_EQ(y.shape(), (Shape{2, 5}));
  m.zero_grad(ctx);
  const Tensor dx = m.backward(ctx, Tensor::from_host(w, {2, 5}, ctx));
  ASSERT_TRUE(dx.defined());
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "d loss / d input (three readers)");
  const Tensor grads = m.gradient_block().clone(ctx);
  cudl::testing::GradCheckOptions all;
  all.max_checks = 400;
  cudl::testing::expect_gradient_matches(ctx, m.parameter_block(), grads, loss, "d loss / d parameters", all);
}

TEST(Graph, AnOutputReadTwiceGetsTheSumOfBothGradients) {
  Context ctx(Device::cpu());
  Sequential m;
  m.add("double", std::make_unique<Add>(), {"input", "input"});
  m.add("triple", std::make_unique<Add>(), {"double", "input"});
  m.build(ctx, 1);
  m.set_input_grad(true);
  const Tensor x = Tensor::from_host(std::vector<float>{1, -2, 3, 0.5f}, {1, 1, 2, 2}, ctx);
  EXPECT_EQ(m.forward(ctx, x, true).to_vector(ctx), (std::vector<float>{3, -6, 9, 1.5f}));
  const Tensor dy = Tensor::from_host(std::vector<float>{1, 2, 3, 4}, {1, 1, 2, 2}, ctx);
  // Add hands dy to each input without copying: the sums must not write into each other.
  EXPECT_EQ(m.backward(ctx, dy).to_vector(ctx), (std::vector<float>{3, 6, 9, 12}));
  EXPECT_EQ(dy.to_vector(ctx), (std::vector<float>{1, 2, 3, 4})) << "the caller's dy is left alone";
}

TEST(Graph, ConcatJoinsChannelsPerSampleAndSplitsTheGradientBack) {
  Context ctx(Device::cpu());
  Sequential m;
  m.add("scaled", std::make_unique<ActivationLayer>(Activation::relu));
  m.add("cat", std::make_unique<Concat>(), {"input", "scaled"});
  m.build(ctx, 1);
  m.set_input_grad(true);
  // Two samples, one channel of two pixels each.
  const Tensor x = Tensor::from_host(std::vector<float>{1, -1, 2, -2}, {2, 1, 1, 2}, ctx);
  const Tensor y = m.forward(ctx, x, true);
  ASSERT_EQ(y.shape(), (Shape{2, 2, 1, 2}));
  EXPECT_EQ(y.to_vector(ctx), (std::vector<float>{1, -1, 1, 0, 2, -2, 2, 0}));
  const Tensor dy = Tensor::from_host(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 1, 2}, ctx);
  // Input gradient: its own channel's plus the ReLU branch's where x > 0.
  EXPECT_EQ(m.backward(ctx, dy).to_vector(ctx), (std::vector<float>{1 + 3, 2, 5 + 7, 6}));
}

TEST(Graph, TheZoosResNetsHaveTorchvisionsParameterCounts) {
  const std::pair<const char*, std::int64_t> expected[] = {
      {"resnet18", 11'689'512}, {"resnet34", 21'797'672}, {"resnet50", 25'557'032}};
  for (const auto& [name, count] : expected) {
    Context ctx(Device::cpu());
    Sequential m = make_model(name);
    m.build(ctx, 1);
    EXPECT_EQ(m.parameter_count(), count) << name;
    EXPECT_TRUE(m.is_graph()) << name;
    EXPECT_EQ(m.output_shape({1, 3, 224, 224}), (Shape{1, 1000})) << name;
  }
  Context ctx(Device::cpu());
  Sequential cifar = make_model("resnet20_cifar");
  cifar.build(ctx, 1);
  EXPECT_NEAR(static_cast<double>(cifar.parameter_count()), 0.27e6, 0.01e6);
  EXPECT_EQ(cifar.output_shape({4, 3, 32, 32}), (Shape{4, 10}));
  // torchvision's names, so its weights load by name.
  std::vector<std::string> names;
  Sequential r18 = make_model("resnet18");
  r18.build(ctx, 1);
  for (const NamedParameter& p : r18.parameters()) names.push_back(p.name);
  for (const char* name : {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                           "layer2.0.downsample.1.bias", "layer4.1.bn2.weight", "fc.weight", "fc.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  std::vector<std::string> buffers;
  for (const NamedParameter& p : r18.buffers()) buffers.push_back(p.name);
  EXPECT_NE(std::find(buffers.begin(), buffers.end(), "layer3.1.bn1.running_mean"), buffers.end());
}

TEST(Graph, ASmallResNetTrainsAStepAndSummaryShowsTheJoins) {
  Context ctx(Device::cpu());
  Sequential m = make_model("resnet8_mnist");
  m.build(ctx, 7);
  const Tensor x = Tensor::from_host(ramp(4 * 28 * 28, 1.0f), {4, 1, 28, 28}, ctx);
  const Tensor y = m.forward(ctx, x, true);
  ASSERT_EQ(y.shape(), (Shape{4, 10}));
  m.zero_grad(ctx);
  EXPECT_FALSE(m.backward(ctx, Tensor::full({4, 10}, 0.1f, ctx)).defined()) << "no input gradient asked for";
  double norm = 0;
  for (float g : m.gradient_block().to_vector(ctx)) norm += static_cast<double>(g) * g;
  EXPECT_GT(norm, 0) << "the gradients reach the first convolution through the blocks";
  bool saw_add = false;
  for (const LayerSummary& row : m.summary({4, 1, 28, 28})) {
    if (row.name == "layer2.0.add") {
      saw_add = true;
      EXPECT_EQ(row.inputs, (std::vector<std::string>{"layer2.0.bn2", "layer2.0.downsample.1"}));
      EXPECT_EQ(row.output_shape, (Shape{4, 32, 14, 14}));
    }
  }
  EXPECT_TRUE(saw_add);
  EXPECT_EQ(default_dataset("resnet8_mnist"), "mnist");
  EXPECT_EQ(default_dataset("resnet20_cifar"), "cifar10");
  EXPECT_EQ(default_dataset("resnet50"), "folder");
}

TEST(Graph, BadGraphsAreRefusedNamingTheLayer) {
  Sequential m;
  m.add("a", std::make_unique<ActivationLayer>(Activation::relu));
  expect_error([&] { m.add("b", relu(), {"nowhere"}); }, {"Sequential::add('b')", "input 'nowhere'"});
  expect_error([&] { m.add("b", relu(), {"a", "input"}); }, {"Sequential::add('b')", "takes one input, not 2"});
  expect_error([&] { m.add("input", relu()); }, {"'input' names the network's input"});
  m.add("sum", std::make_unique<Add>(), {"a", "input"});
  m.add("cat", std::make_unique<Concat>(), {"sum", "a"});
  Context ctx(Device::cpu());
  m.build(ctx, 1);
  EXPECT_EQ(m.output_shape({1, 2, 3, 3}), (Shape{1, 4, 3, 3}));
  Sequential bad;
  bad.add("pool", std::make_unique<MaxPool2d>(2));
  bad.add("sum", std::make_unique<Add>(), {"pool", "input"});
  expect_error(
      [&] {
        (void)bad.output_shape({1, 2, 4, 4});
      },
      {"layer 'sum': Add: inputs of different shapes", "[1,2,2,2], [1,2,4,4]"});
}

TEST(Graph, AModelFileHoldsAGraphAndTheExportReadsBackAsTheSameNetwork) {
  Context ctx(Device::cpu());
  Sequential original = make_model("resnet8_mnist");
  const ModelSpec spec = model_spec("resnet8_mnist");
  const std::string text = model_to_json(original, spec).dump();
  ModelFile back = parse_model_json(text, "resnet8.json");
  original.build(ctx, 5);
  back.model.build(ctx, 5);
  ASSERT_EQ(back.model.parameter_count(), original.parameter_count());
  ASSERT_EQ(back.model.size(), original.size());
  for (std::size_t i = 0; i < original.size(); ++i)
    EXPECT_EQ(back.model.input_names(i), original.input_names(i)) << original.layers()[i].first;
  const Tensor x = Tensor::from_host(ramp(2 * 28 * 28, 1.0f), {2, 1, 28, 28}, ctx);
  EXPECT_EQ(back.model.forward(ctx, x, false).to_vector(ctx), original.forward(ctx, x, false).to_vector(ctx));

  const char* bad_input = R"({"input": [1, 4, 4], "layers": [{"type": "relu", "name": "a"},
    {"type": "add", "name": "sum", "inputs": ["a", "b"]}]})";
  expect_error([&] { (void)parse_model_json(bad_input, "bad.json"); },
               {"bad.json", "sum", "input \"b\" is not an earlier"});
  const char* mismatch = R"({"input": [1, 4, 4], "layers": [{"type": "max_pool2d", "name": "p", "kernel_size": 2},
    {"type": "add", "name": "sum", "inputs": ["p", "input"]}]})";
  expect_error([&] { (void)parse_model_json(mismatch, "bad.json"); },
               {"bad.json", "sum", "inputs of different shapes"});
  const char* two_into_relu =
      R"({"input": [1, 4, 4], "layers": [{"type": "relu", "name": "a", "inputs": ["input", "input"]}]})";
  expect_error([&] { (void)parse_model_json(two_into_relu, "bad.json"); }, {"bad.json", "takes one input, not 2"});
}

// The graph path on the GPU: the same network and parameters give the CPU's outputs, input
// gradient and parameter gradients (Add, Concat and global pooling run on existing CUDA ops).
TEST(Graph, CudaMatchesCpuForwardAndBackward) {
  CUDL_REQUIRE_CUDA();
  for (const std::string name : {"branchy", "resnet8_mnist"}) {
    Context cpu(Device::cpu()), gpu(Device::cuda(0));
    Sequential a = name == "branchy" ? branchy() : make_model(name);
    Sequential b = name == "branchy" ? branchy() : make_model(name);
    a.build(cpu, 11);
    b.build(gpu, 11);
    const std::vector<float> params = a.parameter_block().to_vector(cpu);
    // The CPU's initial values, whatever each device's initialisation draws.
    Tensor block = Tensor::from_host(params, a.parameter_block().shape(), gpu);
    gpu.backend().copy(gpu, block, b.parameter_block());
    b.parameters_changed();
    a.set_input_grad(true);
    b.set_input_grad(true);
    const Shape in = name == "branchy" ? Shape{2, 3, 5, 5} : Shape{4, 1, 28, 28};
    const std::vector<float> x = ramp(in.numel(), 1.0f);
    const Tensor ya = a.forward(cpu, Tensor::from_host(x, in, cpu), true);
    const Tensor yb = b.forward(gpu, Tensor::from_host(x, in, gpu), true);
    const std::vector<float> dy = ramp(ya.numel(), 0.5f);
    a.zero_grad(cpu);
    b.zero_grad(gpu);
    const Tensor dxa = a.backward(cpu, Tensor::from_host(dy, ya.shape(), cpu));
    const Tensor dxb = b.backward(gpu, Tensor::from_host(dy, ya.shape(), gpu));
    const auto expect_close = [&](const std::vector<float>& want, const std::vector<float>& got, const char* what) {
      ASSERT_EQ(want.size(), got.size()) << name << " " << what;
      for (std::size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-3 * std::abs(want[i]) + 1e-4) << name << " " << what << "[" << i << "]";
    };
    expect_close(ya.to_vector(cpu), yb.to_vector(gpu), "output");
    expect_close(dxa.to_vector(cpu), dxb.to_vector(gpu), "input gradient");
    expect_close(a.gradient_block().to_vector(cpu), b.gradient_block().to_vector(gpu), "parameter gradients");
  }
}
