// Fine-tuning (models/finetune): --init-from by name and shape, a new head, frozen layers that do
// not change while the gradient still flows through them, and a fine-tuned net beating one
// trained from scratch in the same steps on a 2-class image folder.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>

#include "cudl/engine/io/image.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/train/finetune.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::expect_error;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

// conv a -> relu -> conv b -> relu -> pool -> flatten -> linear head, on 16x16 RGB.
const char* kNet = R"({"name": "tiny", "input": [3, 16, 16], "layers": [
  {"type": "conv2d", "name": "features.0", "out_channels": 8, "kernel_size": 3, "padding": 1},
  {"type": "relu", "name": "features.1"},
  {"type": "conv2d", "name": "features.2", "out_channels": 8, "kernel_size": 3, "padding": 1},
  {"type": "relu", "name": "features.3"},
  {"type": "max_pool2d", "name": "features.4", "kernel_size": 4},
  {"type": "flatten", "name": "flatten"},
  {"type": "linear", "name": "classifier", "out_features": 4}]})";

Sequential tiny_net() { return parse_model_json(kNet, "tiny.json").model; }

std::vector<float> values_of(Sequential& m, const std::string& name, Context& ctx) {
  for (const auto& p : m.parameters())
    if (p.name == name) return p.parameter->value.to_vector(ctx);
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

// Oriented stripes with a random phase, colour and noise: class 0 horizontal, 1 vertical,
// 2 diagonal, 3 anti-diagonal.
Image stripes(int cls, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0, 1);
  const float phase = 6.2832f * u(rng), period = 4.0f + 3.0f * u(rng);
  const float r = 0.4f + 0.6f * u(rng), g = 0.4f + 0.6f * u(rng), b = 0.4f + 0.6f * u(rng);
  Image img(16, 16, 3);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x) {
      const float t = cls == 0 ? y : cls == 1 ? x : cls == 2 ? x + y : x - y;
      const float v = 0.5f + 0.5f * std::sin(6.2832f * t / period + phase);
      const float c[3] = {r, g, b};
      for (int ch = 0; ch < 3; ++ch) img.at(y, x, ch) = std::clamp(v * c[ch] + 0.15f * (u(rng) - 0.5f), 0.0f, 1.0f);
    }
  return img;
}

// dir/{train,test}/<class>/*.png for the given classes.
std::string stripe_folder(const std::string& dir, const std::vector<int>& classes, int train_per_class,
                          int test_per_class, unsigned seed) {
  std::mt19937 rng(seed);
  for (const std::string split : {"train", "test"}) {
    const int n = split == "train" ? train_per_class : test_per_class;
    for (int c : classes) {
      const std::string folder = fmt::format("{}/{}/class{}", dir, split, c);
      std::filesystem::create_directories(folder);
      for (int i = 0; i < n; ++i) write_image(fmt::format("{}/{:03}.png", folder, i), stripes(c, rng));
    }
  }
  return dir;
}

FitOptions options(std::int64_t epochs) {
  FitOptions o;
  o.model_name = "tiny.json";
  o.epochs = epochs;
  o.batch_size = 16;
  o.optimizer.lr = 3e-3f;
  o.schedule = Schedule::none;
  o.seed = 3;
  return o;
}

}  // namespace

TEST(Finetune, FrozenLayersKeepTheirWeightsWhileEarlierLayersStillLearn) {
  TempDir dir;
  const DataSplits data = load_image_folder(stripe_folder(dir.file("d"), {0, 1, 2, 3}, 8, 2, 1), 16);
  Context ctx(Device::cpu());
  Sequential m = tiny_net();
  m.build(ctx, 1);
  EXPECT_EQ(freeze_layers(m, {"features.2"}), std::vector<std::string>{"features.2"});
  const auto a0 = values_of(m, "features.0.weight", ctx), b0 = values_of(m, "features.2.weight", ctx),
             bias0 = values_of(m, "features.2.bias", ctx), h0 = values_of(m, "classifier.weight", ctx);
  (void)fit(ctx, m, data.train, data.test, options(2));
  EXPECT_EQ(values_of(m, "features.2.weight", ctx), b0);  // bit for bit
  EXPECT_EQ(values_of(m, "features.2.bias", ctx), bias0);
  EXPECT_NE(values_of(m, "features.0.weight", ctx), a0);  // the gradient flowed through the frozen layer
  EXPECT_NE(values_of(m, "classifier.weight", ctx), h0);

  // No weight gradient is computed for a frozen layer: after a backward its gradient stays zero.
  m.zero_grad(ctx);
  Tensor x = Tensor::from_host(cudl::testing::random_values(2 * 3 * 16 * 16, 2, 0, 1), {2, 3, 16, 16}, ctx);
  Tensor y = m.forward(ctx, x, true);
  m.backward(ctx, Tensor::full(y.shape(), 1.0f, ctx));
  for (const auto& p : m.parameters()) {
    const auto g = p.parameter->grad.to_vector(ctx);
    const bool all_zero = std::all_of(g.begin(), g.end(), [](float v) { return v == 0.0f; });
    EXPECT_EQ(all_zero, p.name.starts_with("features.2")) << p.name;
  }
}

TEST(Finetune, FreezeOnResumeKeepsWeightsWhoseOptimizerStateWasRestored) {
  // Epoch 1 trains every layer (Adam's moments for features.2 become non-zero and are saved);
  // epoch 2 resumes with features.2 frozen: its weights must not move, although the restored
  // moments alone would move them.
  TempDir dir;
  const DataSplits data = load_image_folder(stripe_folder(dir.file("d"), {0, 1, 2, 3}, 8, 2, 1), 16);
  Context ctx(Device::cpu());
  FitOptions first = options(1);
  first.save_path = dir.file("run.safetensors");
  Sequential a = tiny_net();
  a.build(ctx, 1);
  (void)fit(ctx, a, data.train, data.test, first);
  const auto saved = values_of(a, "features.2.weight", ctx), head = values_of(a, "classifier.weight", ctx);
  Sequential b = tiny_net();
  b.build(ctx, 1);
  EXPECT_EQ(freeze_layers(b, {"features.2"}), std::vector<std::string>{"features.2"});
  FitOptions second = options(2);
  second.resume_path = first.save_path;
  (void)fit(ctx, b, data.train, data.test, second);
  EXPECT_EQ(values_of(b, "features.2.weight", ctx), saved);  // bit for bit
  EXPECT_NE(values_of(b, "classifier.weight", ctx), head);   // the rest trained on
}

TEST(Finetune, FrozenBatchNormKeepsItsRunningStatisticsAndPassesGradients) {
  const char* net = R"({"name": "bn", "input": [3, 4, 4], "layers": [
    {"type": "conv2d", "name": "features.0", "out_channels": 2, "kernel_size": 3, "padding": 1},
    {"type": "batchnorm2d", "name": "features.1"}, {"type": "flatten"},
    {"type": "linear", "name": "classifier", "out_features": 2}]})";
  Context ctx(Device::cpu());
  Sequential m = parse_model_json(net, "bn.json").model;
  m.build(ctx, 1);
  EXPECT_EQ(freeze_layers(m, {"features.1"}), std::vector<std::string>{"features.1"});
  auto stats = [&] {
    std::vector<float> all;
    for (const auto& b : m.buffers()) {
      const auto v = b.parameter->value.to_vector(ctx);
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  const auto before = stats();
  m.zero_grad(ctx);
  Tensor x = Tensor::from_host(cudl::testing::random_values(4 * 3 * 4 * 4, 3, 0, 1), {4, 3, 4, 4}, ctx);
  Tensor y = m.forward(ctx, x, /*train=*/true);
  // Layer by layer, so that inference runs the same batch norm op (with --fuse, inference folds it
  // into the convolution, which rounds differently: tests/test_network_fusion_bn.cpp).
  ctx.set_fuse_layers(false);
  EXPECT_EQ(y.to_vector(ctx), m.forward(ctx, x, /*train=*/false).to_vector(ctx)) << "runs as in evaluation";
  ctx.set_fuse_layers(true);
  (void)m.forward(ctx, x, true);
  m.backward(ctx, Tensor::full(y.shape(), 1.0f, ctx));
  EXPECT_EQ(stats(), before) << "running statistics untouched";
  for (const auto& p : m.parameters()) {
    const auto g = p.parameter->grad.to_vector(ctx);
    const bool all_zero = std::all_of(g.begin(), g.end(), [](float v) { return v == 0.0f; });
    EXPECT_EQ(all_zero, p.name.starts_with("features.1")) << p.name << ": gradients still reach the conv";
  }
}

TEST(Finetune, FreezePrefixesMatchWholeNameParts) {
  Sequential m = tiny_net();
  EXPECT_EQ(freeze_layers(m, {"features"}), (std::vector<std::string>{"features.0", "features.2"}));
  Sequential m2 = tiny_net();
  expect_error([&] { freeze_layers(m2, {"features.2x"}); },
               {"--freeze", "'features.2x' matches no layer", "features.0"});
  expect_error([&] { freeze_layers(m2, {"feat"}); }, {"'feat' matches no layer"});  // not a whole part
  expect_error([] { split_prefixes("--freeze", "features,,x"); }, {"--freeze", "empty item"});
}

TEST(Finetune, InitFromLoadsMatchingTensorsAndListsTheRest) {
  TempDir dir;
  Context ctx(Device::cpu());
  Sequential source = tiny_net();
  source.build(ctx, 5);
  save_weights(dir.file("w.safetensors"), ctx, source);

  Sequential target = tiny_net();
  EXPECT_EQ(replace_classifier(target, 2), "classifier");
  target.build(ctx, 9);
  const InitFromReport r = init_from(dir.file("w.safetensors"), ctx, target);
  EXPECT_EQ(r.loaded,
            (std::vector<std::string>{"features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"}));
  ASSERT_EQ(r.skipped.size(), 2u);
  EXPECT_TRUE(contains(r.skipped[0], "classifier.weight (file [4,128], model [2,128])")) << r.skipped[0];
  EXPECT_TRUE(contains(r.skipped[1], "classifier.bias (file [4], model [2])")) << r.skipped[1];
  EXPECT_EQ(values_of(target, "features.2.weight", ctx), values_of(source, "features.2.weight", ctx));
  EXPECT_EQ(target.output_shape({1, 3, 16, 16}), (Shape{1, 2}));

  // A file with nothing for this network is an error, not a silent run from scratch.
  Sequential other = make_model("mlp");
  other.build(ctx, 1);
  save_weights(dir.file("mlp.safetensors"), ctx, other);
  Sequential t2 = tiny_net();
  t2.build(ctx, 1);
  expect_error([&] { init_from(dir.file("mlp.safetensors"), ctx, t2); },
               {"--init-from", "mlp.safetensors", "no tensor matches the model"});
  Sequential no_linear = parse_model_json(R"({"input": [1, 4, 4], "layers": [{"type": "relu"}]})", "r.json").model;
  expect_error([&] { replace_classifier(no_linear, 3); }, {"--num-classes", "no linear layer"});
}

TEST(Finetune, FineTuningFromACheckpointBeatsTrainingFromScratchInTheSameSteps) {
  TempDir dir;
  Context ctx(Device::cpu());
  // Pretraining: 4 stripe orientations.
  const DataSplits pre = load_image_folder(stripe_folder(dir.file("pre"), {0, 1, 2, 3}, 48, 8, 11), 16);
  Sequential base = tiny_net();
  base.build(ctx, 1);
  FitOptions po = options(6);
  po.save_path = dir.file("pre.safetensors");
  const TrainResult pr = fit(ctx, base, pre.train, pre.test, po);
  std::printf("pretraining on 4 classes: test accuracy %.3f\n", pr.epochs.back().test_accuracy);
  ASSERT_GT(pr.epochs.back().test_accuracy, 0.6) << "pretraining did not learn";

  // The new task: a 2-class folder (the two diagonals, new images), 4 steps of 16 images.
  const DataSplits two = load_image_folder(stripe_folder(dir.file("two"), {2, 3}, 32, 32, 12), 16);
  auto run = [&](bool finetune) {
    Sequential m = tiny_net();
    replace_classifier(m, 2);
    m.build(ctx, 2);
    if (finetune) {
      const InitFromReport r = init_from(po.save_path, ctx, m);
      EXPECT_EQ(r.loaded.size(), 4u);
      freeze_layers(m, {"features"});
    }
    FitOptions o = options(1);
    o.optimizer.lr = 1e-2f;
    return fit(ctx, m, two.train, two.test, o).epochs.back();
  };
  const EpochMetrics scratch = run(false), tuned = run(true);
  std::printf("2-class folder, 4 steps: from scratch test loss %.4f acc %.3f; fine-tuned test loss %.4f acc %.3f\n",
              scratch.test_loss, scratch.test_accuracy, tuned.test_loss, tuned.test_accuracy);
  // Both may classify every test image; the fine-tuned one does so with far more confidence.
  EXPECT_LT(tuned.test_loss, 0.5 * scratch.test_loss);
  EXPECT_GE(tuned.test_accuracy, scratch.test_accuracy);
}

namespace {}  // namespace

TEST(FinetuneCli, InitFromNumClassesAndFreezeFromTheCommandLine) {
  TempDir dir;
  cudl::testing::write_string(dir.file("tiny.json"), kNet);
  {
    Context ctx(Device::cpu());
    Sequential m = tiny_net();
    m.build(ctx, 4);
    save_weights(dir.file("w.safetensors"), ctx, m);
  }
  const std::string data = stripe_folder(dir.file("two"), {0, 1}, 8, 4, 3);
  auto cli = [&](const std::string& args) {
    const std::string cmd =
        fmt::format("'{}' {} > '{}' 2> '{}'", cudl::testing::cli_path(), args, dir.file("out"), dir.file("err"));
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  const std::string base =
      fmt::format("train --model '{}' --data '{}' --dataset folder --epochs 1 --batch-size 8 --device cpu",
                  dir.file("tiny.json"), data);
  ASSERT_EQ(cli(base + fmt::format(" --init-from '{}' --num-classes 2 --freeze features --save '{}'",
                                   dir.file("w.safetensors"), dir.file("ft.safetensors"))),
            0)
      << slurp(dir.file("err"));
  const std::string out = slurp(dir.file("out"));
  EXPECT_TRUE(contains(out, "new head: classifier with 2 outputs")) << out;
  EXPECT_TRUE(contains(out, "--init-from: loaded 4 tensors")) << out;
  EXPECT_TRUE(contains(out, "skipped 2")) << out;
  EXPECT_TRUE(contains(out, "classifier.weight (new head)")) << out;  // never loaded, whatever its shape
  EXPECT_TRUE(contains(out, "frozen: features.0, features.2")) << out;
  // predict rebuilds the 2-class head from the checkpoint's metadata and names the classes.
  ASSERT_EQ(cli(fmt::format("predict --model '{}' --weights '{}' --image '{}/test/class0/000.png' --top 2",
                            dir.file("tiny.json"), dir.file("ft.safetensors"), data)),
            0)
      << slurp(dir.file("err"));
  EXPECT_TRUE(contains(slurp(dir.file("out")), "class0")) << slurp(dir.file("out"));
  EXPECT_TRUE(contains(slurp(dir.file("out")), "class1")) << slurp(dir.file("out"));

  // Refused before any work: a prefix that matches nothing, freezing with weight decay, a pixel
  // loss for labels.
  EXPECT_EQ(cli(base + " --freeze nothing"), 1);
  EXPECT_TRUE(contains(slurp(dir.file("err")), "--freeze: 'nothing' matches no layer")) << slurp(dir.file("err"));
  EXPECT_EQ(cli(base + " --freeze features --weight-decay 0.01"), 1);
  EXPECT_TRUE(contains(slurp(dir.file("err")), "--weight-decay 0")) << slurp(dir.file("err"));
  EXPECT_TRUE(slurp(dir.file("out")).empty());
  EXPECT_EQ(cli(base + " --loss mse"), 1);
  EXPECT_TRUE(contains(slurp(dir.file("err")), "add --target input")) << slurp(dir.file("err"));
}
