// Weight files and checkpoints a hostile or broken run could leave (issue 11, classes 3 and 5):
// NaN/inf values, tensors the model does not use, a tensor named twice in the header, counts
// that would overflow, a folder where a file should be, metrics that are not JSON. Each is an
// Error naming the file and the problem, and a refused load leaves the model as it was.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "cudl/models/train/trainer.hpp"
#include "tests/safetensors_edit.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::error_message;
using cudl::testing::rewrite_safetensors;

namespace {

class BadCheckpoints : public ::testing::Test {
 protected:
  Sequential model(std::uint64_t seed) {
    Sequential m;
    m.add("fc", std::make_unique<Linear>(3, 2));
    m.build(ctx_, seed);
    return m;
  }
  std::vector<float> values(Sequential& m) { return m.parameter_block().to_vector(ctx_); }
  // A finite checkpoint (weights, optimizer state, metadata) of the seed-1 model.
  void save_run(const std::string& path) {
    Sequential a = model(1);
    Optimizer opt(ctx_, a, OptimizerConfig{});
    CheckpointInfo info;
    info.model = "tiny";
    save_checkpoint(path, ctx_, a, &opt, info);
  }
  std::string file(const std::string& name) const { return dir_.file(name); }

  Context ctx_{Device::cpu()};
  cudl::testing::TempDir dir_;
};

TEST_F(BadCheckpoints, NanOrInfWeightsAreRefusedNamingTheFileAndTheFirstTensor) {
  Sequential a = model(1);
  save_weights(file("good.st"), ctx_, a);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    rewrite_safetensors(file("good.st"), file("bad.st"),
                        [&](auto& tensors, auto&) { tensors.at("fc.weight").at(4) = bad; });
    Sequential b = model(2);
    const std::vector<float> before = values(b);
    const std::string msg = error_message([&] { load_weights(file("bad.st"), ctx_, b); });
    EXPECT_TRUE(contains(msg, file("bad.st"))) << msg;
    EXPECT_TRUE(contains(msg, "'fc.weight'")) << msg;
    EXPECT_TRUE(contains(msg, std::isnan(bad) ? "nan" : "inf")) << msg;
    EXPECT_TRUE(contains(msg, "index 4")) << msg;
    EXPECT_EQ(values(b), before) << "a refused load must leave the model alone";
  }
}

TEST_F(BadCheckpoints, NanOptimizerStateInACheckpointIsRefused) {
  save_run(file("run.st"));
  rewrite_safetensors(file("run.st"), file("bad.st"), [](auto& tensors, auto&) {
    tensors.at("optimizer.exp_avg_sq.fc.bias").at(1) = std::numeric_limits<float>::quiet_NaN();
  });
  Sequential b = model(2);
  Optimizer opt_b(ctx_, b, OptimizerConfig{});
  const std::string msg = error_message([&] { load_checkpoint(file("bad.st"), ctx_, b, &opt_b); });
  EXPECT_TRUE(contains(msg, "optimizer.exp_avg_sq.fc.bias")) << msg;
  EXPECT_TRUE(contains(msg, "non-finite")) << msg;
}

TEST_F(BadCheckpoints, UnusedTensorsAreReturnedAndAnErrorWhenStrict) {
  Sequential a = model(1);
  save_weights(file("good.st"), ctx_, a);
  rewrite_safetensors(file("good.st"), file("extra.st"), [](auto& tensors, auto&) {
    tensors["head.weight"] = {1, 2};
    tensors["head.bias"] = {3};
    tensors["optimizer.exp_avg.fc.weight"] = std::vector<float>(6, 0.0f);  // a checkpoint's: never weights
  });
  Sequential b = model(2);
  EXPECT_EQ(load_weights(file("extra.st"), ctx_, b), (std::vector<std::string>{"head.bias", "head.weight"}));
  EXPECT_EQ(values(b), values(a));
  EXPECT_TRUE(load_weights(file("good.st"), ctx_, b).empty());
  const std::string msg = error_message([&] { load_weights(file("extra.st"), ctx_, b, /*allow_unused=*/false); });
  EXPECT_TRUE(contains(msg, "unexpected head.bias; unexpected head.weight")) << msg;
}

TEST_F(BadCheckpoints, StepCountsOutsideZeroToTwoToThe53AreRefused) {
  save_run(file("run.st"));
  const std::vector<std::pair<std::string, std::string>> cases{{"optimizer.steps", "9223372036854775807"},
                                                               {"optimizer.steps", "-1"},
                                                               {"epoch", "-3"},
                                                               {"step", "9007199254740993"}};
  for (const auto& entry : cases) {
    // Named copies, not a structured binding: clang 14 (the sanitizer build) cannot capture one.
    const std::string& key = entry.first;
    const std::string& value = entry.second;
    rewrite_safetensors(file("run.st"), file("bad.st"), [&](auto&, auto& meta) { meta[key] = value; });
    Sequential b = model(2);
    Optimizer opt_b(ctx_, b, OptimizerConfig{});
    const std::string msg = error_message([&] { load_checkpoint(file("bad.st"), ctx_, b, &opt_b); });
    EXPECT_TRUE(contains(msg, fmt::format("metadata {} = {} is outside [0, 9007199254740992]", key, value))) << msg;
    EXPECT_EQ(opt_b.steps(), 0);
    // The header-only read the CLI makes before loading any data says the same.
    EXPECT_EQ(error_message([&] {
                read_checkpoint_info(file("bad.st"));
              }).find(fmt::format("metadata {} = {} is outside", key, value)) != std::string::npos,
              true);
  }
  // 99999999999999999999 does not even parse as a 64-bit integer.
  rewrite_safetensors(file("run.st"), file("bad.st"),
                      [&](auto&, auto& meta) { meta["optimizer.steps"] = "99999999999999999999"; });
  Sequential b = model(2);
  Optimizer opt_b(ctx_, b, OptimizerConfig{});
  EXPECT_TRUE(
      contains(error_message([&] { load_checkpoint(file("bad.st"), ctx_, b, &opt_b); }), "expected an integer"));
}

TEST_F(BadCheckpoints, AFolderIsNotASafetensorsFile) {
  std::filesystem::create_directories(file("weights.safetensors"));
  for (auto call : std::vector<std::function<void()>>{
           [&] { SafetensorsFile::open(file("weights.safetensors")); },
           [&] { read_safetensors_metadata(file("weights.safetensors")); },
       }) {
    const std::string msg = error_message(call);
    EXPECT_TRUE(contains(msg, file("weights.safetensors") + "' is a folder, not a file")) << msg;
  }
  const std::string msg = error_message([&] { SafetensorsFile::open("/dev/null"); });
  EXPECT_TRUE(contains(msg, "is a special file")) << msg;
  EXPECT_TRUE(contains(error_message([&] { SafetensorsFile::open(file("missing")); }), "No such file")) << msg;
}

// JSON keeps the last of two equal keys: a repeated tensor name would hide one tensor silently.
TEST_F(BadCheckpoints, ATensorNamedTwiceInTheHeaderIsAnError) {
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  std::string bytes(8, '\0');
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  bytes += header + std::string(8, '\0');
  cudl::testing::write_string(file("twice.st"), bytes);
  const std::string msg = error_message([&] { SafetensorsFile::open(file("twice.st")); });
  EXPECT_TRUE(contains(msg, "names 'w' twice")) << msg;
  // Equal keys inside different entries (every entry has "dtype") are fine.
  const std::string ok = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  std::string good(8, '\0');
  for (int i = 0; i < 8; ++i) good[static_cast<std::size_t>(i)] = static_cast<char>((ok.size() >> (8 * i)) & 0xff);
  good += ok + std::string(8, '\0');
  cudl::testing::write_string(file("ok.st"), good);
  EXPECT_EQ(SafetensorsFile::open(file("ok.st")).names(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(BadCheckpoints, FitRefusesNonFiniteHyperparameters) {
  Sequential m = model(1);
  Dataset none;
  for (auto [field, value, fragment] :
       std::vector<std::tuple<int, float, std::string>>{{0, std::nanf(""), "learning rate"},
                                                        {0, -1.0f, "learning rate"},
                                                        {1, std::numeric_limits<float>::infinity(), "momentum"},
                                                        {2, -0.5f, "weight decay"}}) {
    FitOptions o;
    o.epochs = 1;
    float* target = field == 0 ? &o.optimizer.lr : field == 1 ? &o.optimizer.momentum : &o.optimizer.weight_decay;
    *target = value;
    const std::string msg = error_message([&] { fit(ctx_, m, none, none, o); });
    EXPECT_TRUE(contains(msg, fragment)) << msg;
  }
}

TEST_F(BadCheckpoints, StyleOptionsRefuseNonFiniteOrHugeNumbers) {
  auto refuse = [](auto edit, const std::string& fragment) {
    StyleOptions o;
    edit(o);
    const std::string msg = error_message([&] { check_style_options(o); });
    EXPECT_TRUE(contains(msg, fragment)) << msg;
  };
  refuse([](StyleOptions& o) { o.style_weight = std::nan(""); }, "style_weight");
  refuse([](StyleOptions& o) { o.tv_weight = 1e39; }, "tv_weight");
  refuse([](StyleOptions& o) { o.content_weight = -1; }, "content_weight");
  refuse([](StyleOptions& o) { o.style_scale = std::numeric_limits<double>::infinity(); }, "style_scale");
  refuse([](StyleOptions& o) { o.style_scale = 1e10; }, "style_scale must be a finite number in (0, 100]");
  refuse(
      [](StyleOptions& o) {
        o.size = 1024;
        o.style_scale = 50;
      },
      "over 32768 px");
  refuse([](StyleOptions& o) { o.scales = {256, 100000}; }, "got 100000");
  refuse([](StyleOptions& o) { o.lr = std::nanf(""); }, "style: lr must be");
  refuse([](StyleOptions& o) { o.style_blend_weights = {1, std::nan("")}; }, "style_blend_weights");
  EXPECT_NO_THROW(check_style_options(StyleOptions{}));
  // A seed past 2^64 - 1 is a sentence, not std::stoull's "stoull".
  const std::string msg =
      error_message([&] { make_style_network(ctx_, StyleOptions{}, "random:99999999999999999999"); });
  EXPECT_TRUE(contains(msg, "random:SEED needs a whole number")) << msg;
}

}  // namespace
