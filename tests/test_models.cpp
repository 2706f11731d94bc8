// Models, layers and optimizers: exact parameter counts, torchvision names, whole-network
// gradients by finite differences, taps, and the learning-rate schedules.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/normalization.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/gradcheck.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::expect_gradient_matches;
using cudl::testing::weighted_sum;

TEST(Models, ParameterCountsMatchTheReferenceModels) {
  const std::vector<std::pair<std::string, std::int64_t>> expected{
      {"mlp", 101'770},          {"mnist_cnn", 600'810},     {"vgg11", 132'863'336},     {"vgg13", 133'047'848},
      {"vgg16", 138'357'544},    {"vgg19", 143'667'240},     {"vgg11_bn", 132'868'840},  {"vgg16_bn", 138'365'992},
      {"vgg19_bn", 143'678'248}, {"vgg11_cifar", 9'225'610}, {"vgg19_cifar", 20'029'514}};
  for (const auto& [name, count] : expected) EXPECT_EQ(make_model(name).parameter_count(), count) << name;
}

TEST(Models, OutputShapesFollowTheInput) {
  for (const auto& spec : model_specs()) {
    Sequential m = make_model(spec.name);
    const Shape out = m.output_shape({2, spec.input[0], spec.input[1], spec.input[2]});
    EXPECT_EQ(out, (Shape{2, spec.num_classes})) << spec.name;
  }
}

TEST(Models, UnknownModelListsTheKnownOnes) {
  try {
    make_model("resnet51");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resnet51"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("vgg19"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("resnet50"), std::string::npos) << "the ResNets are listed";
  }
}

TEST(Models, TorchvisionParameterNames) {
  Sequential vgg = make_model("vgg19");
  auto params = vgg.parameters();
  ASSERT_EQ(params.size(), 38u);  // 16 convs + 3 linears, weight and bias each
  EXPECT_EQ(params.front().name, "features.0.weight");
  EXPECT_EQ(params[2].name, "features.2.weight");
  EXPECT_EQ(params[31].name, "features.34.bias");
  EXPECT_EQ(params.back().name, "classifier.6.bias");
  Sequential bn = make_model("vgg11_bn");
  auto buffers = bn.buffers();
  ASSERT_FALSE(buffers.empty());
  EXPECT_EQ(buffers.front().name, "features.1.running_mean");
}

TEST(Models, NeuralStyleLayerNames) {
  EXPECT_EQ(vgg_layer_name(19, "conv1_1"), "features.0");
  EXPECT_EQ(vgg_layer_name(19, "relu1_1"), "features.1");
  EXPECT_EQ(vgg_layer_name(19, "pool1"), "features.4");
  EXPECT_EQ(vgg_layer_name(19, "relu4_2"), "features.22");
  EXPECT_EQ(vgg_layer_name(19, "relu5_1"), "features.29");
  EXPECT_EQ(vgg_layer_name(19, "pool5"), "features.36");
  EXPECT_EQ(vgg_layer_name(16, "relu5_3"), "features.29");
  EXPECT_THROW(vgg_layer_name(19, "relu6_1"), Error);
}

TEST(Models, VggInitialisationFollowsTorchvision) {
  Context ctx;
  Sequential m = make_model("vgg11_cifar");
  m.build(ctx, 3);
  auto params = m.parameters();
  // features.0: Kaiming normal, fan_out = 64*3*3 -> std sqrt(2/576); bias zero.
  auto w = params[0].parameter->value.to_vector(ctx);
  double sq = 0;
  for (float v : w) sq += static_cast<double>(v) * v;
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(w.size())), std::sqrt(2.0 / 576.0), 0.01);
  for (float v : params[1].parameter->value.to_vector(ctx)) EXPECT_EQ(v, 0.0f);
  // classifier.0: N(0, 0.01).
  auto fc = params[params.size() - 2].parameter->value.to_vector(ctx);
  sq = 0;
  for (float v : fc) sq += static_cast<double>(v) * v;
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(fc.size())), 0.01, 0.001);
}

TEST(Models, SameSeedSameWeightsDifferentSeedDifferentWeights) {
  Context ctx;
  Sequential a = make_model("mnist_cnn"), b = make_model("mnist_cnn"), c = make_model("mnist_cnn");
  a.build(ctx, 7);
  b.build(ctx, 7);
  c.build(ctx, 8);
  EXPECT_EQ(a.parameter_block().to_vector(ctx), b.parameter_block().to_vector(ctx));
  EXPECT_NE(a.parameter_block().to_vector(ctx), c.parameter_block().to_vector(ctx));
}

namespace {

// A small net with every kind of layer that has a backward, for whole-network gradient checks.
Sequential tiny_net() {
  Sequential m;
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  m.add("conv", std::make_unique<Conv2d>(3, 4, 3, same));
  m.add("bn", std::make_unique<BatchNorm2d>(4));
  m.add("act", std::make_unique<ActivationLayer>(Activation::tanh));
  m.add("pool", std::make_unique<AvgPool2d>(2));
  m.add("deconv", std::make_unique<ConvTranspose2d>(4, 2, 2, Conv2dParams{0, 0, 2, 2, 1, 1}));
  m.add("sig", std::make_unique<ActivationLayer>(Activation::sigmoid));
  m.add("flatten", std::make_unique<Flatten>());
  m.add("fc", std::make_unique<Linear>(2 * 6 * 6, 5));
  return m;
}

}  // namespace

TEST(GradientModel, WholeNetworkInputAndParameters) {
  Context ctx;
  Sequential m = tiny_net();
  m.build(ctx, 11);
  m.set_input_grad(true);
  Tensor x = Tensor::empty({2, 3, 6, 6}, ctx);
  ctx.backend().fill_uniform(ctx, x, -1.0f, 1.0f, 5, 0);
  std::vector<float> w(2 * 5);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * static_cast<float>(i) - 0.4f;
  auto loss = [&] { return weighted_sum(m.forward(ctx, x, true).to_vector(ctx), w); };

  m.zero_grad(ctx);
  Tensor y = m.forward(ctx, x, true);
  Tensor dx = m.backward(ctx, Tensor::from_host(w, y.shape(), ctx));
  ASSERT_TRUE(dx.defined());
  expect_gradient_matches(ctx, x, dx, loss, "network dx");
  for (const auto& p : m.parameters()) {
    cudl::testing::GradCheckOptions opts;
    opts.max_checks = 24;
    expect_gradient_matches(ctx, p.parameter->value, p.parameter->grad, loss, p.name, opts);
  }
}

TEST(GradientModel, TapGradientsAddAtTheirLayer) {
  // loss = Σ w·y + Σ v·tap(act): the tap's gradient enters at "act" on the way back.
  Context ctx;
  Sequential m = tiny_net();
  m.build(ctx, 12);
  m.set_input_grad(true);
  m.set_taps({"act"});
  Tensor x = Tensor::empty({1, 3, 6, 6}, ctx);
  ctx.backend().fill_uniform(ctx, x, -1.0f, 1.0f, 6, 0);
  std::vector<float> w(5, 0.3f), v(4 * 6 * 6);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<float>(i));
  auto loss = [&] {
    const double head = weighted_sum(m.forward(ctx, x, true).to_vector(ctx), w);
    return head + weighted_sum(m.tap("act").to_vector(ctx), v);
  };
  m.zero_grad(ctx);
  Tensor y = m.forward(ctx, x, true);
  Tensor dx =
      m.backward(ctx, Tensor::from_host(w, y.shape(), ctx), {{"act", Tensor::from_host(v, m.tap("act").shape(), ctx)}});
  expect_gradient_matches(ctx, x, dx, loss, "dx with a tap");
}

TEST(GradientModel, FrozenLayersPassGradientsButKeepTheirOwnAtZero) {
  Context ctx;
  Sequential m = tiny_net();
  m.build(ctx, 13);
  m.set_frozen(true);
  m.set_input_grad(true);
  Tensor x = Tensor::full({1, 3, 6, 6}, 0.5f, ctx);
  m.zero_grad(ctx);
  Tensor y = m.forward(ctx, x, true);
  Tensor dx = m.backward(ctx, Tensor::full(y.shape(), 1.0f, ctx));
  double grad_norm = 0;
  for (float g : m.gradient_block().to_vector(ctx)) grad_norm += std::abs(g);
  EXPECT_EQ(grad_norm, 0.0);
  double dx_norm = 0;
  for (float g : dx.to_vector(ctx)) dx_norm += std::abs(g);
  EXPECT_GT(dx_norm, 0.0);
}

TEST(Schedules, ShapesOfTheLearningRateCurves) {
  const float lr = 0.1f;
  EXPECT_FLOAT_EQ(learning_rate(Schedule::none, lr, 50, 100), lr);
  EXPECT_FLOAT_EQ(learning_rate(Schedule::step, lr, 10, 90), lr);
  EXPECT_NEAR(learning_rate(Schedule::step, lr, 40, 90), 0.01f, 1e-7);
  EXPECT_NEAR(learning_rate(Schedule::step, lr, 80, 90), 0.001f, 1e-8);
  EXPECT_FLOAT_EQ(learning_rate(Schedule::cosine, lr, 0, 100), lr);
  EXPECT_NEAR(learning_rate(Schedule::cosine, lr, 50, 100), lr / 2, 1e-6);
  EXPECT_NEAR(learning_rate(Schedule::cosine, lr, 100, 100), 0.0f, 1e-7);
  // One-cycle: lr/25 at the start, lr at 30%, lr/25/1e4 at the end (PyTorch's OneCycleLR defaults).
  EXPECT_NEAR(learning_rate(Schedule::onecycle, lr, 0, 1000), lr / 25, 1e-7);
  EXPECT_NEAR(learning_rate(Schedule::onecycle, lr, 300, 1000), lr, 1e-6);
  EXPECT_NEAR(learning_rate(Schedule::onecycle, lr, 1000, 1000), lr / 25 / 1e4, 1e-9);
  EXPECT_THROW(parse_schedule("linear"), Error);
  EXPECT_THROW(parse_optimizer("rmsprop"), Error);
}

TEST(Optimizers, OneFusedStepUpdatesEveryParameterOfTheBlock) {
  Context ctx;
  Sequential m = make_model("mlp");
  m.build(ctx, 1);
  for (OptimizerKind kind : {OptimizerKind::sgd, OptimizerKind::adam, OptimizerKind::adamw}) {
    OptimizerConfig cfg;
    cfg.kind = kind;
    Optimizer opt(ctx, m, cfg);
    const auto before = m.parameter_block().to_vector(ctx);
    ctx.backend().fill(ctx, m.gradient_block(), 1.0f);
    opt.step(ctx, 0.01f);
    const auto after = m.parameter_block().to_vector(ctx);
    std::size_t moved = 0;
    for (std::size_t i = 0; i < before.size(); ++i) moved += after[i] < before[i];
    EXPECT_EQ(moved, before.size()) << optimizer_name(kind);
    EXPECT_EQ(opt.steps(), 1);
  }
}

// The sharded update (data parallel) runs the optimizer on pieces of the block: pieces that cover
// it, in any order and of any alignment, give the whole step's bits, over several steps (the state
// carries over), for every optimizer.
TEST(Optimizers, PiecesThatCoverTheBlockGiveTheWholeStepsBits) {
  Context ctx;
  for (OptimizerKind kind : {OptimizerKind::sgd, OptimizerKind::adam, OptimizerKind::adamw}) {
    OptimizerConfig cfg;
    cfg.kind = kind;
    cfg.weight_decay = 0.01f;
    Sequential whole = make_model("mlp"), pieces = make_model("mlp");
    whole.build(ctx, 1);
    pieces.build(ctx, 1);
    Optimizer a(ctx, whole, cfg), b(ctx, pieces, cfg);
    const std::int64_t n = whole.parameter_block().numel();
    const std::vector<std::int64_t> cuts = {0, 1, 17, n / 3, n / 2 + 5, n - 3, n};
    for (int step = 0; step < 3; ++step) {
      const std::vector<float> grads = cudl::testing::random_values(n, 100 + static_cast<unsigned>(step));
      std::copy(grads.begin(), grads.end(), whole.gradient_block().data<float>());
      std::copy(grads.begin(), grads.end(), pieces.gradient_block().data<float>());
      a.step(ctx, 0.01f);
      b.prepare(ctx, 0.01f);
      for (std::size_t i = cuts.size() - 1; i > 0; --i) b.apply(ctx, cuts[i - 1], cuts[i]);  // last piece first
    }
    EXPECT_EQ(whole.parameter_block().to_vector(ctx), pieces.parameter_block().to_vector(ctx)) << optimizer_name(kind);
    const auto sa = a.state(), sb = b.state();
    ASSERT_EQ(sa.size(), sb.size());
    for (std::size_t i = 0; i < sa.size(); ++i)
      EXPECT_EQ(sa[i].second->to_vector(ctx), sb[i].second->to_vector(ctx))
          << optimizer_name(kind) << " " << sa[i].first;
    EXPECT_THROW(b.apply(ctx, 5, n + 1), Error);
    EXPECT_THROW(b.apply(ctx, 6, 5), Error);
  }
}

namespace {

// Wraps a layer and records which backward passes ran and whether each was asked for dx.
class Probe : public Layer {
 public:
  Probe(LayerPtr inner, std::vector<std::string>* log, std::string name)
      : inner_(std::move(inner)), log_(log), name_(std::move(name)) {}
  std::string type() const override { return inner_->type(); }
  Shape output_shape(const Shape& input) const override { return inner_->output_shape(input); }
  std::vector<Parameter*> parameters() override { return inner_->parameters(); }
  void initialize(Context& ctx, std::uint64_t seed) override { inner_->initialize(ctx, seed); }
  Tensor forward(Context& ctx, const Tensor& x, bool train) override { return inner_->forward(ctx, x, train); }
  Tensor backward(Context& ctx, const Tensor& dy) override {
    inner_->set_frozen(frozen());
    inner_->set_input_grad(input_grad());
    log_->push_back(name_ + (input_grad() ? "+dx" : ""));
    return inner_->backward(ctx, dy);
  }

 private:
  LayerPtr inner_;
  std::vector<std::string>* log_;
  std::string name_;
};

}  // namespace

TEST(GradientModel, NoGradientIsComputedThatNothingBelowReads) {
  Context ctx;
  std::vector<std::string> log;
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  Sequential m;
  auto probe = [&](const char* name, LayerPtr layer) {
    m.add(name, std::make_unique<Probe>(std::move(layer), &log, name));
  };
  probe("norm",
        std::make_unique<Normalize>(std::array<float, 3>{0.5f, 0.5f, 0.5f}, std::array<float, 3>{0.2f, 0.2f, 0.2f}));
  probe("conv1", std::make_unique<Conv2d>(3, 4, 3, same));
  probe("relu1", std::make_unique<ActivationLayer>(Activation::relu));
  probe("conv2", std::make_unique<Conv2d>(4, 4, 3, same));
  probe("flatten", std::make_unique<Flatten>());
  probe("fc", std::make_unique<Linear>(4 * 4 * 4, 3));
  m.build(ctx, 3);
  Tensor x = Tensor::empty({2, 3, 4, 4}, ctx);
  ctx.backend().fill_uniform(ctx, x, 0.0f, 1.0f, 7, 0);
  auto run = [&] {
    log.clear();
    m.zero_grad(ctx);
    Tensor y = m.forward(ctx, x, true);
    Tensor dx = m.backward(ctx, Tensor::full(y.shape(), 0.1f, ctx));
    return std::make_pair(dx, m.gradient_block().to_vector(ctx));
  };

  // Training a classifier: the first convolution computes its weight gradient only, and the input
  // normalisation below it does nothing.
  auto [dx, grads] = run();
  EXPECT_FALSE(dx.defined());
  EXPECT_EQ(log, (std::vector<std::string>{"fc+dx", "flatten+dx", "conv2+dx", "relu1+dx", "conv1"}));

  // The same weight gradients as when the image gradient is wanted too (which runs every pass).
  m.set_input_grad(true);
  auto [dx_all, grads_all] = run();
  EXPECT_TRUE(dx_all.defined());
  EXPECT_EQ(log, (std::vector<std::string>{"fc+dx", "flatten+dx", "conv2+dx", "relu1+dx", "conv1+dx", "norm+dx"}));
  EXPECT_EQ(grads, grads_all);

  // Fine-tuning a head on a frozen backbone: only the head runs backward, and not for dx.
  m.set_input_grad(false);
  for (const char* name : {"conv1", "conv2"}) m.layer(name).set_frozen(true);
  auto [dx_head, grads_head] = run();
  EXPECT_FALSE(dx_head.defined());
  EXPECT_EQ(log, (std::vector<std::string>{"fc"}));
}
