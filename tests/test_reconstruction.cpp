// Reconstruction training (models/reconstruction, `cudl train --target input`): the loop learns
// to beat the mean image, both pixel losses work, the sample grid and the checkpoint are written,
// and a model whose output is not its input's shape is refused. The autoencoder on real MNIST is
// an EndToEnd test (skipped without data/mnist).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/train/classification.hpp"
#include "cudl/models/train/curves.hpp"
#include "cudl/models/train/reconstruction.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::expect_error;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

const char* kAutoencoder = R"({"name": "ae", "input": [1, 12, 12], "layers": [
  {"type": "conv2d", "name": "conv1", "out_channels": 8, "kernel_size": 3, "padding": 1},
  {"type": "relu"},
  {"type": "conv2d", "name": "conv2", "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1},
  {"type": "relu"},
  {"type": "conv_transpose2d", "name": "deconv1", "out_channels": 1, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
  {"type": "sigmoid"}]})";

// n 12x12 grey images, each a bright 4x4 square at a random place on a dark background: the mean
// image is a blur, so only a model that looks at its input can reconstruct them.
Dataset squares(std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pos(0, 8);
  std::vector<float> pixels(static_cast<std::size_t>(n * 144), 0.1f);
  for (std::int64_t i = 0; i < n; ++i) {
    const int x0 = pos(rng), y0 = pos(rng);
    for (int y = y0; y < y0 + 4; ++y)
      for (int x = x0; x < x0 + 4; ++x) pixels[static_cast<std::size_t>(i * 144 + y * 12 + x)] = 0.9f;
  }
  Context host{Device::cpu()};  // the tensors outlive it: CPU memory is not the context's
  Dataset d;
  d.images = Tensor::from_host(pixels, {n, 1, 12, 12}, host);
  d.labels = Tensor::from_host(std::vector<std::int32_t>(static_cast<std::size_t>(n), 0), {n}, host);
  d.num_classes = 1;
  return d;
}

TrainConfig options(std::int64_t epochs) {
  TrainConfig o;
  o.model_name = "ae.json";
  o.epochs = epochs;
  o.batch_size = 16;
  o.optimizer.lr = 1e-2f;
  o.schedule = Schedule::none;
  o.seed = 1;
  return o;
}

// The one training loop with the reconstruction task.
std::vector<EpochMetrics> reconstruct(Context& ctx, Sequential& m, const Dataset& train, const Dataset& validation,
                                      const Dataset& test, LossKind loss, const TrainConfig& o) {
  ReconstructionTask task(loss);
  return cudl::train(ctx, m, task, TrainData{train, validation, test}, o).epochs;
}

double metric(const EpochMetrics& m, const std::string& key) {
  EXPECT_TRUE(m.extra.count(key)) << key;
  return m.extra.count(key) ? m.extra.at(key) : std::nan("");
}

}  // namespace

TEST(Reconstruction, AnAutoencoderLearnsToBeatTheMeanImageWithEitherPixelLoss) {
  const Dataset train = squares(256, 1), test = squares(64, 2);
  for (LossKind loss : {LossKind::mse, LossKind::l1}) {
    SCOPED_TRACE(loss_name(loss));
    Context ctx(Device::cpu());
    Sequential m = parse_model_json(kAutoencoder, "ae.json").model;
    m.build(ctx, 1);
    const auto history = reconstruct(ctx, m, train, Dataset{}, test, loss, options(6));
    ASSERT_EQ(history.size(), 6u);
    const auto& last = history.back();
    const double test_mse = metric(last, "test_mse"), mean_mse = metric(last, "mean_image_mse");
    const double test_psnr = metric(last, "test_psnr"), mean_psnr = metric(last, "mean_image_psnr");
    std::printf("%s: test mse %.5f (mean image %.5f), psnr %.2f dB (mean image %.2f dB)\n", loss_name(loss).c_str(),
                test_mse, mean_mse, test_psnr, mean_psnr);
    EXPECT_LT(test_mse, 0.3 * mean_mse);
    EXPECT_GT(test_psnr, mean_psnr + 5.0);
    EXPECT_LT(last.train_loss, history.front().train_loss);
    EXPECT_DOUBLE_EQ(last.test_loss, loss == LossKind::l1 ? metric(last, "test_l1") : test_mse);
    EXPECT_FALSE(last.has_accuracy) << "reconstruction has no accuracy";
  }
}

TEST(Reconstruction, AValidationSplitIsEvaluatedAfterEveryEpoch) {
  const Dataset train = squares(32, 1), validation = squares(16, 4), test = squares(16, 2);
  Context ctx(Device::cpu());
  Sequential m = parse_model_json(kAutoencoder, "ae.json").model;
  m.build(ctx, 1);
  const auto history = reconstruct(ctx, m, train, validation, test, LossKind::l1, options(2));
  ASSERT_EQ(history.size(), 2u);
  for (const auto& e : history) {
    EXPECT_TRUE(e.has_val);
    EXPECT_TRUE(std::isfinite(e.val_loss) && e.val_loss > 0) << e.val_loss;
    EXPECT_DOUBLE_EQ(e.val_loss, metric(e, "val_l1"));
    EXPECT_GT(metric(e, "val_psnr"), 0);
  }
  // With a validation split the test split is scored once, at the end (Keras' evaluate after fit).
  EXPECT_FALSE(history[0].has_test);
  ASSERT_TRUE(history[1].has_test);
  EXPECT_NE(history[1].val_loss, history[1].test_loss) << "the validation images, not the test images";
  EXPECT_FALSE(reconstruct(ctx, m, train, Dataset{}, test, LossKind::l1, options(1)).front().has_val);
}

// Reconstruction runs in the one training loop, so every option of the loop works for it: the
// best keeper and early stopping by the validation loss, clipping, max steps, the metrics file
// (target input, PSNR per split, the mean image's) that `cudl plot` draws, checkpoints and resume.
TEST(Reconstruction, EveryOptionOfTheLoopWorksForIt) {
  TempDir dir;
  const Dataset train = squares(64, 1), validation = squares(16, 4), test = squares(16, 2);
  Context ctx(Device::cpu());
  Sequential m = parse_model_json(kAutoencoder, "ae.json").model;
  m.build(ctx, 1);
  TrainConfig o = options(4);
  o.save_path = dir.file("run.st");
  o.save_best_path = dir.file("best.st");
  o.metrics_path = dir.file("m.json");
  o.early_stopping_patience = 3;
  o.plateau_patience = 1;
  o.clip_grad_norm = 0.5;
  o.max_steps = 14;  // 4 steps an epoch: the run stops inside epoch 4
  ReconstructionTask task(LossKind::mse, dir.file("grid.png"), 4);
  const TrainResult r = cudl::train(ctx, m, task, TrainData{train, validation, test}, o);
  EXPECT_EQ(r.monitor, "val_loss");
  EXPECT_EQ(r.target, "input");
  ASSERT_EQ(r.epochs.size(), 4u);
  EXPECT_EQ(r.epochs.back().steps, 14);
  EXPECT_EQ(r.stopped, "max_steps");
  std::int64_t lowest = 0;
  for (const auto& e : r.epochs)
    if (lowest == 0 || e.val_loss < r.epochs[static_cast<std::size_t>(lowest - 1)].val_loss) lowest = e.epoch;
  EXPECT_EQ(r.best_epoch, lowest);
  EXPECT_EQ(read_checkpoint_info(dir.file("best.st")).epoch, lowest);
  const CheckpointInfo info = read_checkpoint_info(dir.file("run.st"));
  EXPECT_EQ(info.extra.at("target"), "input");
  EXPECT_EQ(info.extra.at("loss"), "mse");
  EXPECT_EQ(read_image(dir.file("grid.png")).channels, 1);
  const nlohmann::json doc = nlohmann::json::parse(slurp(dir.file("m.json")));
  EXPECT_EQ(doc["target"], "input");
  EXPECT_EQ(doc["monitor"], "val_loss");
  for (const auto& e : doc["epochs"]) {
    EXPECT_FALSE(e.contains("train_accuracy"));
    EXPECT_TRUE(e.contains("val_psnr") && e.contains("mean_image_psnr"));
  }
  EXPECT_TRUE(doc["epochs"].back().contains("test_psnr"));
  EXPECT_EQ(draw_training_curves(doc, "m.json").width, 1400);
  // A resumed run continues the metrics history, and refuses a classification checkpoint's target.
  TrainConfig more = options(6);
  more.resume_path = more.save_path = dir.file("run.st");
  ReconstructionTask again(LossKind::mse);
  const TrainResult resumed = cudl::train(ctx, m, again, TrainData{train, validation, test}, more);
  ASSERT_EQ(resumed.epochs.size(), 6u);
  EXPECT_EQ(resumed.epochs[3].val_loss, r.epochs[3].val_loss);
  ClassificationTask classify;
  expect_error(
      [&] {
        cudl::train(ctx, m, classify, TrainData{train, validation, test}, more);
      },
      {"trained with target input", "target is labels"});
}

TEST(Reconstruction, TheMeanImageBaselineAndPsnrAreWhatTheyClaim) {
  const Dataset d = squares(10, 3);
  const std::vector<float> mean = mean_image(d);
  ASSERT_EQ(mean.size(), 144u);
  double direct = 0;
  for (int i = 0; i < 10; ++i) direct += d.images.data<float>()[i * 144 + 5];
  EXPECT_NEAR(mean[5], direct / 10, 1e-6);
  EXPECT_NEAR(psnr(0.01), 20.0, 1e-9);
  EXPECT_NEAR(psnr(1.0), 0.0, 1e-9);
}

TEST(Reconstruction, AModelThatDoesNotOutputItsInputShapeIsRefused) {
  Context ctx(Device::cpu());
  Sequential m =
      parse_model_json(
          R"({"input": [1, 12, 12], "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 3}]})", "c.json")
          .model;
  m.build(ctx, 1);
  const Dataset d = squares(8, 1);
  // The library's messages say what is wrong without naming CLI flags (the CLI names them).
  expect_error([&] { reconstruct(ctx, m, d, Dataset{}, d, LossKind::mse, options(1)); },
               {"reconstruction", "must output its input's shape", "[N,1,12,12]", "[1,3]"});
  expect_error([&] { reconstruct(ctx, m, d, Dataset{}, d, LossKind::cross_entropy, options(1)); },
               {"reconstruction needs a pixel loss", "mse or l1"});
}

namespace {

// Four IDX files of n 28x28 images (n / 2 for the test split): a bright bar at a varying place.
std::string tiny_idx(const std::string& dir, int n) {
  cudl::testing::write_mnist_bytes_dir(
      dir, n, [](int i, int p) -> std::uint8_t { return (p / 28 - i % 20) / 4 == 0 ? 230 : 10; });
  return dir;
}

}  // namespace

TEST(ReconstructionCli, TheLectureAutoencoderTrainsFromTheCommandLineWithSamplesAndCheckpoint) {
  TempDir dir;
  const std::string data = tiny_idx(dir.file("mnist"), 64);
  const std::string model = cudl::testing::source_dir() + "/examples/conv_autoencoder.json";
  ASSERT_EQ(cudl::testing::run_cli(
                dir, fmt::format("train --model '{}' --data '{}' --dataset mnist --target input --loss l1 "
                                 "--epochs 1 --batch-size 16 --device cpu --samples '{}' --save '{}' "
                                 "--metrics-json '{}' --val-split 0.25",
                                 model, data, dir.file("samples.png"), dir.file("ae.safetensors"), dir.file("m.json")))
                .status,
            0)
      << slurp(dir.file("stderr.txt"));
  const std::string out = slurp(dir.file("stdout.txt"));
  EXPECT_TRUE(contains(out, "epoch   1: train l1 ")) << out;
  EXPECT_TRUE(contains(out, "| val l1 ")) << out;  // --val-split holds images out for validation
  EXPECT_TRUE(contains(out, "(the mean image: ")) << out;
  // 8 test images of 28 px, each enlarged 2x, 2 px apart; inputs above reconstructions.
  const Image grid = read_image(dir.file("samples.png"));
  EXPECT_EQ(grid.width, 8 * 58 - 2);
  EXPECT_EQ(grid.height, 2 * 56 + 2);
  const auto meta = read_safetensors_metadata(dir.file("ae.safetensors"));
  EXPECT_EQ(meta.at("extra.target"), "input");
  EXPECT_EQ(meta.at("extra.loss"), "l1");
  const auto j = nlohmann::json::parse(slurp(dir.file("m.json")));
  EXPECT_EQ(j["epochs"].size(), 1u);
  EXPECT_GT(j["epochs"][0]["mean_image_mse"].get<double>(), 0.0);
  EXPECT_GT(j["epochs"][0]["val_loss"].get<double>(), 0.0);

  // Refused before any work: cross-entropy for a reconstruction, --samples without one.
  EXPECT_EQ(
      cudl::testing::run_cli(dir, fmt::format("train --model '{}' --data '{}' --target input", model, data)).status, 1);
  EXPECT_TRUE(contains(slurp(dir.file("stderr.txt")), "--loss mse or --loss l1")) << slurp(dir.file("stderr.txt"));
  EXPECT_TRUE(slurp(dir.file("stdout.txt")).empty());
  EXPECT_EQ(cudl::testing::run_cli(
                dir, fmt::format("train --model '{}' --data '{}' --samples '{}'", model, data, dir.file("s.png")))
                .status,
            1);
  EXPECT_TRUE(contains(slurp(dir.file("stderr.txt")), "--samples: only with --target input"))
      << slurp(dir.file("stderr.txt"));
}

// The issue's acceptance run, shortened to fit ctest's 10-minute limit on a busy 2-core machine:
// the lecture autoencoder, one CPU epoch on real MNIST, its test reconstruction error well below
// that of predicting the mean training image (the README states the 2-epoch numbers).
TEST(EndToEnd, ConvAutoencoderOneCpuEpochOnMnistBeatsTheMeanImage) {
  const std::string data = cudl::testing::source_dir() + "/data/mnist";
  if (!std::filesystem::exists(data + "/t10k-labels-idx1-ubyte"))
    GTEST_SKIP() << "real MNIST not found at data/mnist (run tools/fetch-mnist.sh)";
  TempDir dir;
  ASSERT_EQ(cudl::testing::run_cli(
                dir, fmt::format("train --model '{}/examples/conv_autoencoder.json' --data '{}' --target input "
                                 "--loss mse --epochs 1 --device cpu --metrics-json '{}'",
                                 cudl::testing::source_dir(), data, dir.file("m.json")))
                .status,
            0)
      << slurp(dir.file("stderr.txt"));
  const auto j = nlohmann::json::parse(slurp(dir.file("m.json")));
  const auto& last = j["epochs"][0];
  const double mse = last["test_mse"], mean = last["mean_image_mse"];
  std::printf("conv_autoencoder, 1 CPU epoch on MNIST: test mse %.5f (psnr %.2f dB); mean image mse %.5f (%.2f dB)\n",
              mse, last["test_psnr"].get<double>(), mean, last["mean_image_psnr"].get<double>());
  EXPECT_LT(mse, 0.2 * mean);
}
