// The device-resident data path (engine/io/resident.hpp): on a CPU context the same path runs with
// host memory as the "device", so these tests prove its batches are the host loader's bit for bit
// (with and without shuffling, across epoch boundaries, with a last partial batch, resumed
// mid-epoch and sharded), that a run trained through it is the same run, and that the choice
// between the paths follows its stated rule. The CUDA check skips visibly without a GPU.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/engine/philox.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/train/trainer.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

// n samples of [c,h,w] of seeded random floats (every value distinct in practice), labels from the
// same stream in [0, 10).
Dataset random_dataset(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  Context cpu{Device::cpu()};
  const std::int64_t values = n * c * h * w;
  std::vector<float> pixels(static_cast<std::size_t>(values));
  for (std::int64_t i = 0; i < values; ++i)
    pixels[static_cast<std::size_t>(i)] = philox::uniform(static_cast<std::uint64_t>(i), 77);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    labels[static_cast<std::size_t>(i)] =
        static_cast<std::int32_t>(philox::uniform(static_cast<std::uint64_t>(i), 78) * 10.0f) % 10;
  Dataset d;
  d.images = Tensor::from_host(pixels, {n, c, h, w}, cpu);
  d.labels = Tensor::from_host(std::span<const std::int32_t>(labels), {n}, cpu);
  d.num_classes = 10;
  d.name = "random";
  return d;
}

struct BatchBits {
  std::vector<unsigned char> images;
  std::vector<std::int32_t> labels;
  std::int64_t index = 0, global_rows = 0, row_offset = 0;
  Shape shape;
  bool operator==(const BatchBits&) const = default;
};

// Every batch of one epoch (from `first_batch`), as bytes read back to the host.
std::vector<BatchBits> epoch_bits(DataLoader& loader, Context& ctx, std::int64_t epoch, std::int64_t first_batch = 0) {
  Context cpu{Device::cpu()};
  std::vector<BatchBits> out;
  loader.start_epoch(epoch, first_batch);
  Batch batch;
  while (loader.next(batch)) {
    EXPECT_EQ(batch.images.device(), ctx.device());
    BatchBits b;
    const Tensor images = batch.images.to(cpu);
    const auto* p = static_cast<const unsigned char*>(images.raw());
    b.images.assign(p, p + images.nbytes());
    b.labels = batch.labels.to_int_vector(ctx);
    b.index = batch.index;
    b.global_rows = batch.global_rows;
    b.row_offset = batch.row_offset;
    b.shape = batch.images.shape();
    out.push_back(std::move(b));
  }
  return out;
}

LoaderOptions options(std::int64_t batch, bool shuffle, ResidentData resident) {
  LoaderOptions o;
  o.batch_size = batch;
  o.shuffle = shuffle;
  o.seed = 11;
  o.resident = resident;
  return o;
}

TEST(ResidentLoader, BatchesAreTheHostLoadersBitForBit) {
  Context ctx{Device::cpu()};
  // 203 MNIST-sized samples in batches of 64: three full batches and a last one of 11; a batch of
  // 64 rows of 3 KiB also takes the gather's OpenMP path.
  const Dataset d = random_dataset(203, 1, 28, 28);
  for (bool shuffle : {false, true}) {
    SCOPED_TRACE(shuffle ? "shuffled" : "in order");
    DataLoader host(d, ctx, options(64, shuffle, ResidentData::off));
    DataLoader resident(d, ctx, options(64, shuffle, ResidentData::on));
    EXPECT_FALSE(host.resident());
    EXPECT_TRUE(resident.resident());
    EXPECT_FALSE(resident.stages_per_batch());
    for (std::int64_t epoch = 0; epoch < 3; ++epoch) {
      const std::vector<BatchBits> a = epoch_bits(host, ctx, epoch), b = epoch_bits(resident, ctx, epoch);
      ASSERT_EQ(b.size(), 4u);
      EXPECT_EQ(b.back().shape, (Shape{11, 1, 28, 28})) << "the last, partial batch";
      EXPECT_TRUE(a == b) << "epoch " << epoch;
      EXPECT_EQ(host.order(), resident.order());
    }
    // Resumed at batch 2 of epoch 1: the tail of that epoch.
    const std::vector<BatchBits> a = epoch_bits(host, ctx, 1, 2), b = epoch_bits(resident, ctx, 1, 2);
    ASSERT_EQ(b.size(), 2u);
    EXPECT_EQ(b.front().index, 2);
    EXPECT_TRUE(a == b);
  }
}

TEST(ResidentLoader, ShardsAreTheHostLoadersShards) {
  Context ctx{Device::cpu()};
  const Dataset d = random_dataset(29, 3, 4, 5);
  for (int rank = 0; rank < 3; ++rank) {
    LoaderOptions off = options(8, true, ResidentData::off), on = options(8, true, ResidentData::on);
    off.shard_index = on.shard_index = rank;
    off.shard_count = on.shard_count = 3;
    DataLoader host(d, ctx, off), resident(d, ctx, on);
    for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
      const std::vector<BatchBits> a = epoch_bits(host, ctx, epoch), b = epoch_bits(resident, ctx, epoch);
      ASSERT_EQ(b.size(), 4u);
      EXPECT_TRUE(a == b) << "rank " << rank << " epoch " << epoch;
    }
  }
}

TEST(ResidentLoader, ATrainingRunIsTheSameRun) {
  // Two epochs of a small classifier, fed by each path: the same batches give the same losses,
  // accuracies and weights, bit for bit.
  const Dataset train = random_dataset(45, 1, 3, 3), test = random_dataset(10, 1, 3, 3);
  std::vector<TrainResult> results;
  std::vector<std::vector<float>> weights;
  for (ResidentData r : {ResidentData::off, ResidentData::on}) {
    Context ctx{Device::cpu()};
    Sequential net;
    net.add("flatten", std::make_unique<Flatten>()).add("fc", std::make_unique<Linear>(9, 10));
    net.build(ctx, 3);
    FitOptions o;
    o.model_name = "resident";
    o.epochs = 2;
    o.batch_size = 8;  // 5 full batches and one of 5 per epoch
    o.resident_data = r;
    results.push_back(fit(ctx, net, train, test, o));
    weights.push_back(net.parameter_block().to_vector(ctx));
  }
  ASSERT_EQ(results[0].epochs.size(), 2u);
  ASSERT_EQ(results[1].epochs.size(), 2u);
  for (std::size_t e = 0; e < 2; ++e) {
    EXPECT_EQ(results[0].epochs[e].train_loss, results[1].epochs[e].train_loss);
    EXPECT_EQ(results[0].epochs[e].train_accuracy, results[1].epochs[e].train_accuracy);
    EXPECT_EQ(results[0].epochs[e].test_loss, results[1].epochs[e].test_loss);
  }
  EXPECT_EQ(weights[0], weights[1]);
}

TEST(ResidentLoader, TheChoiceFollowsItsRule) {
  const Dataset d = random_dataset(10, 1, 2, 2);  // 10 * (16 + 4) = 200 bytes
  const Augment none;
  const std::size_t limit = kWholeEpochStagingLimit;
  EXPECT_TRUE(resident_fits(200, 800));
  EXPECT_FALSE(resident_fits(201, 800));
  EXPECT_FALSE(resident_fits(1, 0));
  // A CPU run stays on the host path unless asked.
  ResidentChoice c = choose_resident(d, Device::cpu(), none, ResidentData::automatic, limit);
  EXPECT_FALSE(c.resident);
  EXPECT_TRUE(contains(c.reason, "a CPU run")) << c.reason;
  c = choose_resident(d, Device::cpu(), none, ResidentData::on, limit);
  EXPECT_TRUE(c.resident);
  EXPECT_TRUE(contains(c.reason, "device-resident: 200 B")) << c.reason;
  c = choose_resident(d, Device::cuda(0), none, ResidentData::off, limit);
  EXPECT_FALSE(c.resident);
  EXPECT_TRUE(contains(c.reason, "resident-data false")) << c.reason;
  // On a GPU: over the whole-copy limit never; otherwise when it fits the free memory (none here
  // without a GPU, so the rule says no).
  c = choose_resident(d, Device::cuda(0), none, ResidentData::automatic, 199);
  EXPECT_FALSE(c.resident);
  EXPECT_TRUE(contains(c.reason, "whole-copy limit")) << c.reason;
  c = choose_resident(d, Device::cuda(0), none, ResidentData::automatic, limit);
  const bool gpu = cuda_compiled() && cuda_device_count() > 0;
  EXPECT_EQ(c.resident, gpu) << c.reason;
  if (!gpu) {
    EXPECT_TRUE(contains(c.reason, "over a quarter of cuda:0's 0 B free")) << c.reason;
  }
  // What cannot be resident: forced, it is an error naming the dataset and why.
  Augment flip;
  flip.hflip = true;
  c = choose_resident(d, Device::cuda(0), flip, ResidentData::automatic, limit);
  EXPECT_FALSE(c.resident);
  EXPECT_TRUE(contains(c.reason, "augmentation")) << c.reason;
  expect_error([&] { (void)choose_resident(d, Device::cpu(), flip, ResidentData::on, limit); },
               {"dataset 'random' cannot be device-resident", "augmentation"});
  Context cpu{Device::cpu()};
  expect_error(
      [&] {
        DataLoader loader(d, cpu, [&] {
          LoaderOptions o = options(4, true, ResidentData::on);
          o.augment = flip;
          return o;
        }());
      },
      {"cannot be device-resident"});
  Dataset listed = d;
  listed.images = Tensor();
  listed.files = std::make_shared<ImageFiles>(ImageFiles{std::vector<std::string>(10, "x.png"), 2});
  expect_error([&] { (void)choose_resident(listed, Device::cpu(), none, ResidentData::on, limit); },
               {"listed image folder"});
  EXPECT_EQ(parse_resident_data("auto"), ResidentData::automatic);
  EXPECT_EQ(parse_resident_data("true"), ResidentData::on);
  EXPECT_EQ(resident_data_name(parse_resident_data("false")), "false");
  expect_error([] { (void)parse_resident_data("yes"); }, {"'yes'", "auto, true or false"});
}

TEST(ResidentLoader, CudaResidentBatchesMatchTheCpuHostPath) {
  if (!cuda_compiled() || cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Context cpu{Device::cpu()}, gpu{Device::cuda(0)};
  const Dataset d = random_dataset(203, 1, 28, 28);
  for (bool shuffle : {false, true}) {
    DataLoader host(d, cpu, options(64, shuffle, ResidentData::off));
    DataLoader resident(d, gpu, options(64, shuffle, ResidentData::automatic));
    EXPECT_TRUE(resident.resident()) << "MNIST-sized data is resident on a GPU by default";
    for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
      const std::vector<BatchBits> a = epoch_bits(host, cpu, epoch), b = epoch_bits(resident, gpu, epoch);
      EXPECT_TRUE(a == b) << "epoch " << epoch;
    }
  }
}

TEST(ResidentLoader, TheCliSaysWhichPathFeedsTheRunAndBothTrainAlike) {
  TempDir dir;
  const std::string data = dir.file("data");
  std::filesystem::create_directories(data);
  Context cpu{Device::cpu()};
  write_synthetic_mnist_dir(data, cpu, 100, 40);
  const auto train = [&](const std::string& extra) {
    return run_cli(
        dir, fmt::format("train --model mlp --data '{}' --device cpu --batch-size 32 --epochs 2 {}", data, extra));
  };
  std::vector<nlohmann::json> metrics;
  for (const char* choice : {"true", "false"}) {
    const std::string json = dir.file(fmt::format("m_{}.json", choice));
    const CliRun r = train(fmt::format("--resident-data {} --metrics-json '{}'", choice, json));
    ASSERT_EQ(r.status, 0) << r.err;
    const bool on = std::string(choice) == "true";
    const std::string line = on ? "training data: device-resident: "
                                : "training data: batches staged on the host per epoch (resident-data false)";
    EXPECT_TRUE(contains(r.out, line)) << r.out;
    const auto bytes = read_bytes(json);
    metrics.push_back(nlohmann::json::parse(bytes.begin(), bytes.end()));
  }
  // The same batches make the same run: every epoch's losses and accuracies equal (times differ).
  ASSERT_EQ(metrics[0]["epochs"].size(), 2u);
  for (std::size_t e = 0; e < 2; ++e)
    for (const char* key : {"train_loss", "train_accuracy", "test_loss", "test_accuracy"})
      EXPECT_EQ(metrics[0]["epochs"][e][key], metrics[1]["epochs"][e][key]) << key << " epoch " << e;
  const CliRun auto_run = train("--max-steps 1");
  EXPECT_EQ(auto_run.status, 0) << auto_run.err;
  EXPECT_TRUE(contains(auto_run.out, "training data: batches staged on the host per epoch (a CPU run)"))
      << auto_run.out;
  const CliRun refused = train("--augment flip --resident-data true");
  EXPECT_EQ(refused.status, 1);
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;
  EXPECT_TRUE(contains(refused.err, "cannot be device-resident (resident-data true): augmentation")) << refused.err;
  const CliRun bad = train("--resident-data maybe");
  EXPECT_EQ(bad.status, 1);
  EXPECT_TRUE(contains(bad.err, "--resident-data")) << bad.err;
}

}  // namespace
