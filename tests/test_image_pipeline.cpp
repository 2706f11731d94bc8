// The streaming image pipeline (engine/io/datasets.hpp list_image_folder, engine/io/loader.hpp,
// engine/io/augment.hpp): listed folders decode nothing up front, the loader's memory is its
// prefetch ring whatever the dataset's size, batches do not depend on the worker count or on
// resuming, a corrupt image is one error naming it, and the augmentations are seeded and in range.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/distributed.hpp"
#include "cudl/engine/io/augment.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/models/train/trainer.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;
namespace fs = std::filesystem;

namespace {

// A smooth random-colour image of w x h whose red level says its class (0: dark, 1: bright).
Image class_image(int cls, int w, int h, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0, 1);
  const float gx = u(rng), gy = u(rng), base = cls == 0 ? 0.15f : 0.85f;
  Image img(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img.at(y, x, 0) = std::clamp(base + 0.1f * u(rng), 0.0f, 1.0f);
      img.at(y, x, 1) = gx * static_cast<float>(x) / static_cast<float>(w);
      img.at(y, x, 2) = gy * static_cast<float>(y) / static_cast<float>(h);
    }
  return img;
}

// dir/{train,test}/{c0,c1}/NNN.png, images of varying sizes around `side` (so decoding resizes).
std::string make_folder(const std::string& dir, int train_per_class, int test_per_class, int side = 24) {
  std::mt19937 rng(7);
  for (const std::string split : {"train", "test"}) {
    const int n = split == "train" ? train_per_class : test_per_class;
    for (int c = 0; c < 2; ++c) {
      const std::string folder = fmt::format("{}/{}/c{}", dir, split, c);
      fs::create_directories(folder);
      for (int i = 0; i < n; ++i)
        write_image(fmt::format("{}/{:04}.png", folder, i), class_image(c, side + i % 7, side + (i * 3) % 5, rng));
    }
  }
  return dir;
}

Augment full_augment() {
  Augment a;
  a.random_resized_crop = true;
  a.hflip = true;
  a.brightness = a.contrast = a.saturation = 0.4f;
  return a;
}

struct Epoch {
  std::vector<std::vector<float>> images;
  std::vector<std::vector<std::int32_t>> labels;
};

Epoch run_epoch(DataLoader& loader, Context& ctx, std::int64_t epoch, std::int64_t first_batch = 0) {
  Epoch e;
  loader.start_epoch(epoch, first_batch);
  Batch b;
  while (loader.next(b)) {
    e.images.push_back(b.images.to_vector(ctx));
    e.labels.push_back(b.labels.to_int_vector(ctx));
  }
  return e;
}

LoaderOptions options(int workers, int prefetch, const Augment& augment = {}) {
  LoaderOptions o;
  o.batch_size = 8;
  o.shuffle = true;
  o.seed = 11;
  o.augment = augment;
  o.workers = workers;
  o.prefetch = prefetch;
  return o;
}

}  // namespace

TEST(ImagePipeline, ListedFolderDecodesNothingAndKeepsLabelsThroughSplits) {
  TempDir dir;
  const DataSplits s = list_image_folder(make_folder(dir.file("d"), 10, 3), 16);
  ASSERT_TRUE(s.train.listed());
  EXPECT_FALSE(s.train.images.defined()) << "a listed folder holds no pixels";
  EXPECT_EQ(s.train.image_shape(), (Shape{20, 3, 16, 16}));
  EXPECT_EQ(s.train.class_names, (std::vector<std::string>{"c0", "c1"}));
  auto [train, val] = split_validation(s.train, 0.2, 3);
  EXPECT_TRUE(train.listed() && val.listed());
  EXPECT_EQ(train.size(), 16);
  EXPECT_EQ(val.size(), 4);
  for (std::int64_t i = 0; i < val.size(); ++i) {  // each file keeps its label
    const std::string& path = val.files->paths[static_cast<std::size_t>(i)];
    EXPECT_EQ(val.labels.data<std::int32_t>()[i], contains(path, "/c1/") ? 1 : 0) << path;
  }
  const Dataset sub = stratified_subset(s.train, 6, 3);
  EXPECT_TRUE(sub.listed());
  EXPECT_EQ(sub.size(), 6);
  EXPECT_EQ(sub.class_names, s.train.class_names);
}

TEST(ImagePipeline, EvaluationBatchesEqualTheDecodedFolder) {
  TempDir dir;
  const std::string folder = make_folder(dir.file("d"), 6, 2);
  const DataSplits listed = list_image_folder(folder, 16), decoded = load_image_folder(folder, 16);
  Context ctx(Device::cpu());
  DataLoader loader(listed.train, ctx, LoaderOptions{5, false, 0, {}, 3, 2});
  const Epoch e = run_epoch(loader, ctx, 0);
  std::vector<float> all;
  for (const auto& b : e.images) all.insert(all.end(), b.begin(), b.end());
  EXPECT_EQ(all, decoded.train.images.to_vector(ctx)) << "resize-shorter-side + centre crop, streamed";
}

TEST(ImagePipeline, MemoryIsBoundedByThePrefetchRingNotTheDataset) {
  TempDir dir;
  const DataSplits s = list_image_folder(make_folder(dir.file("d"), 150, 1, 40), 32);
  Context ctx(Device::cpu());
  DataLoader loader(s.train, ctx, options(2, 3, full_augment()));
  ASSERT_TRUE(loader.stages_per_batch());
  const Epoch e = run_epoch(loader, ctx, 0);
  EXPECT_EQ(e.images.size(), 38u);  // 300 images in batches of 8
  const LoaderStats st = loader.stats();
  EXPECT_EQ(st.workers, 2);
  EXPECT_EQ(st.slots, 3);
  const std::size_t batch_bytes = 8 * (3 * 32 * 32 + 1) * sizeof(float);
  EXPECT_EQ(st.staging_bytes, 3 * batch_bytes) << "the ring is all the loader stages";
  EXPECT_LE(st.peak_staged, 3) << "never more batches staged than the ring holds";
  EXPECT_GE(st.peak_staged, 1);
  EXPECT_EQ(st.samples_decoded, 300);
  EXPECT_LT(st.staging_bytes * 10, s.train.image_bytes()) << "far below the decoded dataset";
}

TEST(ImagePipeline, SameBatchesForOneAndFourWorkersAndWhenResumed) {
  TempDir dir;
  const DataSplits s = list_image_folder(make_folder(dir.file("d"), 20, 1), 16);
  Context ctx(Device::cpu());
  DataLoader one(s.train, ctx, options(1, 1, full_augment())), four(s.train, ctx, options(4, 8, full_augment()));
  const Epoch a = run_epoch(one, ctx, 2), b = run_epoch(four, ctx, 2);
  ASSERT_EQ(a.images.size(), 5u);
  EXPECT_EQ(a.images, b.images) << "pixels are a function of (seed, epoch, sample), not of the worker";
  EXPECT_EQ(a.labels, b.labels);
  const Epoch tail = run_epoch(four, ctx, 2, 3);
  ASSERT_EQ(tail.images.size(), 2u);
  EXPECT_EQ(tail.images[0], a.images[3]) << "resuming at batch 3 gives the uninterrupted run's batches";
  EXPECT_EQ(tail.images[1], a.images[4]);
  EXPECT_NE(run_epoch(four, ctx, 3).images, a.images) << "another epoch, other crops";
}

TEST(ImagePipeline, ACorruptImageIsOneErrorNamingItAndStoppingMidEpochJoins) {
  TempDir dir;
  const std::string folder = make_folder(dir.file("d"), 12, 1);
  const std::string bad = folder + "/train/c1/0005.png";
  write_string(bad, "\x89PNG\r\n\x1a\n this is not a png");
  const DataSplits s = list_image_folder(folder, 16);
  Context ctx(Device::cpu());
  for (int workers : {1, 3}) {
    DataLoader loader(s.train, ctx, options(workers, 4));
    loader.start_epoch(0);
    Batch b;
    const std::string message = error_message([&] {
      while (loader.next(b)) {
      }
    });
    EXPECT_TRUE(contains(message, "0005.png")) << message;
    EXPECT_FALSE(loader.next(b)) << "the failed epoch is over";
  }
  // Destroyed with workers blocked on a full ring and batches in flight: joins, no hang.
  const DataSplits good = list_image_folder(make_folder(dir.file("g"), 40, 1), 16);
  for (int k = 0; k < 3; ++k) {
    DataLoader loader(good.train, ctx, options(3, 2, full_augment()));
    loader.start_epoch(0);
    Batch b;
    ASSERT_TRUE(loader.next(b));
  }
}

TEST(ImagePipeline, RandomResizedCropFollowsTorchvision) {
  Augment a;
  a.random_resized_crop = true;
  for (int sample = 0; sample < 200; ++sample) {
    for (auto [w, h] : {std::pair{64, 64}, {500, 375}, {31, 97}}) {
      const CropBox box = random_resized_crop_box(w, h, a, 5, 1, sample);
      ASSERT_TRUE(box.width > 0 && box.height > 0 && box.x >= 0 && box.y >= 0 && box.x + box.width <= w &&
                  box.y + box.height <= h)
          << w << "x" << h << " sample " << sample;
      const double area = static_cast<double>(box.width) * box.height / (static_cast<double>(w) * h);
      EXPECT_LE(area, 1.0 + 1e-9);
      const CropBox again = random_resized_crop_box(w, h, a, 5, 1, sample);
      EXPECT_EQ(std::tie(box.x, box.y, box.width, box.height), std::tie(again.x, again.y, again.width, again.height));
    }
  }
  // No window of scale >= 0.99 and ratio <= 4/3 fits a 100x10 strip: the centred fallback at
  // ratio 4/3, the full height.
  a.scale_min = 0.99;
  const CropBox fallback = random_resized_crop_box(100, 10, a, 5, 1, 0);
  EXPECT_EQ(fallback.height, 10);
  EXPECT_EQ(fallback.width, 13);
  EXPECT_EQ(fallback.x, 43);
  EXPECT_EQ(fallback.y, 0);
}

TEST(ImagePipeline, AugmentedFolderSamplesHaveTheSizeAndStayInRange) {
  TempDir dir;
  const std::string path = dir.file("photo.png");
  std::mt19937 rng(3);
  write_image(path, class_image(1, 90, 60, rng));
  Augment a = full_augment();
  a.brightness = a.contrast = a.saturation = 0.9f;
  std::vector<float> out(3 * 24 * 24), again(out.size()), other(out.size());
  for (int sample = 0; sample < 20; ++sample) {
    load_folder_sample(path, 24, &a, 9, 0, sample, out.data());
    for (float v : out) ASSERT_TRUE(v >= 0.0f && v <= 1.0f) << v;
    load_folder_sample(path, 24, &a, 9, 0, sample, again.data());
    EXPECT_EQ(out, again) << "seeded by (seed, epoch, sample)";
    load_folder_sample(path, 24, &a, 9, 1, sample, other.data());
    EXPECT_NE(out, other) << "another epoch draws again";
  }
}

TEST(ImagePipeline, ColorJitterKeepsValuesInRangeAndIsSeeded) {
  Augment a;
  a.brightness = a.contrast = a.saturation = 0.8f;
  const std::vector<float> src = random_values(3 * 8 * 8, 4, 0.0f, 1.0f);
  for (int sample = 0; sample < 50; ++sample) {
    std::vector<float> x = src, y = src;
    color_jitter(x.data(), 3, 8, 8, a, 1, 0, sample);
    color_jitter(y.data(), 3, 8, 8, a, 1, 0, sample);
    EXPECT_EQ(x, y);
    EXPECT_NE(x, src);
    for (float v : x) ASSERT_TRUE(v >= 0.0f && v <= 1.0f) << v;
  }
  // Saturation 0 of a grey image changes nothing; brightness alone scales.
  Augment bright;
  bright.brightness = 0.5f;
  std::vector<float> grey(3 * 4, 0.5f);
  color_jitter(grey.data(), 3, 2, 2, bright, 1, 0, 0);
  for (std::size_t i = 1; i < grey.size(); ++i) EXPECT_FLOAT_EQ(grey[i], grey[0]);
  EXPECT_GE(grey[0], 0.25f);
  EXPECT_LE(grey[0], 0.75f);
}

TEST(ImagePipeline, ImageSizeIsTheModelsUnlessItsLayersTakeAnother) {
  TempDir dir;
  const std::string net = dir.file("fcn.json");
  write_string(net, R"({"name": "fcn", "input": [3, 16, 16], "layers": [
    {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}]})");
  EXPECT_EQ(folder_image_size(net, 0), 16);
  EXPECT_EQ(folder_image_size(net, 40), 40) << "a fully convolutional net takes any size";
  const std::string head = dir.file("head.json");
  write_string(head, R"({"name": "head", "input": [3, 16, 16], "layers": [
    {"type": "flatten"}, {"type": "linear", "out_features": 2}]})");
  EXPECT_EQ(folder_image_size(head, 16), 16);
  expect_error([&] { (void)folder_image_size(head, 32); }, {"--image-size 32", "fixes its input at 16x16"});
}

TEST(ImagePipeline, CliTrainsATinyModelOnAFolderWithWorkers) {
  TempDir dir;
  const std::string folder = make_folder(dir.file("d"), 12, 4);
  const std::string net = dir.file("tiny.json");
  write_string(net, R"({"name": "tiny", "input": [3, 16, 16], "layers": [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "relu"},
    {"type": "max_pool2d", "kernel_size": 4}, {"type": "flatten"}, {"type": "linear", "out_features": 2}]})");
  const std::string out = dir.file("out.txt");
  const std::string cmd = fmt::format(
      "'{}' train --model '{}' --data '{}' --dataset folder --device cpu --epochs 2 --batch-size 8 --workers 2 "
      "--prefetch 3 --augment random-resized-crop,flip,color-jitter --save '{}' > '{}' 2>&1",
      cli_path(), net, folder, dir.file("w.safetensors"), out);
  const int status = std::system(cmd.c_str());
  const auto bytes = read_bytes(out);
  const std::string text(bytes.begin(), bytes.end());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_TRUE(contains(text, "test accuracy")) << text;
  EXPECT_TRUE(fs::exists(dir.file("w.safetensors")));
  // An unknown augmentation and a size the model's linear layer refuses are one-line errors.
  for (const auto& [extra, fragment] :
       {std::pair<std::string, std::string>{"--augment sharpen", "--augment: unknown 'sharpen'"},
        {"--image-size 32", "fixes its input at 16x16"}}) {
    const std::string bad =
        fmt::format("'{}' train --model '{}' --data '{}' --dataset folder --device cpu {} > '{}' 2>&1", cli_path(), net,
                    folder, extra, out);
    const int st = std::system(bad.c_str());
    const auto b = read_bytes(out);
    const std::string t(b.begin(), b.end());
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << t;
    EXPECT_TRUE(contains(t, fragment)) << t;
  }
}

// Issue 27 item 2: with N shards each rank's loader decodes only its rows of every global batch,
// and the shards, put side by side, are the one-process batches exactly (pixels and labels).
TEST(ImagePipeline, ShardsDecodeOnlyTheirRowsAndTogetherMakeTheGlobalBatches) {
  TempDir dir;
  const DataSplits s = list_image_folder(make_folder(dir.file("d"), 19, 1), 16);  // 38 images: a partial last batch
  Context ctx(Device::cpu());
  DataLoader whole(s.train, ctx, options(2, 4, full_augment()));
  const Epoch global = run_epoch(whole, ctx, 1);
  ASSERT_EQ(global.images.size(), 5u);
  const std::int64_t values = 3 * 16 * 16;

  constexpr int kShards = 3;
  std::vector<Epoch> shards;
  std::int64_t decoded = 0;
  for (int r = 0; r < kShards; ++r) {
    LoaderOptions o = options(2, 4, full_augment());
    o.shard_index = r;
    o.shard_count = kShards;
    DataLoader loader(s.train, ctx, o);
    loader.start_epoch(1);
    Epoch e;
    Batch b;
    std::int64_t k = 0;
    while (loader.next(b)) {
      EXPECT_EQ(b.global_rows, static_cast<std::int64_t>(global.labels[static_cast<std::size_t>(k)].size()));
      EXPECT_EQ(b.row_offset, shard_of(b.global_rows, r, kShards).begin);
      EXPECT_EQ(b.labels.dim(0), shard_of(b.global_rows, r, kShards).rows());
      e.images.push_back(b.images.to_vector(ctx));
      e.labels.push_back(b.labels.to_int_vector(ctx));
      ++k;
    }
    EXPECT_EQ(k, 5) << "every shard sees every batch";
    decoded += loader.stats().samples_decoded;
    EXPECT_LE(loader.stats().samples_decoded, 38 / kShards + 5) << "shard " << r << " decoded more than its rows";
    shards.push_back(std::move(e));
  }
  EXPECT_EQ(decoded, 38) << "each image decoded once over all shards";
  for (std::size_t b = 0; b < global.images.size(); ++b) {
    std::vector<float> images;
    std::vector<std::int32_t> labels;
    for (const Epoch& e : shards) {
      images.insert(images.end(), e.images[b].begin(), e.images[b].end());
      labels.insert(labels.end(), e.labels[b].begin(), e.labels[b].end());
    }
    EXPECT_EQ(images, global.images[b]) << "batch " << b;
    EXPECT_EQ(labels, global.labels[b]) << "batch " << b;
    EXPECT_EQ(static_cast<std::int64_t>(images.size()), values * static_cast<std::int64_t>(labels.size()));
  }
}
