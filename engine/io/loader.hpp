#pragma once
// Batches of a Dataset on a context's device, in a seeded order that depends only on (seed,
// epoch), so a run resumed at batch k of epoch e sees exactly the batches the first run would have.
//
// Without augmentation, an in-memory dataset's epoch is gathered on the host once (the permuted
// samples) and copied to the device in one transfer; batches are then zero-copy slices of that
// copy (the whole of MNIST sits on the GPU for the epoch). A listed image folder, an augmented
// dataset, or an epoch larger than a limit (1 GiB by default) is staged batch by batch instead:
// a pool of worker threads fills a bounded ring of host staging slots (pinned for CUDA) ahead of
// the training step, each worker a whole batch at a time (decoding, resizing and augmenting a
// listed folder's images), and the caller takes the batches in order. Host memory is the ring's
// `prefetch` batches, whatever the dataset's size. Every sample's pixels are a pure function of
// (seed, epoch, sample), so the batches are the same whichever way they are made and whatever the
// number of workers. A dataset that fits on the device may instead live there for the loader's
// life (engine/io/resident.hpp): one copy of the order per epoch, each batch gathered on the device.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cudl/engine/device.hpp"
#include "cudl/engine/io/augment.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/io/resident.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

class Context;

// Epochs with more data than this (images and labels, in bytes) are staged batch by batch.
inline constexpr std::size_t kWholeEpochStagingLimit = std::size_t{1} << 30;

// True when an in-memory dataset is staged batch by batch: with augmentation, or when the epoch's
// `epoch_bytes` exceed `limit`. A CPU loader without shuffling stages nothing (its batches are
// slices of the dataset), so it never does. Listed datasets are always staged batch by batch.
bool loader_stages_per_batch(const Augment& augment, Device device, bool shuffle, std::size_t epoch_bytes,
                             std::size_t limit);

// Worker threads when LoaderOptions::workers is 0: min(4, hardware threads).
int default_loader_workers();

struct LoaderOptions {
  std::int64_t batch_size = 128;
  bool shuffle = false;
  std::uint64_t seed = 0;
  Augment augment;
  int workers = 0;   // threads that stage batches (0: default_loader_workers())
  int prefetch = 0;  // staging slots: batches made ahead of the step (0: 2 per worker, at least 2)
  std::size_t whole_epoch_limit = kWholeEpochStagingLimit;  // tests lower it to force per-batch staging
  // Data parallel: this loader is shard `shard_index` of `shard_count` and yields only its rows,
  // shard_of(rows, index, count), of each global batch of batch_size rows (engine/distributed.hpp),
  // so each rank decodes, augments and copies only what it trains on. The global order, and hence
  // the union of the shards, is the one-process loader's.
  int shard_index = 0, shard_count = 1;
  // Keep the dataset on the device and gather each batch there (engine/io/resident.hpp); the
  // batches are the same either way.
  ResidentData resident = ResidentData::automatic;
};

// What the per-batch pipeline holds and did, for tests and `cudl bench --pipeline`.
struct LoaderStats {
  int workers = 0, slots = 0;        // 0 when batches are not staged one by one
  std::size_t staging_bytes = 0;     // host staging held: slots x one batch (images and labels)
  std::int64_t peak_staged = 0;      // the most batches staged (being filled or waiting) at once
  std::int64_t samples_decoded = 0;  // listed images decoded so far
};

struct Batch {
  Tensor images;           // [B,C,H,W] f32 on the loader's device
  Tensor labels;           // [B] i32 on the loader's device
  std::int64_t index = 0;  // the batch's position in its epoch
  // The global batch this one is a shard of (LoaderOptions::shard_count > 1): its rows, and the
  // first of them this shard holds. Without sharding, B and 0.
  std::int64_t global_rows = 0, row_offset = 0;
};

class DataLoader {
 public:
  // `dataset` tensors must be on the CPU; they are shared, not copied. `ctx` must outlive the loader.
  DataLoader(const Dataset& dataset, Context& ctx, const LoaderOptions& options);
  DataLoader(const Dataset& dataset, Context& ctx, std::int64_t batch_size, bool shuffle, std::uint64_t seed,
             Augment augment = {}, std::size_t whole_epoch_limit = kWholeEpochStagingLimit);
  // Stops and joins the workers, also mid-epoch.
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  std::int64_t size() const;  // samples in the dataset
  std::int64_t batch_size() const;
  // Including the last, partial batch.
  std::int64_t batches_per_epoch() const;
  // Whether batches are staged one by one (see loader_stages_per_batch) rather than per epoch.
  bool stages_per_batch() const;
  // Whether the dataset lives on the device and batches are gathered there (choose_resident).
  bool resident() const;
  LoaderStats stats() const;

  // Begins epoch `epoch`, skipping its first `first_batch` batches (to resume a run).
  void start_epoch(std::int64_t epoch, std::int64_t first_batch = 0);
  // The next batch of the epoch; false when the epoch is done. Tensors of an earlier batch stay
  // valid (they own or share their memory). A worker's error (an unreadable image: the message
  // names the file) is thrown here, at the batch it belongs to.
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

}  // namespace cudl
