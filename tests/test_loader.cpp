// DataLoader (engine/io/loader.hpp): coverage of each epoch, seeded and resumable order, partial
// batches and deterministic augmentation. Samples carry their own index in every pixel, so a batch
// says which samples it holds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <set>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/distributed.hpp"
#include "cudl/engine/io/loader.hpp"
#include "test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

// n samples of [c,h,w]; sample i has every pixel equal to i (or, with `ramp`, pixel k = 1000*i + k)
// and label i % 3.
Dataset numbered(std::int64_t n, std::int64_t c = 1, std::int64_t h = 2, std::int64_t w = 2, bool ramp = false) {
  Context ctx{Device::cpu()};
  std::int64_t values = c * h * w;
  std::vector<float> pixels(static_cast<std::size_t>(n * values));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t k = 0; k < values; ++k) {
      pixels[static_cast<std::size_t>(i * values + k)] =
          ramp ? static_cast<float>(1000 * i + k) : static_cast<float>(i);
    }
  }
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % 3);
  Dataset d;
  d.images = Tensor::from_host(pixels, {n, c, h, w}, ctx);
  d.labels = Tensor::from_host(labels, {n}, ctx);
  d.num_classes = 3;
  d.name = "numbered";
  return d;
}

struct Seen {
  std::vector<std::int64_t> samples;  // first pixel of each sample, in order
  std::vector<std::int64_t> batch_sizes;
  std::vector<std::int64_t> indices;
  std::vector<std::vector<float>> images;  // each batch's values
  std::vector<std::int32_t> labels;
};

// `divisor`: sample index = first pixel / divisor (1000 for ramp datasets); 0 when augmentation
// makes the first pixel meaningless.
Seen run_epoch(DataLoader& loader, Context& ctx, std::int64_t epoch, std::int64_t first_batch = 0,
               std::int64_t divisor = 1) {
  Seen seen;
  loader.start_epoch(epoch, first_batch);
  Batch batch;
  while (loader.next(batch)) {
    std::vector<float> values = batch.images.to_vector(ctx);
    std::vector<std::int32_t> labels = batch.labels.to_int_vector(ctx);
    std::int64_t rows = batch.images.dim(0);
    std::int64_t per = batch.images.numel() / rows;
    EXPECT_EQ(batch.labels.dim(0), rows);
    EXPECT_EQ(batch.images.device(), ctx.device());
    seen.labels.insert(seen.labels.end(), labels.begin(), labels.end());
    for (std::int64_t r = 0; r < rows && divisor > 0; ++r) {
      auto sample = static_cast<std::int64_t>(values[static_cast<std::size_t>(r * per)]) / divisor;
      seen.samples.push_back(sample);
      EXPECT_EQ(labels[static_cast<std::size_t>(r)], sample % 3) << "label travels with its image";
    }
    seen.batch_sizes.push_back(rows);
    seen.indices.push_back(batch.index);
    seen.images.push_back(values);
  }
  return seen;
}

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), std::int64_t{0});
  return v;
}

}  // namespace

TEST(Loader, EverySampleOnceWithAPartialLastBatch) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(10);
  DataLoader loader(d, ctx, 3, true, 42);
  EXPECT_EQ(loader.batches_per_epoch(), 4);
  EXPECT_EQ(loader.size(), 10);
  Seen seen = run_epoch(loader, ctx, 0);
  EXPECT_EQ(seen.batch_sizes, (std::vector<std::int64_t>{3, 3, 3, 1}));
  EXPECT_EQ(seen.indices, (std::vector<std::int64_t>{0, 1, 2, 3}));
  std::vector<std::int64_t> sorted = seen.samples;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, iota(10));
  EXPECT_NE(seen.samples, iota(10)) << "shuffled";
  EXPECT_EQ(seen.samples, loader.order());

  Batch batch;
  EXPECT_FALSE(loader.next(batch)) << "the epoch is over";
}

TEST(Loader, WithoutShuffleTheOrderIsTheDatasetOrder) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(7);
  DataLoader loader(d, ctx, 4, false, 1);
  EXPECT_EQ(run_epoch(loader, ctx, 0).samples, iota(7));
  EXPECT_EQ(run_epoch(loader, ctx, 5).samples, iota(7));
}

TEST(Loader, OrderDependsOnlyOnSeedAndEpoch) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(50);
  DataLoader a(d, ctx, 8, true, 7), b(d, ctx, 5, true, 7), c(d, ctx, 8, true, 8);
  Seen a0 = run_epoch(a, ctx, 0), a1 = run_epoch(a, ctx, 1);
  EXPECT_EQ(run_epoch(b, ctx, 0).samples, a0.samples) << "same seed, same order (batch size aside)";
  EXPECT_NE(a1.samples, a0.samples) << "a new epoch reshuffles";
  EXPECT_NE(run_epoch(c, ctx, 0).samples, a0.samples) << "another seed, another order";
  EXPECT_EQ(run_epoch(a, ctx, 0).samples, a0.samples) << "epochs can be replayed";
  EXPECT_EQ(shuffled_order(50, 7, 1), a1.samples);
}

TEST(Loader, ResumingFromABatchReproducesTheTail) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(23);
  DataLoader loader(d, ctx, 4, true, 99);
  Seen full = run_epoch(loader, ctx, 3);
  ASSERT_EQ(full.batch_sizes.size(), 6u);
  Seen tail = run_epoch(loader, ctx, 3, 4);
  EXPECT_EQ(tail.indices, (std::vector<std::int64_t>{4, 5}));
  EXPECT_EQ(tail.batch_sizes, (std::vector<std::int64_t>{4, 3}));
  EXPECT_EQ(tail.images[0], full.images[4]);
  EXPECT_EQ(tail.images[1], full.images[5]);
  EXPECT_TRUE(run_epoch(loader, ctx, 3, 6).samples.empty()) << "resuming at the end yields nothing";
}

TEST(Loader, LargeEpochsAreStagedBatchByBatch) {
  const Device cpu = Device::cpu(), gpu = Device::cuda(0);
  const std::size_t limit = kWholeEpochStagingLimit;
  EXPECT_EQ(limit, std::size_t{1} << 30);
  EXPECT_FALSE(loader_stages_per_batch(Augment{}, gpu, true, limit, limit));
  EXPECT_TRUE(loader_stages_per_batch(Augment{}, gpu, true, limit + 1, limit));
  EXPECT_TRUE(loader_stages_per_batch(Augment{}, gpu, false, limit + 1, limit)) << "order does not matter on a device";
  EXPECT_TRUE(loader_stages_per_batch(Augment{}, cpu, true, limit + 1, limit)) << "a shuffled CPU epoch is a copy too";
  EXPECT_FALSE(loader_stages_per_batch(Augment{}, cpu, false, limit + 1, limit)) << "zero-copy slices stage nothing";
  EXPECT_TRUE(loader_stages_per_batch(Augment{false, 4, true}, gpu, true, 1, limit)) << "augmentation is per batch";
  EXPECT_TRUE(loader_stages_per_batch(Augment{true, 4, false}, cpu, false, 1, limit));
}

TEST(Loader, PerBatchStagingYieldsTheSameBatches) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(37, 3, 5, 5, /*ramp=*/true);  // 37 * 76 * 4 = 11,248 bytes of epoch
  DataLoader whole(d, ctx, 8, true, 21), per_batch(d, ctx, 8, true, 21, Augment{}, /*whole_epoch_limit=*/11247);
  EXPECT_FALSE(whole.stages_per_batch());
  EXPECT_TRUE(per_batch.stages_per_batch());
  EXPECT_FALSE(DataLoader(d, ctx, 8, true, 21, Augment{}, 11248).stages_per_batch()) << "the limit is inclusive";
  for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
    Seen a = run_epoch(whole, ctx, epoch, 0, 1000), b = run_epoch(per_batch, ctx, epoch, 0, 1000);
    EXPECT_EQ(a.images, b.images);
    EXPECT_EQ(a.labels, b.labels);
    EXPECT_EQ(a.indices, b.indices);
    EXPECT_EQ(a.batch_sizes, b.batch_sizes);
    Seen tail = run_epoch(per_batch, ctx, epoch, 3, 1000);
    ASSERT_EQ(tail.images.size(), 2u);
    EXPECT_EQ(tail.images.front(), a.images[3]);
    EXPECT_EQ(tail.indices.front(), 3);
  }
}

TEST(Loader, BatchLargerThanTheDataset) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(5);
  for (bool augment : {false, true}) {
    DataLoader loader(d, ctx, 64, true, 3, Augment{false, 4, augment});
    EXPECT_EQ(loader.batches_per_epoch(), 1);
    Seen seen = run_epoch(loader, ctx, 0);
    EXPECT_EQ(seen.batch_sizes, (std::vector<std::int64_t>{5}));
  }
}

TEST(Loader, FlipIsDeterministicPerSeedAndMirrorsTheImage) {
  Context ctx{Device::cpu()};
  const std::int64_t n = 40, h = 3, w = 4;
  Dataset d = numbered(n, 2, h, w, /*ramp=*/true);
  Augment flip{false, 4, true};
  DataLoader a(d, ctx, 6, true, 11, flip), b(d, ctx, 6, true, 11, flip);
  Seen sa = run_epoch(a, ctx, 2, 0, 1000), sb = run_epoch(b, ctx, 2, 0, 1000);
  EXPECT_EQ(sa.images, sb.images) << "same seed and epoch, same augmentation";

  int flipped = 0, kept = 0;
  for (const std::vector<float>& batch : sa.images) {
    for (std::size_t r = 0; r < batch.size() / static_cast<std::size_t>(2 * h * w); ++r) {
      const float* img = batch.data() + r * static_cast<std::size_t>(2 * h * w);
      // Sample index from the top-left or, if flipped, the top-right original pixel.
      auto base = static_cast<std::int64_t>(img[0]) / 1000 * 1000;
      bool is_flipped = static_cast<std::int64_t>(img[0]) - base == w - 1;
      for (std::int64_t c = 0; c < 2; ++c) {
        for (std::int64_t y = 0; y < h; ++y) {
          for (std::int64_t x = 0; x < w; ++x) {
            std::int64_t sx = is_flipped ? w - 1 - x : x;
            ASSERT_EQ(img[(c * h + y) * w + x], static_cast<float>(base + (c * h + y) * w + sx));
          }
        }
      }
      (is_flipped ? flipped : kept)++;
    }
  }
  EXPECT_GT(flipped, 5);
  EXPECT_GT(kept, 5);

  // Resuming reproduces augmented batches too.
  Seen tail = run_epoch(b, ctx, 2, 5, 1000);
  EXPECT_EQ(tail.images.front(), sa.images[5]);
  EXPECT_NE(run_epoch(b, ctx, 3, 0, 1000).images, sa.images) << "another epoch, other flips";
}

TEST(Loader, RandomCropShiftsWithZeroPadding) {
  const std::int64_t h = 5, w = 6;
  std::vector<float> src(static_cast<std::size_t>(h * w));
  std::iota(src.begin(), src.end(), 1.0f);
  std::set<std::pair<std::int64_t, std::int64_t>> shifts;
  Augment crop{true, 2, false};
  for (std::int64_t sample = 0; sample < 200; ++sample) {
    std::vector<float> dst(src.size());
    augment_sample(src.data(), dst.data(), 1, h, w, crop, 5, 0, sample);
    // Find the shift from any surviving pixel: value v sits at ((v-1)/w, (v-1)%w) in the source.
    std::int64_t dx = 99, dy = 99;
    for (std::int64_t y = 0; y < h && dx == 99; ++y) {
      for (std::int64_t x = 0; x < w; ++x) {
        float v = dst[static_cast<std::size_t>(y * w + x)];
        if (v != 0.0f) {
          auto k = static_cast<std::int64_t>(v) - 1;
          dy = k / w - y;
          dx = k % w - x;
          break;
        }
      }
    }
    ASSERT_LE(std::abs(dx), 2);
    ASSERT_LE(std::abs(dy), 2);
    for (std::int64_t y = 0; y < h; ++y) {
      for (std::int64_t x = 0; x < w; ++x) {
        std::int64_t sy = y + dy, sx = x + dx;
        float want = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[static_cast<std::size_t>(sy * w + sx)] : 0.0f;
        ASSERT_EQ(dst[static_cast<std::size_t>(y * w + x)], want) << sample;
      }
    }
    shifts.insert({dx, dy});
    std::vector<float> again(src.size());
    augment_sample(src.data(), again.data(), 1, h, w, crop, 5, 0, sample);
    ASSERT_EQ(again, dst) << "deterministic per (seed, epoch, sample)";
  }
  EXPECT_EQ(shifts.size(), 25u) << "every shift in [-2,2]^2 occurs";
}

TEST(Loader, AugmentedLoaderCoversEverySample) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(33, 3, 4, 4);
  DataLoader loader(d, ctx, 8, true, 5, Augment{true, 1, true});
  for (std::int64_t epoch = 0; epoch < 3; ++epoch) {
    loader.start_epoch(epoch);
    std::vector<std::int64_t> labels_seen;
    Batch batch;
    std::int64_t rows = 0;
    while (loader.next(batch)) {
      rows += batch.images.dim(0);
      for (std::int32_t l : batch.labels.to_int_vector(ctx)) labels_seen.push_back(l);
    }
    EXPECT_EQ(rows, 33);
    std::vector<std::int64_t> want;
    for (std::int64_t i : loader.order()) want.push_back(i % 3);
    EXPECT_EQ(labels_seen, want);
  }
  // Stopping mid-epoch and starting another must not hang or leak the producer.
  loader.start_epoch(7);
  Batch batch;
  ASSERT_TRUE(loader.next(batch));
  loader.start_epoch(8, 2);
  ASSERT_TRUE(loader.next(batch));
  EXPECT_EQ(batch.index, 2);
}

TEST(Loader, InMemoryShardsSliceTheGlobalBatches) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(11);
  DataLoader whole(d, ctx, 4, true, 5);
  const Seen global = run_epoch(whole, ctx, 2);
  std::vector<std::int64_t> joined;
  for (int r = 0; r < 2; ++r) {
    LoaderOptions o;
    o.batch_size = 4;
    o.shuffle = true;
    o.seed = 5;
    o.shard_index = r;
    o.shard_count = 2;
    DataLoader shard(d, ctx, o);
    const Seen mine = run_epoch(shard, ctx, 2);
    // Batches of 4, 4, 3: shard 0 takes rows [0, 2), [0, 2), [0, 1); shard 1 the rest.
    EXPECT_EQ(mine.batch_sizes, r == 0 ? (std::vector<std::int64_t>{2, 2, 1}) : (std::vector<std::int64_t>{2, 2, 2}));
    for (std::size_t b = 0, at = 0; b < mine.batch_sizes.size();
         at += static_cast<std::size_t>(mine.batch_sizes[b]), ++b) {
      const std::int64_t global_begin = static_cast<std::int64_t>(b) * 4 + shard_of(global.batch_sizes[b], r, 2).begin;
      for (std::int64_t k = 0; k < mine.batch_sizes[b]; ++k)
        EXPECT_EQ(mine.samples[at + static_cast<std::size_t>(k)],
                  global.samples[static_cast<std::size_t>(global_begin + k)]);
    }
    joined.insert(joined.end(), mine.samples.begin(), mine.samples.end());
  }
  std::sort(joined.begin(), joined.end());
  EXPECT_EQ(joined, iota(11)) << "the shards cover the epoch once";

  LoaderOptions bad;
  bad.shard_index = 2;
  bad.shard_count = 2;
  expect_error([&] { DataLoader loader(d, ctx, bad); }, {"DataLoader: shard 2 of 2", "dataset 'numbered'"});
}

TEST(Loader, BadArgumentsAreErrors) {
  Context ctx{Device::cpu()};
  Dataset d = numbered(4);
  std::string message = error_message([&] { DataLoader(d, ctx, 0, true, 1); });
  EXPECT_TRUE(contains(message, "batch size 0")) << message;
  DataLoader loader(d, ctx, 2, true, 1);
  Batch batch;
  message = error_message([&] { loader.next(batch); });
  EXPECT_TRUE(contains(message, "start_epoch")) << message;
  message = error_message([&] { loader.start_epoch(0, 3); });
  EXPECT_TRUE(contains(message, "first batch 3")) << message;
  Dataset empty;
  message = error_message([&] { DataLoader(empty, ctx, 2, true, 1); });
  EXPECT_TRUE(contains(message, "no tensors")) << message;
}

TEST(Loader, CudaBatchesMatchTheCpu) {
  if (!cuda_compiled() || cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Context cpu{Device::cpu()};
  Context gpu{Device::cuda(0)};
  Dataset d = numbered(37, 3, 5, 5, /*ramp=*/true);
  // Whole-epoch staging, per-batch staging of a large epoch (forced by a 1-byte limit), augmentation.
  struct Case {
    Augment augment;
    std::size_t limit;
  };
  for (Case c : {Case{Augment{}, kWholeEpochStagingLimit}, Case{Augment{}, 1}, Case{Augment{true, 2, true}, 1}}) {
    DataLoader on_cpu(d, cpu, 8, true, 21, c.augment), on_gpu(d, gpu, 8, true, 21, c.augment, c.limit);
    EXPECT_EQ(on_gpu.stages_per_batch(), c.limit == 1);
    for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
      Seen a = run_epoch(on_cpu, cpu, epoch, 0, 0), b = run_epoch(on_gpu, gpu, epoch, 0, 0);
      EXPECT_EQ(a.images, b.images);
      EXPECT_EQ(a.labels, b.labels);
      Seen tail = run_epoch(on_gpu, gpu, epoch, 3, 0);
      EXPECT_EQ(tail.images.front(), a.images[3]);
    }
  }
}
