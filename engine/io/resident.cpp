#include "cudl/engine/io/resident.hpp"

#include <span>

#include "cudl/engine/allocator.hpp"
#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/augment.hpp"
#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

ResidentData parse_resident_data(const std::string& name) {
  if (name == "auto") return ResidentData::automatic;
  if (name == "true") return ResidentData::on;
  if (name == "false") return ResidentData::off;
  CUDL_THROW("unknown resident-data setting '{}': expected auto, true or false", name);
}

std::string resident_data_name(ResidentData r) {
  switch (r) {
    case ResidentData::automatic:
      return "auto";
    case ResidentData::on:
      return "true";
    case ResidentData::off:
      return "false";
  }
  return "?";
}

bool resident_fits(std::size_t dataset_bytes, std::size_t free_bytes) { return dataset_bytes <= free_bytes / 4; }

namespace {

// The device's free memory, 0 when it cannot be read (then nothing fits automatically). Asked of
// this device alone: cuda_devices() makes every GPU current in turn, creating a context on each,
// so a data-parallel rank's loader would take memory on every other rank's GPU.
std::size_t free_device_memory(Device device) {
#if defined(CUDL_HAVE_CUDA)
  if (!device.is_cuda()) return 0;
  try {
    CudaDeviceGuard guard(device.index);
    std::size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) return free_bytes;
    cudaGetLastError();  // a failed query leaves its error for the next call to find: clear it
  } catch (const Error&) {
    // No such device (or none at all): nothing fits.
  }
#else
  (void)device;
#endif
  return 0;
}

}  // namespace

ResidentChoice choose_resident(const Dataset& data, Device device, const Augment& augment, ResidentData choice,
                               std::size_t whole_copy_limit) {
  const bool forced = choice == ResidentData::on;
  // What cannot live on the device: pixels that exist only once a worker decodes or augments them.
  const char* cannot = data.listed()       ? "a listed image folder is decoded batch by batch on the host"
                       : augment.enabled() ? "augmentation runs per sample on the host"
                                           : nullptr;
  if (cannot != nullptr) {
    CUDL_CHECK(!forced, "DataLoader: dataset '{}' cannot be device-resident (resident-data true): {}", data.name,
               cannot);
    return {false, fmt::format("batches staged on the host ({})", cannot)};
  }
  const std::size_t bytes = data.images.nbytes() + data.labels.nbytes();
  const std::string gathered =
      fmt::format("device-resident: {} copied to {} once, each batch gathered there", format_bytes(bytes), device);
  if (forced) return {true, gathered};
  if (choice == ResidentData::off) return {false, "batches staged on the host per epoch (resident-data false)"};
  if (!device.is_cuda()) return {false, "batches staged on the host per epoch (a CPU run)"};
  if (bytes > whole_copy_limit)
    return {false, fmt::format("batches staged on the host batch by batch ({} is over the loader's {} whole-copy "
                               "limit)",
                               format_bytes(bytes), format_bytes(whole_copy_limit))};
  const std::size_t free = free_device_memory(device);
  if (resident_fits(bytes, free)) return {true, fmt::format("{} (auto: under a quarter of its free memory)", gathered)};
  return {false, fmt::format("batches staged on the host per epoch ({} is over a quarter of {}'s {} free)",
                             format_bytes(bytes), device, format_bytes(free))};
}

ResidentSource::ResidentSource(const Dataset& data, Context& ctx) : ctx_(&ctx) {
  CUDL_CHECK(data.images.defined() && data.size() <= INT32_MAX,
             "DataLoader: dataset '{}' cannot be device-resident: it needs in-memory images and at most 2^31-1 "
             "samples (gather_rows takes i32 indices), it has {}",
             data.name, data.size());
  // On a CPU context the host copy is the device copy.
  images_ = ctx.device().is_cpu() ? data.images : data.images.to(ctx);
  labels_ = ctx.device().is_cpu() ? data.labels : data.labels.to(ctx);
}

void ResidentSource::start_epoch(const std::vector<std::int64_t>& order) {
  host_order_.resize(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) host_order_[i] = static_cast<std::int32_t>(order[i]);
  // The one copy of the epoch; a copy from pageable memory has read it when the call returns.
  order_ = Tensor::from_host(std::span<const std::int32_t>(host_order_),
                             {static_cast<std::int64_t>(host_order_.size())}, *ctx_);
}

void ResidentSource::gather(std::int64_t begin, std::int64_t end, Tensor& images, Tensor& labels) {
  Shape shape = images_.shape();
  shape[0] = end - begin;
  images = Tensor::empty(shape, *ctx_);
  labels = Tensor::empty({end - begin}, *ctx_, DType::i32);
  const Tensor index = order_.slice(begin, end);
  Backend& backend = ctx_->backend();
  backend.gather_rows(*ctx_, images_, index, images);
  backend.gather_rows(*ctx_, labels_, index, labels);
}

}  // namespace cudl
