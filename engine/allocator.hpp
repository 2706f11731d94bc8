#pragma once
// The memory interfaces. `RawMemory` is where bytes really come from (cudaMalloc, or host malloc
// in tests); `Allocator` is what tensors draw from. The caching pool sits between the two as an
// Allocator over a RawMemory, so all of its bookkeeping is plain host code testable on the CPU.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "cudl/engine/device.hpp"

namespace cudl {

// Identifies the stream an allocation is used on; blocks freed on one stream are only reused on
// the same stream, so no cross-stream synchronisation is ever needed inside the pool.
using StreamId = std::uintptr_t;

// Not a stream: the pool's tag for blocks whose stream was retired (destroyed after a
// synchronise), so no work is pending on them and any stream may take them. No CUDA stream
// handle has this value (handles are pointers; the special ones are 0, 1 and 2).
inline constexpr StreamId kRetiredStream = ~StreamId{0};

struct MemoryInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};

class RawMemory {
 public:
  virtual ~RawMemory() = default;
  // Returns nullptr when the memory is exhausted (never throws for that case).
  virtual void* try_malloc(std::size_t bytes) = 0;
  virtual void free(void* ptr) = 0;
  virtual MemoryInfo memory_info() const = 0;
  virtual Device device() const = 0;
};

struct AllocatorStats {
  std::size_t allocated_bytes = 0;       // handed out to tensors right now (rounded sizes)
  std::size_t reserved_bytes = 0;        // obtained from RawMemory and not yet returned
  std::size_t peak_allocated_bytes = 0;  // high-water mark of allocated_bytes
  std::size_t peak_reserved_bytes = 0;   // high-water mark of reserved_bytes
  std::uint64_t allocations = 0;         // allocate() calls served
  std::uint64_t frees = 0;               // deallocate() calls
  std::uint64_t cache_hits = 0;          // allocations served from a cached block
  std::uint64_t device_mallocs = 0;      // RawMemory::try_malloc calls that succeeded
  std::uint64_t device_frees = 0;        // RawMemory::free calls
  std::uint64_t oom_retries = 0;         // times the cache was released to retry a failed malloc
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Throws OutOfMemoryError (naming the request, allocated, reserved, free and total) on failure.
  virtual void* allocate(std::size_t bytes, StreamId stream) = 0;
  virtual void deallocate(void* ptr) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak_stats() = 0;
  // Returns cached, unused blocks to RawMemory.
  virtual void empty_cache() = 0;
  // `stream` is gone and everything queued on it has finished (the caller synchronised it): the
  // blocks tagged with it, cached or still held by tensors that outlive it, may serve any stream
  // from now on. Without this, a pool that keys reuse by stream never reuses them again.
  virtual void retire_stream(StreamId /*stream*/) {}
  virtual Device device() const = 0;
};

// 64-byte aligned host memory; the CPU backend's allocator (no caching: malloc is fast enough).
class HostMemory final : public RawMemory {
 public:
  explicit HostMemory(std::size_t limit_bytes = SIZE_MAX) : limit_(limit_bytes) {}
  void* try_malloc(std::size_t bytes) override;
  void free(void* ptr) override;
  MemoryInfo memory_info() const override;
  Device device() const override { return Device::cpu(); }

 private:
  std::size_t limit_;
  std::size_t in_use_ = 0;
  std::unordered_map<void*, std::size_t> sizes_;
};

// An Allocator straight over a RawMemory: no caching. Used for the CPU and when
// CUDL_NO_CACHING=1 is set (so compute-sanitizer sees every allocation).
class DirectAllocator final : public Allocator {
 public:
  explicit DirectAllocator(std::unique_ptr<RawMemory> memory);
  ~DirectAllocator() override;
  void* allocate(std::size_t bytes, StreamId stream) override;
  void deallocate(void* ptr) override;
  AllocatorStats stats() const override;
  void reset_peak_stats() override;
  void empty_cache() override {}
  Device device() const override { return memory_->device(); }

 private:
  struct State;
  std::unique_ptr<RawMemory> memory_;
  std::unique_ptr<State> state_;
};

// The process-wide allocator of a device: the host allocator for the CPU; for cuda:N the caching
// pool over cudaMalloc (or a DirectAllocator when CUDL_NO_CACHING=1). Created on first use.
std::shared_ptr<Allocator> allocator_for(Device device);

// True when CUDL_NO_CACHING=1: every tensor is then its own malloc (for compute-sanitizer/valgrind).
bool caching_disabled();

// Formats a byte count for people: "1.50 GiB".
std::string format_bytes(std::size_t bytes);

}  // namespace cudl
