#pragma once
// Batches of a Dataset on a context's device, in a seeded order that depends only on (seed,
// epoch), so a run resumed at batch k of epoch e sees exactly the batches the first run would have.
//
// Without augmentation, start_epoch gathers the epoch's permuted samples on the host once and
// copies them to the device in one transfer; batches are then zero-copy slices of that copy (the
// whole of MNIST sits on the GPU for the epoch). With augmentation, or when the epoch's data is
// larger than a limit (1 GiB by default: a folder of 224 px images would otherwise pin tens of GB
// of host memory and hold as much on the device), a background thread gathers (and augments)
// batch b+1 into host staging (pinned for CUDA) while the caller trains on batch b, and each batch
// is copied on its own. Either way the batches are the same.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cudl/engine/device.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

class Context;

// Host-side augmentations in torchvision's order: pad by crop_padding with zeros and take a random
// crop of the original size, then flip left-right with probability 1/2. Each sample's draws come
// from (seed, epoch, sample index) alone.
struct Augment {
  bool random_crop = false;
  int crop_padding = 4;
  bool hflip = false;

  bool enabled() const { return random_crop || hflip; }
};

// Epochs with more data than this (images and labels, in bytes) are staged batch by batch.
inline constexpr std::size_t kWholeEpochStagingLimit = std::size_t{1} << 30;

// True when a loader stages batch by batch: with augmentation, or when the epoch's `epoch_bytes`
// exceed `limit`. A CPU loader without shuffling stages nothing (its batches are slices of the
// dataset), so it never does.
bool loader_stages_per_batch(const Augment& augment, Device device, bool shuffle, std::size_t epoch_bytes,
                             std::size_t limit);

struct Batch {
  Tensor images;           // [B,C,H,W] f32 on the loader's device
  Tensor labels;           // [B] i32 on the loader's device
  std::int64_t index = 0;  // the batch's position in its epoch
};

class DataLoader {
 public:
  // `dataset` tensors must be on the CPU; they are shared, not copied. `ctx` must outlive the loader.
  // `whole_epoch_limit`: see kWholeEpochStagingLimit (tests lower it to force per-batch staging).
  DataLoader(const Dataset& dataset, Context& ctx, std::int64_t batch_size, bool shuffle, std::uint64_t seed,
             Augment augment = {}, std::size_t whole_epoch_limit = kWholeEpochStagingLimit);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  std::int64_t size() const;  // samples in the dataset
  std::int64_t batch_size() const;
  // Including the last, partial batch.
  std::int64_t batches_per_epoch() const;
  // Whether batches are staged one by one (see loader_stages_per_batch) rather than per epoch.
  bool stages_per_batch() const;

  // Begins epoch `epoch`, skipping its first `first_batch` batches (to resume a run).
  void start_epoch(std::int64_t epoch, std::int64_t first_batch = 0);
  // The next batch of the epoch; false when the epoch is done. Tensors of an earlier batch stay
  // valid (they own or share their memory).
  bool next(Batch& batch);

  // The epoch's sample order (dataset indices), for tests and debugging.
  const std::vector<std::int64_t>& order() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The seeded permutation of 0..n-1 the loader uses for (seed, epoch): Fisher-Yates driven by
// Philox, so it is the same on every machine and build.
std::vector<std::int64_t> shuffled_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch);

// Augments one CHW sample (`src` to `dst`, both channels*height*width floats) as the loader does
// for (seed, epoch, sample).
void augment_sample(const float* src, float* dst, std::int64_t channels, std::int64_t height, std::int64_t width,
                    const Augment& augment, std::uint64_t seed, std::int64_t epoch, std::int64_t sample);

}  // namespace cudl
