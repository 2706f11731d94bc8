// Checkpoints and weight files on a small Sequential (Conv2d + ReLU + Flatten + Dropout + Linear)
// with Adam: a resumed model equals the saved one (parameters, optimizer state, step count, Dropout
// counters), and every kind of mismatch is reported at once, naming the file.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/network/sequential.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::error_message;

namespace {

// Input [N, 2, 4, 4]; `channels` changes the first layer's weight shape; `head` names the last layer.
Sequential tiny_model(Context& ctx, std::uint64_t seed, std::int64_t channels = 4,
                      const std::string& head = "classifier.1") {
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  Sequential m;
  m.add("features.0", std::make_unique<Conv2d>(2, channels, 3, same));
  m.add("features.1", relu());
  m.add("flatten", std::make_unique<Flatten>());
  m.add("classifier.0", std::make_unique<Dropout>(0.5f));
  m.add(head, std::make_unique<Linear>(channels * 16, 3));
  m.build(ctx, seed);
  return m;
}

class Checkpoint : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.file(name); }

  // Two Adam steps from hand-set gradients, so the state is neither zero nor uniform.
  void train_two_steps(Sequential& model, Optimizer& opt) {
    for (int s = 0; s < 2; ++s) {
      ctx_.backend().fill_uniform(ctx_, model.gradient_block(), -1.0f, 1.0f, 99, static_cast<std::uint64_t>(s) * 1000);
      opt.step(ctx_, 0.01f);
    }
  }
  std::vector<float> values(Sequential& m) { return m.parameter_block().to_vector(ctx_); }

  Context ctx_{Device::cpu()};
  cudl::testing::TempDir dir_;
};

TEST_F(Checkpoint, RoundTripRestoresParametersOptimizerStateStepsAndCounters) {
  Sequential a = tiny_model(ctx_, 1);
  Optimizer opt_a(ctx_, a, OptimizerConfig{});
  train_two_steps(a, opt_a);
  dynamic_cast<Dropout&>(a.layer("classifier.0")).set_counter(1234);
  CheckpointInfo info;
  info.model = "tiny";
  info.epoch = 3;
  info.step = 17;
  info.seed = 18446744073709551615ull;
  info.extra = {{"dataset", "mnist"}, {"lr_schedule", "cosine"}};
  const std::string path = file("ckpt.safetensors");
  save_checkpoint(path, ctx_, a, &opt_a, info);

  // The file speaks torchvision's names; optimizer state is per parameter.
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.shape("features.0.weight"), (Shape{4, 2, 3, 3}));
  EXPECT_EQ(f.shape("optimizer.exp_avg.classifier.1.weight"), (Shape{3, 64}));
  EXPECT_TRUE(f.contains("optimizer.exp_avg_sq.features.0.bias"));
  EXPECT_EQ(f.metadata().at("format"), "cudl-checkpoint-1");
  EXPECT_EQ(f.metadata().at("optimizer"), "adam");
  EXPECT_EQ(f.metadata().at("optimizer.steps"), "2");
  EXPECT_EQ(f.metadata().at("dropout.classifier.0"), "1234");
  EXPECT_EQ(f.metadata().at("extra.dataset"), "mnist");

  Sequential b = tiny_model(ctx_, 2);
  Optimizer opt_b(ctx_, b, OptimizerConfig{});
  ASSERT_NE(values(a), values(b));
  const CheckpointInfo got = load_checkpoint(path, ctx_, b, &opt_b);
  EXPECT_EQ(got.model, "tiny");
  EXPECT_EQ(got.epoch, 3);
  EXPECT_EQ(got.step, 17);
  EXPECT_EQ(got.seed, info.seed);
  EXPECT_EQ(got.extra, info.extra);
  EXPECT_EQ(values(b), values(a));
  EXPECT_EQ(opt_b.steps(), 2);
  ASSERT_EQ(opt_b.state().size(), 2u);
  for (std::size_t i = 0; i < 2; ++i)
    EXPECT_EQ(opt_b.state()[i].second->to_vector(ctx_), opt_a.state()[i].second->to_vector(ctx_))
        << opt_a.state()[i].first;
  EXPECT_EQ(dynamic_cast<Dropout&>(b.layer("classifier.0")).counter(), 1234u);

  // Resumed training continues identically (bias correction uses the restored step count).
  train_two_steps(a, opt_a);
  train_two_steps(b, opt_b);
  EXPECT_EQ(values(b), values(a));
}

TEST_F(Checkpoint, LoadWithoutOptimizerIgnoresItsState) {
  Sequential a = tiny_model(ctx_, 1);
  Optimizer opt(ctx_, a, OptimizerConfig{});
  train_two_steps(a, opt);
  const std::string path = file("ckpt.safetensors");
  save_checkpoint(path, ctx_, a, &opt, {});
  Sequential b = tiny_model(ctx_, 2);
  load_checkpoint(path, ctx_, b, nullptr);
  EXPECT_EQ(values(b), values(a));
}

TEST_F(Checkpoint, ShapeMismatchNamesTheParameterAndBothShapesAndLeavesTheModelAlone) {
  Sequential a = tiny_model(ctx_, 1, 4);
  const std::string path = file("ckpt.safetensors");
  save_checkpoint(path, ctx_, a, nullptr, {});
  Sequential b = tiny_model(ctx_, 2, 6);
  const std::vector<float> before = values(b);
  const std::string msg = error_message([&] { load_checkpoint(path, ctx_, b, nullptr); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "features.0.weight: checkpoint [4,2,3,3], model [6,2,3,3]")) << msg;
  EXPECT_TRUE(contains(msg, "features.0.bias: checkpoint [4], model [6]")) << msg;
  EXPECT_TRUE(contains(msg, "classifier.1.weight: checkpoint [3,64], model [3,96]")) << msg;
  EXPECT_TRUE(contains(msg, "(3 mismatches)")) << msg;
  EXPECT_EQ(values(b), before);
}

TEST_F(Checkpoint, MissingAndUnexpectedNamesAreListed) {
  Sequential a = tiny_model(ctx_, 1);
  const std::string path = file("ckpt.safetensors");
  save_checkpoint(path, ctx_, a, nullptr, {});
  Sequential b = tiny_model(ctx_, 2, 4, "head");
  const std::string msg = error_message([&] { load_checkpoint(path, ctx_, b, nullptr); });
  EXPECT_TRUE(contains(msg, "missing head.weight")) << msg;
  EXPECT_TRUE(contains(msg, "missing head.bias")) << msg;
  EXPECT_TRUE(contains(msg, "unexpected classifier.1.weight")) << msg;
  EXPECT_TRUE(contains(msg, "unexpected classifier.1.bias")) << msg;
  EXPECT_TRUE(contains(msg, "(4 mismatches)")) << msg;
}

TEST_F(Checkpoint, LongMismatchListsAreCutAndCounted) {
  Sequential a = tiny_model(ctx_, 1);
  Optimizer opt_a(ctx_, a, OptimizerConfig{});
  const std::string path = file("ckpt.safetensors");
  save_checkpoint(path, ctx_, a, &opt_a, {});
  // Three parameters change shape (the Linear bias does not), and so do their two Adam slices: 9.
  Sequential b = tiny_model(ctx_, 2, 5);
  Optimizer opt_b(ctx_, b, OptimizerConfig{});
  const std::string msg = error_message([&] { load_checkpoint(path, ctx_, b, &opt_b); });
  EXPECT_TRUE(contains(msg, "(9 mismatches)")) << msg;
  EXPECT_TRUE(contains(msg, "... and 4 more")) << msg;
  EXPECT_EQ(opt_b.steps(), 0);
}

TEST_F(Checkpoint, OptimizerKindAndPresenceAreChecked) {
  Sequential a = tiny_model(ctx_, 1);
  Optimizer adam(ctx_, a, OptimizerConfig{});
  const std::string with_adam = file("adam.safetensors");
  save_checkpoint(with_adam, ctx_, a, &adam, {});
  Sequential b = tiny_model(ctx_, 2);
  OptimizerConfig sgd_config;
  sgd_config.kind = OptimizerKind::sgd;
  Optimizer sgd(ctx_, b, sgd_config);
  std::string msg = error_message([&] { load_checkpoint(with_adam, ctx_, b, &sgd); });
  EXPECT_TRUE(contains(msg, "optimizer: checkpoint adam, model sgd")) << msg;
  EXPECT_TRUE(contains(msg, "missing optimizer.momentum_buffer.features.0.weight")) << msg;

  const std::string without = file("plain.safetensors");
  save_checkpoint(without, ctx_, a, nullptr, {});
  msg = error_message([&] { load_checkpoint(without, ctx_, b, &sgd); });
  EXPECT_TRUE(contains(msg, "saved without an optimizer")) << msg;
}

TEST_F(Checkpoint, AWeightsFileIsNotACheckpoint) {
  Sequential a = tiny_model(ctx_, 1);
  const std::string path = file("weights.safetensors");
  save_weights(path, ctx_, a, {{"source", "test"}});
  Sequential b = tiny_model(ctx_, 2);
  const std::string msg = error_message([&] { load_checkpoint(path, ctx_, b, nullptr); });
  EXPECT_TRUE(contains(msg, "cudl-checkpoint-1")) << msg;
  EXPECT_TRUE(contains(msg, "load_weights")) << msg;
}

TEST_F(Checkpoint, WeightsRoundTripAndTruncatedModelsIgnoreExtraNames) {
  Sequential a = tiny_model(ctx_, 1);
  const std::string path = file("weights.safetensors");
  save_weights(path, ctx_, a, {{"source", "test"}});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"classifier.1.bias", "classifier.1.weight", "features.0.bias",
                                                 "features.0.weight"}));
  EXPECT_EQ(f.metadata().at("source"), "test");

  Sequential b = tiny_model(ctx_, 2);
  load_weights(path, ctx_, b);
  EXPECT_EQ(values(b), values(a));

  // Style transfer's case: the file has layers the truncated network dropped.
  Conv2dParams same;
  same.pad_h = same.pad_w = 1;
  Sequential features;
  features.add("features.0", std::make_unique<Conv2d>(2, 4, 3, same));
  features.add("features.1", relu());
  features.build(ctx_, 3);
  load_weights(path, ctx_, features);
  EXPECT_EQ(features.parameters()[0].parameter->value.to_vector(ctx_),
            a.parameters()[0].parameter->value.to_vector(ctx_));
  const std::string msg = error_message([&] { load_weights(path, ctx_, features, /*allow_unused=*/false); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "unexpected classifier.1.weight")) << msg;

  // Every model parameter must still be there.
  Sequential other = tiny_model(ctx_, 4, 4, "head");
  EXPECT_TRUE(contains(error_message([&] { load_weights(path, ctx_, other); }), "missing head.weight"));
}

TEST_F(Checkpoint, LoadWeightsConvertsHalfPrecisionFiles) {
  Sequential m;
  m.add("fc", std::make_unique<Linear>(2, 2));
  m.build(ctx_, 1);
  // F16 for 1, -2, 0.5, 4 and BF16 for 1, -3, as a PyTorch half-precision export stores them.
  const std::vector<std::uint16_t> w{0x3C00, 0xC000, 0x3800, 0x4400};
  const std::vector<std::uint16_t> b{0x3F80, 0xC040};
  const std::string path = file("half.safetensors");
  write_safetensors(path, {{"fc.weight", "F16", {2, 2}, w.data()}, {"fc.bias", "BF16", {2}, b.data()}});
  load_weights(path, ctx_, m);
  EXPECT_EQ(values(m), (std::vector<float>{1.0f, -2.0f, 0.5f, 4.0f, 1.0f, -3.0f}));
}

// Saved from the GPU, loaded on the GPU and on the CPU: the file is device-neutral.
TEST_F(Checkpoint, DeviceCheckpointLoadsOnEitherDevice) {
  CUDL_REQUIRE_CUDA();
  Context gpu(Device::cuda(0));
  Sequential a = tiny_model(gpu, 1);
  Optimizer opt_a(gpu, a, OptimizerConfig{});
  for (int s = 0; s < 2; ++s) {
    gpu.backend().fill_uniform(gpu, a.gradient_block(), -1.0f, 1.0f, 7, static_cast<std::uint64_t>(s) * 1000);
    opt_a.step(gpu, 0.01f);
  }
  const std::string path = file("gpu.safetensors");
  save_checkpoint(path, gpu, a, &opt_a, {});
  const std::vector<float> expected = a.parameter_block().to_vector(gpu);
  const std::vector<float> expected_m = opt_a.state()[0].second->to_vector(gpu);

  Sequential b = tiny_model(gpu, 2);
  Optimizer opt_b(gpu, b, OptimizerConfig{});
  load_checkpoint(path, gpu, b, &opt_b);
  EXPECT_EQ(b.parameter_block().to_vector(gpu), expected);
  EXPECT_EQ(opt_b.state()[0].second->to_vector(gpu), expected_m);

  Sequential c = tiny_model(ctx_, 3);
  Optimizer opt_c(ctx_, c, OptimizerConfig{});
  load_checkpoint(path, ctx_, c, &opt_c);
  EXPECT_EQ(values(c), expected);
  EXPECT_EQ(opt_c.steps(), 2);
}

}  // namespace
