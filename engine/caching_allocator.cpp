#include "cudl/engine/caching_allocator.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <unordered_map>

#include "cudl/engine/error.hpp"

namespace cudl {

namespace {

std::size_t round_up(std::size_t n, std::size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// A contiguous piece of one segment. The blocks of a segment form a doubly linked list in address
// order, so a freed block finds its neighbours in O(1) for merging. Every block of a segment keeps
// the segment's pool and stream: both are set when the segment is created and splits inherit them;
// the stream changes only for the whole segment at once (retire_stream, and adoption of a retired
// segment in allocate).
struct Block {
  char* ptr = nullptr;
  std::size_t size = 0;
  StreamId stream = 0;
  bool small = false;
  bool allocated = false;
  Block* prev = nullptr;
  Block* next = nullptr;

  bool whole_segment() const { return prev == nullptr && next == nullptr; }
};

// Best fit within a stream: lower_bound on (stream, size, nullptr) lands on the smallest free
// block of that stream that is large enough; the pointer breaks ties so equal sizes can coexist.
struct BlockLess {
  bool operator()(const Block* a, const Block* b) const {
    if (a->stream != b->stream) return a->stream < b->stream;
    if (a->size != b->size) return a->size < b->size;
    return std::less<const char*>()(a->ptr, b->ptr);
  }
};

using FreeSet = std::set<Block*, BlockLess>;

}  // namespace

struct CachingAllocator::Impl {
  std::unique_ptr<RawMemory> memory;
  CachingAllocatorConfig config;

  mutable std::mutex mutex;
  // Every block, allocated or cached, by its address; owns the Block records.
  std::unordered_map<const void*, std::unique_ptr<Block>> blocks;
  // Segments obtained from RawMemory: base address -> size.
  std::unordered_map<void*, std::size_t> segments;
  FreeSet small_free;
  FreeSet large_free;
  AllocatorStats stats;
  bool hold = false;  // hold_segments(): nothing goes back to RawMemory

  FreeSet& pool_of(const Block& b) { return b.small ? small_free : large_free; }

  std::size_t segment_size_for(std::size_t size, bool small) const {
    if (small) return std::max(config.small_segment_bytes, size);
    return std::max(config.large_segment_min_bytes, round_up(size, config.large_round_bytes));
  }

  bool should_split(const Block& b, std::size_t size) const {
    std::size_t remainder = b.size - size;
    if (b.small) return remainder >= config.round_bytes;
    // A large remainder of 1 MiB or less would only ever serve small requests, which never come
    // from the large pool; leave it inside the block rather than cache an unusable sliver.
    return remainder > std::max(config.small_block_limit, config.max_split_remainder_waste);
  }

  Block* take_free_block(std::size_t size, StreamId stream, bool small) {
    FreeSet& pool = small ? small_free : large_free;
    Block probe;
    probe.stream = stream;
    probe.size = size;
    auto it = pool.lower_bound(&probe);
    if (it == pool.end() || (*it)->stream != stream) return nullptr;
    Block* b = *it;
    pool.erase(it);
    return b;
  }

  Block* new_segment(std::size_t segment_bytes, StreamId stream, bool small) {
    void* raw = memory->try_malloc(segment_bytes);
    if (!raw) return nullptr;
    auto owned = std::make_unique<Block>();
    Block* b = owned.get();
    b->ptr = static_cast<char*>(raw);
    b->size = segment_bytes;
    b->stream = stream;
    b->small = small;
    try {
      segments.emplace(raw, segment_bytes);
      blocks.emplace(raw, std::move(owned));
    } catch (...) {
      segments.erase(raw);
      memory->free(raw);
      throw;
    }
    ++stats.device_mallocs;
    stats.reserved_bytes += segment_bytes;
    stats.peak_reserved_bytes = std::max(stats.peak_reserved_bytes, stats.reserved_bytes);
    return b;
  }

  void split(Block* b, std::size_t size) {
    auto owned = std::make_unique<Block>();
    Block* rest = owned.get();
    rest->ptr = b->ptr + size;
    rest->size = b->size - size;
    rest->stream = b->stream;
    rest->small = b->small;
    rest->prev = b;
    rest->next = b->next;
    blocks.emplace(rest->ptr, std::move(owned));
    if (b->next) b->next->prev = rest;
    b->next = rest;
    b->size = size;
    pool_of(*rest).insert(rest);
  }

  // Tags every block of b's segment with `stream` (the free ones move within their free set, whose
  // order is keyed by stream). Only for a segment of a retired stream, which has no pending work.
  void retag_segment(Block* b, StreamId stream) {
    Block* head = b;
    while (head->prev) head = head->prev;
    for (Block* x = head; x; x = x->next) {
      if (x->stream == stream) continue;
      // A free block other than b sits in its free set (b itself was taken out by the caller).
      bool cached = !x->allocated && x != b;
      if (cached) pool_of(*x).erase(x);
      x->stream = stream;
      if (cached) pool_of(*x).insert(x);
    }
  }

  // Folds b->next (free, and already out of its free set) into b and destroys its record.
  void absorb_next(Block* b) {
    Block* next = b->next;
    b->size += next->size;
    b->next = next->next;
    if (b->next) b->next->prev = b;
    blocks.erase(next->ptr);
  }

  // Returns every cached block that spans a whole segment to RawMemory. Split segments stay:
  // part of them is still in use.
  void release_cached_segments() {
    for (FreeSet* pool : {&small_free, &large_free}) {
      for (auto it = pool->begin(); it != pool->end();) {
        Block* b = *it;
        if (!b->whole_segment()) {
          ++it;
          continue;
        }
        it = pool->erase(it);
        char* ptr = b->ptr;
        std::size_t size = b->size;
        segments.erase(ptr);
        blocks.erase(ptr);
        memory->free(ptr);
        ++stats.device_frees;
        stats.reserved_bytes -= size;
      }
    }
  }

  [[noreturn]] void throw_out_of_memory(std::size_t requested, std::size_t segment_bytes) const {
    MemoryInfo info = memory->memory_info();
    throw OutOfMemoryError(detail::with_location(
        fmt::format("out of memory on {}: requested {} ({} bytes, as a {} segment); allocated {}, reserved {} "
                    "({}); device free {} of total {}",
                    memory->device(), format_bytes(requested), requested, format_bytes(segment_bytes),
                    format_bytes(stats.allocated_bytes), format_bytes(stats.reserved_bytes),
                    hold ? "the cache is held for a CUDA graph, not released" : "after releasing the cache",
                    format_bytes(info.free_bytes), format_bytes(info.total_bytes)),
        __FILE__, __LINE__));
  }
};

CachingAllocator::CachingAllocator(std::unique_ptr<RawMemory> memory, CachingAllocatorConfig config)
    : impl_(std::make_unique<Impl>()) {
  CUDL_CHECK(memory, "CachingAllocator: no RawMemory given");
  CUDL_CHECK(config.round_bytes > 0 && config.large_round_bytes > 0,
             "CachingAllocator: rounding must be positive (round_bytes={}, large_round_bytes={})", config.round_bytes,
             config.large_round_bytes);
  CUDL_CHECK(config.small_block_limit <= config.small_segment_bytes,
             "CachingAllocator: small_block_limit {} exceeds small_segment_bytes {}", config.small_block_limit,
             config.small_segment_bytes);
  impl_->memory = std::move(memory);
  impl_->config = config;
}

CachingAllocator::~CachingAllocator() {
  // Blocks still handed out now belong to tensors that outlive the pool (static teardown order);
  // their memory goes with the segments. RawMemory::free must not throw, but a destructor can't
  // let it escape either.
  for (auto& [ptr, size] : impl_->segments) {
    try {
      impl_->memory->free(ptr);
    } catch (...) {
    }
  }
}

void* CachingAllocator::allocate(std::size_t bytes, StreamId stream) {
  Impl& m = *impl_;
  // A zero-byte request still gets its own block, so every live allocation has a distinct address.
  std::size_t size = round_up(std::max<std::size_t>(bytes, 1), m.config.round_bytes);
  CUDL_CHECK(size >= bytes && size <= SIZE_MAX - m.config.large_round_bytes,
             "CachingAllocator::allocate: {} bytes is beyond any device", bytes);
  bool small = size <= m.config.small_block_limit;

  std::lock_guard lock(m.mutex);
  Block* b = m.take_free_block(size, stream, small);
  if (!b && stream != kRetiredStream) {
    // A block of a destroyed context's stream: idle, so this stream may have its whole segment.
    b = m.take_free_block(size, kRetiredStream, small);
    if (b) m.retag_segment(b, stream);
  }
  if (b) {
    ++m.stats.cache_hits;
  } else {
    std::size_t segment_bytes = m.segment_size_for(size, small);
    b = m.new_segment(segment_bytes, stream, small);
    if (!b) {
      if (m.hold) m.throw_out_of_memory(bytes, segment_bytes);
      // Cached segments of other sizes (or other streams) may be what stands in the way.
      m.release_cached_segments();
      ++m.stats.oom_retries;
      b = m.new_segment(segment_bytes, stream, small);
      if (!b) m.throw_out_of_memory(bytes, segment_bytes);
    }
  }
  try {
    if (m.should_split(*b, size)) m.split(b, size);
  } catch (...) {
    m.pool_of(*b).insert(b);  // keep the block cached rather than lose track of it
    throw;
  }
  b->allocated = true;
  ++m.stats.allocations;
  m.stats.allocated_bytes += b->size;
  m.stats.peak_allocated_bytes = std::max(m.stats.peak_allocated_bytes, m.stats.allocated_bytes);
  return b->ptr;
}

void CachingAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  Impl& m = *impl_;
  std::lock_guard lock(m.mutex);
  auto it = m.blocks.find(ptr);
  CUDL_CHECK(it != m.blocks.end() && it->second->allocated,
             "CachingAllocator::deallocate: {} on {} was not allocated by this pool or was already freed", ptr,
             m.memory->device());
  Block* b = it->second.get();
  b->allocated = false;
  m.stats.allocated_bytes -= b->size;
  ++m.stats.frees;
  FreeSet& pool = m.pool_of(*b);
  if (b->prev && !b->prev->allocated) {
    Block* prev = b->prev;
    pool.erase(prev);
    m.absorb_next(prev);  // destroys b's record
    b = prev;
  }
  if (b->next && !b->next->allocated) {
    pool.erase(b->next);
    m.absorb_next(b);
  }
  pool.insert(b);
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->stats;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard lock(impl_->mutex);
  impl_->stats.peak_allocated_bytes = impl_->stats.allocated_bytes;
  impl_->stats.peak_reserved_bytes = impl_->stats.reserved_bytes;
}

void CachingAllocator::empty_cache() {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->hold) impl_->release_cached_segments();
}

void CachingAllocator::hold_segments(bool hold) {
  std::lock_guard lock(impl_->mutex);
  impl_->hold = hold;
}

void CachingAllocator::retire_stream(StreamId stream) {
  if (stream == kRetiredStream) return;
  Impl& m = *impl_;
  std::lock_guard lock(m.mutex);
  // Segments are never shared between streams, so re-tagging block by block keeps every segment
  // on one stream. Blocks still held by tensors are re-tagged too: freed later, they join the
  // retired pool rather than the dead stream's, which nothing would ever ask for again.
  for (auto& [ptr, owned] : m.blocks) {
    Block* b = owned.get();
    if (b->stream != stream) continue;
    bool cached = !b->allocated;
    if (cached) m.pool_of(*b).erase(b);
    b->stream = kRetiredStream;
    if (cached) m.pool_of(*b).insert(b);
  }
}

Device CachingAllocator::device() const { return impl_->memory->device(); }

std::size_t CachingAllocator::segment_count() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->segments.size();
}

std::size_t CachingAllocator::free_block_count() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->small_free.size() + impl_->large_free.size();
}

}  // namespace cudl
