#pragma once
// The device-memory pool, after PyTorch's CUDA caching allocator (simplified): requests are
// rounded to 512 B; blocks up to 1 MiB come from 2 MiB segments (the small pool), larger ones
// from segments of at least 20 MiB or the rounded size (the large pool); a request takes the
// best-fitting free block of its pool and stream, splits off the rest, and freed neighbours
// merge back. Segments go back to RawMemory only on empty_cache() or when a malloc fails (then
// the cache is released and the malloc retried once before OutOfMemoryError). When a stream is
// retired (its context destroyed after a synchronise), its segments are tagged kRetiredStream;
// a request that finds no block of its own stream takes a retired one and adopts its segment.
#include <memory>

#include "cudl/engine/allocator.hpp"

namespace cudl {

struct CachingAllocatorConfig {
  std::size_t round_bytes = 512;
  std::size_t small_block_limit = 1u << 20;    // requests <= this use the small pool
  std::size_t small_segment_bytes = 2u << 20;  // small-pool segments are this size
  std::size_t large_segment_min_bytes = 20u << 20;
  std::size_t large_round_bytes = 2u << 20;  // large segments are rounded to this
  // A large block is split only when the rest exceeds max(small_block_limit, this); a smaller rest
  // stays inside the handed-out block as waste. 0 = the small_block_limit rule alone.
  std::size_t max_split_remainder_waste = 0;
};

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawMemory> memory, CachingAllocatorConfig config = {});
  ~CachingAllocator() override;

  void* allocate(std::size_t bytes, StreamId stream) override;
  void deallocate(void* ptr) override;
  AllocatorStats stats() const override;
  void reset_peak_stats() override;
  void empty_cache() override;
  void retire_stream(StreamId stream) override;
  Device device() const override;

  // While held, no segment goes back to RawMemory: empty_cache() does nothing, and a malloc that
  // fails throws OutOfMemoryError without first releasing the cache. For a CUDA graph's private pool
  // while a stream records and after (engine/step_graph.cpp): a segment the recording used, even one
  // whose blocks are all free again, is where every replay writes; and cudaFree is no call to make
  // while a stream records. The destructor still returns everything.
  void hold_segments(bool hold);

  // Introspection for tests: segments held and free blocks cached.
  std::size_t segment_count() const;
  std::size_t free_block_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cudl
