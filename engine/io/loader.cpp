#include "cudl/engine/io/loader.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>

#include "cudl/engine/allocator.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/cuda/pinned_memory.hpp"
#include "cudl/engine/distributed.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/philox.hpp"

namespace cudl {

namespace {

// The permutation's Philox stream (the augmentations have their own, engine/io/augment.cpp).
constexpr std::uint32_t kShuffleStream = 0x5348;  // "SH"

// Copies samples order[begin, end) of the dataset into images/labels (host memory), decoding a
// listed folder's images and augmenting each sample when asked. Returns the images decoded.
std::int64_t gather(const Dataset& data, const std::vector<std::int64_t>& order, std::int64_t begin, std::int64_t end,
                    float* images, std::int32_t* labels, const Augment* augment, std::uint64_t seed, std::int64_t epoch,
                    const std::atomic<bool>* stop = nullptr) {
  const Shape s = data.image_shape();
  std::int64_t values = s[1] * s[2] * s[3];
  const std::int32_t* src_labels = data.labels.data<std::int32_t>();
  for (std::int64_t k = 0; k < end - begin; ++k) {
    if (stop != nullptr && stop->load(std::memory_order_relaxed)) return k;  // the loader is going away
    std::int64_t sample = order[static_cast<std::size_t>(begin + k)];
    float* out = images + k * values;
    if (data.listed()) {
      load_folder_sample(data.files->paths[static_cast<std::size_t>(sample)], data.files->size, augment, seed, epoch,
                         sample, out);
    } else if (augment) {
      augment_sample(data.images.data<float>() + sample * values, out, s[1], s[2], s[3], *augment, seed, epoch, sample);
    } else {
      std::memcpy(out, data.images.data<float>() + sample * values, static_cast<std::size_t>(values) * sizeof(float));
    }
    labels[k] = src_labels[sample];
  }
  return data.listed() ? end - begin : 0;
}

}  // namespace

bool loader_stages_per_batch(const Augment& augment, Device device, bool shuffle, std::size_t epoch_bytes,
                             std::size_t limit) {
  if (augment.enabled()) return true;
  if (device.is_cpu() && !shuffle) return false;
  return epoch_bytes > limit;
}

std::vector<std::int64_t> shuffled_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  for (std::int64_t i = n - 1; i > 0; --i) {
    philox::Uint4 r = sample_draw(seed, epoch, kShuffleStream, i);
    // 64 random bits modulo i+1: the bias is below 2^-30 for any dataset that fits in memory.
    std::uint64_t bits = (static_cast<std::uint64_t>(r.x) << 32) | r.y;
    auto j = static_cast<std::int64_t>(bits % static_cast<std::uint64_t>(i + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

int default_loader_workers() {
  const unsigned hardware = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(hardware, 1u, 4u));
}

struct DataLoader::Impl {
  Dataset data;
  Context* ctx = nullptr;
  std::int64_t batch_size = 0;
  bool shuffle = false;
  std::uint64_t seed = 0;
  Augment augment;
  std::int64_t n = 0, sample_values = 0;
  int shard_index = 0, shard_count = 1;
  bool per_batch = false;                    // staging batch by batch (listed, augmenting, or a large epoch)
  std::unique_ptr<ResidentSource> resident;  // set when the dataset lives on the device
  std::int64_t slot_rows = 0;                // images a staging slot holds; its labels follow them

  std::vector<std::int64_t> order;
  std::int64_t epoch = -1;
  std::int64_t next_batch = 0;

  // Whole-epoch staging: the epoch's samples from batch `first_sample / batch_size` on, on the device.
  Tensor epoch_images, epoch_labels;
  std::int64_t first_sample = 0;
  HostStaging epoch_staging;  // CUDA only: reused across epochs

  // Per-batch staging: a ring of slots; batch b goes to slot b % slots.size(), so a worker may
  // fill batch b only once the caller has taken batch b - slots.size() out of it.
  enum class SlotState { free, filling, full };
  struct Slot {
    HostStaging staging;  // images, then labels
    std::int64_t batch = -1;
    SlotState state = SlotState::free;
    std::exception_ptr error;  // the worker's failure on this batch, thrown when it is taken
  };
  std::vector<Slot> slots;
  int worker_count = 0;
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable changed;
  std::atomic<bool> stop{false};
  bool failed = false;          // a worker failed: no more batches are claimed this epoch
  std::int64_t next_claim = 0;  // the next batch a worker takes
  std::int64_t staged = 0, peak_staged = 0;
  std::atomic<std::int64_t> samples_decoded{0};

  std::int64_t batches() const { return (n + batch_size - 1) / batch_size; }
  std::int64_t rows(std::int64_t b) const { return std::min(batch_size, n - b * batch_size); }
  // This loader's rows of batch b, as positions in the epoch's order.
  Shard shard(std::int64_t b) const {
    const Shard s = shard_of(rows(b), shard_index, shard_count);
    return {b * batch_size + s.begin, b * batch_size + s.end};
  }
  Shape image_shape(std::int64_t count) const {
    const Shape s = data.image_shape();
    return Shape{count, s[1], s[2], s[3]};
  }
  Slot& slot_of(std::int64_t b) { return slots[static_cast<std::size_t>(b) % slots.size()]; }

  void stop_workers() {
    {
      std::lock_guard lock(mutex);
      stop = true;
    }
    changed.notify_all();
    for (std::thread& t : workers) t.join();
    workers.clear();
    stop = false;
    failed = false;
    staged = 0;
    for (Slot& slot : slots) {
      slot.batch = -1;
      slot.state = SlotState::free;
      slot.error = nullptr;
    }
  }

  // One worker: claims batches in order while their slots are free, fills them outside the lock.
  void work(std::int64_t last, std::int64_t ep) {
    for (;;) {
      std::int64_t b = 0;
      {
        std::unique_lock lock(mutex);
        changed.wait(
            lock, [&] { return stop || failed || next_claim >= last || slot_of(next_claim).state == SlotState::free; });
        if (stop || failed || next_claim >= last) return;
        b = next_claim++;
        Slot& slot = slot_of(b);
        slot.batch = b;
        slot.state = SlotState::filling;
        peak_staged = std::max(peak_staged, ++staged);
      }
      Slot& slot = slot_of(b);
      std::exception_ptr error;
      try {
#if defined(CUDL_HAVE_CUDA)
        // A worker is a thread of its own: without the context's device made current here, its
        // CUDA calls (the event wait below) would create and use a context on GPU 0, whatever
        // GPU this rank trains on (cheap when it already is current).
        if (ctx->device().is_cuda()) make_device_current(ctx->device().index);
#endif
        // The slot's previous batch may still be on its way to the device.
        slot.staging.wait_until_free();
        auto* images = static_cast<float*>(slot.staging.data());
        auto* labels = reinterpret_cast<std::int32_t*>(images + slot_rows * sample_values);
        const Shard mine = shard(b);
        samples_decoded += gather(data, order, mine.begin, mine.end, images, labels,
                                  augment.enabled() ? &augment : nullptr, seed, ep, &stop);
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard lock(mutex);
        slot.error = error;
        slot.state = SlotState::full;
        if (error) failed = true;
      }
      changed.notify_all();
    }
  }

  void load_epoch_to_device(std::int64_t first_batch) {
    first_sample = std::min(first_batch * batch_size, n);
    std::int64_t count = n - first_sample;
    epoch_images = Tensor();
    epoch_labels = Tensor();
    if (count == 0) return;
    if (ctx->device().is_cpu() && !shuffle) {
      // The dataset already is the epoch, in order, on the right device.
      epoch_images = data.images.slice(first_sample, n);
      epoch_labels = data.labels.slice(first_sample, n);
      return;
    }
    epoch_images = Tensor::empty(image_shape(count), *ctx);
    epoch_labels = Tensor::empty({count}, *ctx, DType::i32);
    if (ctx->device().is_cpu()) {
      gather(data, order, first_sample, n, epoch_images.data<float>(), epoch_labels.data<std::int32_t>(), nullptr, seed,
             epoch);
      return;
    }
    std::size_t image_bytes = epoch_images.nbytes(), label_bytes = epoch_labels.nbytes();
    if (epoch_staging.bytes() < image_bytes + label_bytes) {
      epoch_staging = HostStaging();  // free the old buffer before taking a bigger one
      epoch_staging = HostStaging(image_bytes + label_bytes, *ctx);
    }
    epoch_staging.wait_until_free();  // last epoch's copy (long done, in practice)
    auto* images = static_cast<float*>(epoch_staging.data());
    auto* labels = reinterpret_cast<std::int32_t*>(static_cast<char*>(epoch_staging.data()) + image_bytes);
    gather(data, order, first_sample, n, images, labels, nullptr, seed, epoch);
    copy_bytes(*ctx, epoch_images.raw(), epoch_images.device(), images, Device::cpu(), image_bytes);
    copy_bytes(*ctx, epoch_labels.raw(), epoch_labels.device(), labels, Device::cpu(), label_bytes);
    epoch_staging.mark_in_use(*ctx);
  }
};

DataLoader::DataLoader(const Dataset& dataset, Context& ctx, std::int64_t batch_size, bool shuffle, std::uint64_t seed,
                       Augment augment, std::size_t whole_epoch_limit)
    : DataLoader(dataset, ctx, LoaderOptions{batch_size, shuffle, seed, augment, 0, 0, whole_epoch_limit}) {}

DataLoader::DataLoader(const Dataset& dataset, Context& ctx, const LoaderOptions& options)
    : impl_(std::make_unique<Impl>()) {
  const std::string& name = dataset.name;
  if (dataset.listed()) {
    CUDL_CHECK(dataset.files->size > 0 && dataset.labels.defined() &&
                   static_cast<std::int64_t>(dataset.files->paths.size()) == dataset.labels.numel(),
               "DataLoader: listed dataset '{}' needs one label per file and a positive size", name);
  } else {
    CUDL_CHECK(dataset.images.defined() && dataset.labels.defined(), "DataLoader: dataset '{}' has no tensors", name);
    CUDL_CHECK(dataset.images.rank() == 4 && dataset.images.dtype() == DType::f32,
               "DataLoader: dataset '{}' images must be [N,C,H,W] f32, got {} {}", name,
               dtype_name(dataset.images.dtype()), dataset.images.shape());
    CUDL_CHECK(dataset.images.device().is_cpu(), "DataLoader: dataset '{}' must be on the CPU, its images are on {}",
               name, dataset.images.device());
  }
  const std::int64_t count = dataset.image_shape()[0];
  CUDL_CHECK(dataset.labels.rank() == 1 && dataset.labels.dtype() == DType::i32 && dataset.labels.dim(0) == count,
             "DataLoader: dataset '{}' labels must be [N] i32 with N = {}, got {} {}", name, count,
             dtype_name(dataset.labels.dtype()), dataset.labels.shape());
  CUDL_CHECK(dataset.labels.device().is_cpu(), "DataLoader: dataset '{}' must be on the CPU, its labels are on {}",
             name, dataset.labels.device());
  CUDL_CHECK(count > 0, "DataLoader: dataset '{}' is empty", name);
  CUDL_CHECK(options.batch_size > 0, "DataLoader: batch size {} must be positive (dataset '{}')", options.batch_size,
             name);
  CUDL_CHECK(options.shard_count >= 1 && options.shard_index >= 0 && options.shard_index < options.shard_count,
             "DataLoader: shard {} of {}: expected 0 <= shard < count (dataset '{}')", options.shard_index,
             options.shard_count, name);
  CUDL_CHECK(options.workers >= 0 && options.prefetch >= 0,
             "DataLoader: workers ({}) and prefetch ({}) must be >= 0 (0: the default; dataset '{}')", options.workers,
             options.prefetch, name);
  check_augment(options.augment);
  Impl& m = *impl_;
  m.data = dataset;
  m.ctx = &ctx;
  m.batch_size = options.batch_size;
  m.shuffle = options.shuffle;
  m.seed = options.seed;
  m.augment = options.augment;
  m.n = count;
  m.shard_index = options.shard_index;
  m.shard_count = options.shard_count;
  m.sample_values = dataset.image_shape().numel() / m.n;
  // Images (f32) and labels (i32) of the whole dataset: what one epoch stages.
  const auto epoch_bytes = static_cast<std::size_t>(m.n) * static_cast<std::size_t>(m.sample_values + 1) * 4;
  m.per_batch = dataset.listed() || loader_stages_per_batch(options.augment, ctx.device(), options.shuffle, epoch_bytes,
                                                            options.whole_epoch_limit);
  if (choose_resident(dataset, ctx.device(), options.augment, options.resident, options.whole_epoch_limit).resident) {
    m.resident = std::make_unique<ResidentSource>(dataset, ctx);
    m.per_batch = false;
  }
  if (m.per_batch) {
    m.worker_count = options.workers > 0 ? options.workers : default_loader_workers();
    const int slots = options.prefetch > 0 ? options.prefetch : std::max(2, 2 * m.worker_count);
    // A slot holds this shard's rows of a batch: at most its share of a full one, rounded up.
    m.slot_rows = (std::min(options.batch_size, m.n) + m.shard_count - 1) / m.shard_count;
    std::size_t slot_bytes = static_cast<std::size_t>(m.slot_rows * (m.sample_values + 1)) * 4;
    // All the staging at once, before any of it is allocated: 4096 slots of a large batch asked
    // for 48 GiB and failed as "cannot allocate 12.00 MiB" at some slot, naming neither.
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
      const double total = static_cast<double>(slot_bytes) * slots;
      const double memory = static_cast<double>(pages) * static_cast<double>(page);
      CUDL_CHECK(total <= memory,
                 "DataLoader: {} prefetched batches (--prefetch) of {} each would stage {}, more than this machine's "
                 "{} of memory (dataset '{}'): lower --prefetch, --workers or --batch-size",
                 slots, format_bytes(slot_bytes), format_bytes(static_cast<std::size_t>(total)),
                 format_bytes(static_cast<std::size_t>(memory)), name);
    }
    m.slots.resize(static_cast<std::size_t>(slots));
    for (Impl::Slot& slot : m.slots) slot.staging = HostStaging(slot_bytes, ctx);
  }
}

DataLoader::~DataLoader() { impl_->stop_workers(); }

std::int64_t DataLoader::size() const { return impl_->n; }
std::int64_t DataLoader::batch_size() const { return impl_->batch_size; }
std::int64_t DataLoader::batches_per_epoch() const { return impl_->batches(); }
bool DataLoader::stages_per_batch() const { return impl_->per_batch; }
bool DataLoader::resident() const { return impl_->resident != nullptr; }
const std::vector<std::int64_t>& DataLoader::order() const { return impl_->order; }

LoaderStats DataLoader::stats() const {
  Impl& m = *impl_;
  LoaderStats s;
  if (!m.per_batch) return s;
  std::lock_guard lock(m.mutex);
  s.workers = m.worker_count;
  s.slots = static_cast<int>(m.slots.size());
  for (const Impl::Slot& slot : m.slots) s.staging_bytes += slot.staging.bytes();
  s.peak_staged = m.peak_staged;
  s.samples_decoded = m.samples_decoded.load();
  return s;
}

void DataLoader::start_epoch(std::int64_t epoch, std::int64_t first_batch) {
  Impl& m = *impl_;
  CUDL_CHECK(epoch >= 0, "DataLoader::start_epoch: epoch {} must be >= 0 (dataset '{}')", epoch, m.data.name);
  CUDL_CHECK(first_batch >= 0 && first_batch <= m.batches(),
             "DataLoader::start_epoch: first batch {} is outside 0..{} (dataset '{}', {} samples, batch size {})",
             first_batch, m.batches(), m.data.name, m.n, m.batch_size);
  m.stop_workers();
  m.epoch = epoch;
  m.next_batch = first_batch;
  if (m.shuffle) {
    m.order = shuffled_order(m.n, m.seed, epoch);
  } else {
    m.order.resize(static_cast<std::size_t>(m.n));
    std::iota(m.order.begin(), m.order.end(), std::int64_t{0});
  }
  if (m.resident) {
    m.resident->start_epoch(m.order);
    m.first_sample = 0;
    return;
  }
  if (!m.per_batch) {
    m.load_epoch_to_device(first_batch);
    return;
  }
  m.next_claim = first_batch;
  const std::int64_t last = m.batches();
  // No more threads than batches left to make.
  const auto threads = std::min<std::int64_t>(m.worker_count, last - first_batch);
  for (std::int64_t w = 0; w < threads; ++w) m.workers.emplace_back([&m, last, epoch] { m.work(last, epoch); });
}

bool DataLoader::next(Batch& batch) {
  Impl& m = *impl_;
  CUDL_CHECK(m.epoch >= 0, "DataLoader::next: call start_epoch first (dataset '{}')", m.data.name);
  if (m.next_batch >= m.batches()) return false;
  std::int64_t b = m.next_batch;
  const Shard mine = m.shard(b);
  const std::int64_t begin = mine.begin - m.first_sample, count = mine.rows();
  batch.global_rows = m.rows(b);
  batch.row_offset = mine.begin - b * m.batch_size;
  if (m.resident) {
    m.resident->gather(mine.begin, mine.end, batch.images, batch.labels);
    batch.index = m.next_batch++;
    return true;
  }
  if (!m.per_batch) {
    batch.images = m.epoch_images.slice(begin, begin + count);
    batch.labels = m.epoch_labels.slice(begin, begin + count);
    batch.index = m.next_batch++;
    return true;
  }
  Impl::Slot& slot = m.slot_of(b);
  {
    std::unique_lock lock(m.mutex);
    m.changed.wait(lock, [&] { return slot.batch == b && slot.state == Impl::SlotState::full; });
    if (slot.error) {
      // The epoch cannot go on; the next start_epoch begins afresh.
      m.next_batch = m.batches();
      std::rethrow_exception(slot.error);
    }
  }
  batch.images = Tensor::empty(m.image_shape(count), *m.ctx);
  batch.labels = Tensor::empty({count}, *m.ctx, DType::i32);
  auto* images = static_cast<const float*>(slot.staging.data());
  auto* labels = reinterpret_cast<const std::int32_t*>(images + m.slot_rows * m.sample_values);
  copy_bytes(*m.ctx, batch.images.raw(), batch.images.device(), images, Device::cpu(), batch.images.nbytes());
  copy_bytes(*m.ctx, batch.labels.raw(), batch.labels.device(), labels, Device::cpu(), batch.labels.nbytes());
  slot.staging.mark_in_use(*m.ctx);
  {
    std::lock_guard lock(m.mutex);
    slot.state = Impl::SlotState::free;
    slot.batch = -1;
    --m.staged;
  }
  m.changed.notify_all();
  batch.index = m.next_batch++;
  return true;
}

}  // namespace cudl
