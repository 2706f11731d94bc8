#include "cudl/engine/allocator.hpp"

#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "cudl/engine/caching_allocator.hpp"
#include "cudl/engine/error.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

namespace {
constexpr std::size_t kHostAlignment = 64;

std::size_t round_up(std::size_t n, std::size_t multiple) { return (n + multiple - 1) / multiple * multiple; }
}  // namespace

void* HostMemory::try_malloc(std::size_t bytes) {
  std::size_t rounded = round_up(bytes == 0 ? 1 : bytes, kHostAlignment);
  if (rounded > limit_ - in_use_) return nullptr;
  void* p = std::aligned_alloc(kHostAlignment, rounded);
  if (!p) return nullptr;
  in_use_ += rounded;
  sizes_[p] = rounded;
  return p;
}

void HostMemory::free(void* ptr) {
  auto it = sizes_.find(ptr);
  if (it != sizes_.end()) {
    in_use_ -= it->second;
    sizes_.erase(it);
  }
  std::free(ptr);
}

MemoryInfo HostMemory::memory_info() const {
  if (limit_ != SIZE_MAX) return {limit_ - in_use_, limit_};
  // No limit set: the machine's memory, so an out-of-memory message reads "free 1.2 GiB of total
  // 16 GiB", not 2^64 bytes ("16777216 TiB").
  const long page = ::sysconf(_SC_PAGESIZE), total = ::sysconf(_SC_PHYS_PAGES), avail = ::sysconf(_SC_AVPHYS_PAGES);
  if (page <= 0 || total <= 0 || avail < 0) return {SIZE_MAX - in_use_, SIZE_MAX};
  return {static_cast<std::size_t>(avail) * static_cast<std::size_t>(page),
          static_cast<std::size_t>(total) * static_cast<std::size_t>(page)};
}

struct DirectAllocator::State {
  std::mutex mutex;
  std::unordered_map<void*, std::size_t> sizes;
  AllocatorStats stats;
};

DirectAllocator::DirectAllocator(std::unique_ptr<RawMemory> memory)
    : memory_(std::move(memory)), state_(std::make_unique<State>()) {}

DirectAllocator::~DirectAllocator() {
  for (auto& [ptr, size] : state_->sizes) memory_->free(ptr);
}

void* DirectAllocator::allocate(std::size_t bytes, StreamId /*stream*/) {
  void* p = memory_->try_malloc(bytes);
  std::lock_guard lock(state_->mutex);
  auto& s = state_->stats;
  if (!p) {
    MemoryInfo info = memory_->memory_info();
    throw OutOfMemoryError(fmt::format(
        "out of memory on {}: requested {} ({} bytes); allocated {}, reserved {}; device free {} of total {}",
        memory_->device(), format_bytes(bytes), bytes, format_bytes(s.allocated_bytes), format_bytes(s.reserved_bytes),
        format_bytes(info.free_bytes), format_bytes(info.total_bytes)));
  }
  state_->sizes[p] = bytes;
  s.allocated_bytes += bytes;
  s.reserved_bytes += bytes;
  s.peak_allocated_bytes = std::max(s.peak_allocated_bytes, s.allocated_bytes);
  s.peak_reserved_bytes = std::max(s.peak_reserved_bytes, s.reserved_bytes);
  ++s.allocations;
  ++s.device_mallocs;
  return p;
}

void DirectAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->sizes.find(ptr);
    if (it == state_->sizes.end()) return;
    auto& s = state_->stats;
    s.allocated_bytes -= it->second;
    s.reserved_bytes -= it->second;
    ++s.frees;
    ++s.device_frees;
    state_->sizes.erase(it);
  }
  memory_->free(ptr);
}

AllocatorStats DirectAllocator::stats() const {
  std::lock_guard lock(state_->mutex);
  return state_->stats;
}

void DirectAllocator::reset_peak_stats() {
  std::lock_guard lock(state_->mutex);
  state_->stats.peak_allocated_bytes = state_->stats.allocated_bytes;
  state_->stats.peak_reserved_bytes = state_->stats.reserved_bytes;
}

bool caching_disabled() {
  const char* value = std::getenv("CUDL_NO_CACHING");
  return value && std::string_view(value) == "1";
}

std::shared_ptr<Allocator> allocator_for(Device device) {
  static std::mutex mutex;
  static std::shared_ptr<Allocator> host;
  static std::unordered_map<int, std::shared_ptr<Allocator>> cuda;
  std::lock_guard lock(mutex);
  if (device.is_cpu()) {
    // Host tensors come from the same caching pool as device ones: a training step frees and
    // re-requests the same large activation buffers, and malloc would hand each back to the OS
    // (mmap/munmap and page faults every step).
    if (!host)
      host = caching_disabled()
                 ? std::shared_ptr<Allocator>(std::make_shared<DirectAllocator>(std::make_unique<HostMemory>()))
                 : std::make_shared<CachingAllocator>(std::make_unique<HostMemory>());
    return host;
  }
#if defined(CUDL_HAVE_CUDA)
  auto& slot = cuda[device.index];
  if (!slot) slot = make_cuda_allocator(device.index);
  return slot;
#else
  CUDL_THROW("allocator: {} requested but cudl was built without the CUDA backend (-DCUDL_CUDA=OFF)", device);
#endif
}

std::string format_bytes(std::size_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", value, kUnits[unit]);
}

}  // namespace cudl
