#include "cudl/engine/io/loader.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>

#include "cudl/engine/context.hpp"
#include "cudl/engine/cuda/pinned_memory.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/philox.hpp"

namespace cudl {

namespace {

// Separate Philox streams for the permutation and the augmentations, so neither shifts the other.
constexpr std::uint32_t kShuffleStream = 0x5348;  // "SH"
constexpr std::uint32_t kAugmentStream = 0x4147;  // "AG"

philox::Uint4 draw(std::uint64_t seed, std::int64_t epoch, std::uint32_t stream, std::int64_t index) {
  auto e = static_cast<std::uint64_t>(epoch);
  auto i = static_cast<std::uint64_t>(index);
  philox::Uint4 counter{static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32),
                        static_cast<std::uint32_t>(e), stream | (static_cast<std::uint32_t>(e >> 32) << 16)};
  return philox::philox4x32_10(counter, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

// Copies samples order[begin, end) of the dataset into images/labels (host memory), augmenting
// each when asked.
void gather(const Dataset& data, const std::vector<std::int64_t>& order, std::int64_t begin, std::int64_t end,
            float* images, std::int32_t* labels, const Augment* augment, std::uint64_t seed, std::int64_t epoch) {
  const Shape& s = data.images.shape();
  std::int64_t values = s[1] * s[2] * s[3];
  const float* src = data.images.data<float>();
  const std::int32_t* src_labels = data.labels.data<std::int32_t>();
  for (std::int64_t k = 0; k < end - begin; ++k) {
    std::int64_t sample = order[static_cast<std::size_t>(begin + k)];
    const float* in = src + sample * values;
    float* out = images + k * values;
    if (augment) {
      augment_sample(in, out, s[1], s[2], s[3], *augment, seed, epoch, sample);
    } else {
      std::memcpy(out, in, static_cast<std::size_t>(values) * sizeof(float));
    }
    labels[k] = src_labels[sample];
  }
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
    philox::Uint4 r = draw(seed, epoch, kShuffleStream, i);
    // 64 random bits modulo i+1: the bias is below 2^-30 for any dataset that fits in memory.
    std::uint64_t bits = (static_cast<std::uint64_t>(r.x) << 32) | r.y;
    auto j = static_cast<std::int64_t>(bits % static_cast<std::uint64_t>(i + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

void augment_sample(const float* src, float* dst, std::int64_t channels, std::int64_t height, std::int64_t width,
                    const Augment& augment, std::uint64_t seed, std::int64_t epoch, std::int64_t sample) {
  philox::Uint4 r = draw(seed, epoch, kAugmentStream, sample);
  std::int64_t dx = 0, dy = 0;
  if (augment.random_crop && augment.crop_padding > 0) {
    std::uint32_t span = 2u * static_cast<std::uint32_t>(augment.crop_padding) + 1u;
    dx = static_cast<std::int64_t>(r.x % span) - augment.crop_padding;
    dy = static_cast<std::int64_t>(r.y % span) - augment.crop_padding;
  }
  bool flip = augment.hflip && (r.z & 1u) != 0;
  // out[y][x] = padded-and-cropped input at (y + dy, x' + dx), x' = x or its mirror; zero padding.
  for (std::int64_t c = 0; c < channels; ++c) {
    const float* in = src + c * height * width;
    float* out = dst + c * height * width;
    for (std::int64_t y = 0; y < height; ++y) {
      std::int64_t sy = y + dy;
      for (std::int64_t x = 0; x < width; ++x) {
        std::int64_t sx = (flip ? width - 1 - x : x) + dx;
        bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
        out[y * width + x] = inside ? in[sy * width + sx] : 0.0f;
      }
    }
  }
}

struct DataLoader::Impl {
  Dataset data;
  Context* ctx = nullptr;
  std::int64_t batch_size = 0;
  bool shuffle = false;
  std::uint64_t seed = 0;
  Augment augment;
  std::int64_t n = 0, sample_values = 0;
  bool per_batch = false;      // staging batch by batch (augmenting, or a large epoch)
  std::int64_t slot_rows = 0;  // images a staging slot holds; its labels follow them

  std::vector<std::int64_t> order;
  std::int64_t epoch = -1;
  std::int64_t next_batch = 0;

  // Without augmentation: the epoch's samples from batch `first_sample / batch_size` on, on the device.
  Tensor epoch_images, epoch_labels;
  std::int64_t first_sample = 0;
  HostStaging epoch_staging;  // CUDA only: reused across epochs

  // Per batch: two host staging slots filled by the producer thread.
  struct Slot {
    HostStaging staging;  // images, then labels
    std::int64_t batch = -1;
    bool full = false;
  };
  Slot slots[2];
  std::thread producer;
  std::mutex mutex;
  std::condition_variable changed;
  bool stop = false;
  std::exception_ptr error;

  std::int64_t batches() const { return (n + batch_size - 1) / batch_size; }
  std::int64_t rows(std::int64_t b) const { return std::min(batch_size, n - b * batch_size); }
  Shape image_shape(std::int64_t count) const {
    const Shape& s = data.images.shape();
    return Shape{count, s[1], s[2], s[3]};
  }

  void stop_producer() {
    if (producer.joinable()) {
      {
        std::lock_guard lock(mutex);
        stop = true;
      }
      changed.notify_all();
      producer.join();
    }
    stop = false;
    error = nullptr;
    for (Slot& slot : slots) slot = Slot{std::move(slot.staging), -1, false};
  }

  void produce(std::int64_t first, std::int64_t last, std::int64_t ep) {
    try {
      for (std::int64_t b = first; b < last; ++b) {
        Slot& slot = slots[b % 2];
        {
          std::unique_lock lock(mutex);
          changed.wait(lock, [&] { return stop || !slot.full; });
          if (stop) return;
        }
        // The slot's previous batch may still be on its way to the device.
        slot.staging.wait_until_free();
        auto* images = static_cast<float*>(slot.staging.data());
        auto* labels = reinterpret_cast<std::int32_t*>(images + slot_rows * sample_values);
        gather(data, order, b * batch_size, b * batch_size + rows(b), images, labels,
               augment.enabled() ? &augment : nullptr, seed, ep);
        {
          std::lock_guard lock(mutex);
          slot.batch = b;
          slot.full = true;
        }
        changed.notify_all();
      }
    } catch (...) {
      {
        std::lock_guard lock(mutex);
        error = std::current_exception();
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
    : impl_(std::make_unique<Impl>()) {
  const std::string& name = dataset.name;
  CUDL_CHECK(dataset.images.defined() && dataset.labels.defined(), "DataLoader: dataset '{}' has no tensors", name);
  CUDL_CHECK(dataset.images.rank() == 4 && dataset.images.dtype() == DType::f32,
             "DataLoader: dataset '{}' images must be [N,C,H,W] f32, got {} {}", name,
             dtype_name(dataset.images.dtype()), dataset.images.shape());
  CUDL_CHECK(dataset.labels.rank() == 1 && dataset.labels.dtype() == DType::i32 &&
                 dataset.labels.dim(0) == dataset.images.dim(0),
             "DataLoader: dataset '{}' labels must be [N] i32 with N = {}, got {} {}", name, dataset.images.dim(0),
             dtype_name(dataset.labels.dtype()), dataset.labels.shape());
  CUDL_CHECK(dataset.images.device().is_cpu() && dataset.labels.device().is_cpu(),
             "DataLoader: dataset '{}' must be on the CPU, its images are on {}", name, dataset.images.device());
  CUDL_CHECK(dataset.images.dim(0) > 0, "DataLoader: dataset '{}' is empty", name);
  CUDL_CHECK(batch_size > 0, "DataLoader: batch size {} must be positive (dataset '{}')", batch_size, name);
  CUDL_CHECK(!augment.random_crop || augment.crop_padding >= 0, "DataLoader: crop padding {} must be >= 0",
             augment.crop_padding);
  Impl& m = *impl_;
  m.data = dataset;
  m.ctx = &ctx;
  m.batch_size = batch_size;
  m.shuffle = shuffle;
  m.seed = seed;
  m.augment = augment;
  m.n = dataset.images.dim(0);
  m.sample_values = dataset.images.numel() / m.n;
  // Images (f32) and labels (i32) of the whole dataset: what one epoch stages.
  const auto epoch_bytes = static_cast<std::size_t>(m.n) * static_cast<std::size_t>(m.sample_values + 1) * 4;
  m.per_batch = loader_stages_per_batch(augment, ctx.device(), shuffle, epoch_bytes, whole_epoch_limit);
  if (m.per_batch) {
    m.slot_rows = std::min(batch_size, m.n);
    std::size_t slot_bytes = static_cast<std::size_t>(m.slot_rows * (m.sample_values + 1)) * 4;
    for (Impl::Slot& slot : m.slots) slot.staging = HostStaging(slot_bytes, ctx);
  }
}

DataLoader::~DataLoader() { impl_->stop_producer(); }

std::int64_t DataLoader::size() const { return impl_->n; }
std::int64_t DataLoader::batch_size() const { return impl_->batch_size; }
std::int64_t DataLoader::batches_per_epoch() const { return impl_->batches(); }
bool DataLoader::stages_per_batch() const { return impl_->per_batch; }
const std::vector<std::int64_t>& DataLoader::order() const { return impl_->order; }

void DataLoader::start_epoch(std::int64_t epoch, std::int64_t first_batch) {
  Impl& m = *impl_;
  CUDL_CHECK(epoch >= 0, "DataLoader::start_epoch: epoch {} must be >= 0 (dataset '{}')", epoch, m.data.name);
  CUDL_CHECK(first_batch >= 0 && first_batch <= m.batches(),
             "DataLoader::start_epoch: first batch {} is outside 0..{} (dataset '{}', {} samples, batch size {})",
             first_batch, m.batches(), m.data.name, m.n, m.batch_size);
  m.stop_producer();
  m.epoch = epoch;
  m.next_batch = first_batch;
  if (m.shuffle) {
    m.order = shuffled_order(m.n, m.seed, epoch);
  } else {
    m.order.resize(static_cast<std::size_t>(m.n));
    std::iota(m.order.begin(), m.order.end(), std::int64_t{0});
  }
  if (!m.per_batch) {
    m.load_epoch_to_device(first_batch);
    return;
  }
  m.producer = std::thread([&m, first_batch, epoch] { m.produce(first_batch, m.batches(), epoch); });
}

bool DataLoader::next(Batch& batch) {
  Impl& m = *impl_;
  CUDL_CHECK(m.epoch >= 0, "DataLoader::next: call start_epoch first (dataset '{}')", m.data.name);
  if (m.next_batch >= m.batches()) return false;
  std::int64_t b = m.next_batch;
  std::int64_t begin = b * m.batch_size - m.first_sample, count = m.rows(b);
  if (!m.per_batch) {
    batch.images = m.epoch_images.slice(begin, begin + count);
    batch.labels = m.epoch_labels.slice(begin, begin + count);
    batch.index = m.next_batch++;
    return true;
  }
  Impl::Slot& slot = m.slots[b % 2];
  {
    std::unique_lock lock(m.mutex);
    m.changed.wait(lock, [&] { return m.error || (slot.full && slot.batch == b); });
    if (m.error) std::rethrow_exception(m.error);
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
    slot.full = false;
  }
  m.changed.notify_all();
  batch.index = m.next_batch++;
  return true;
}

}  // namespace cudl
