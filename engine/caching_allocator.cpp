// TEMPORARY placeholder until the pool lands: every call throws.
#include "engine/caching_allocator.hpp"

#include "engine/error.hpp"

namespace cudl {

struct CachingAllocator::Impl {};
CachingAllocator::CachingAllocator(std::unique_ptr<RawMemory>, CachingAllocatorConfig) {
  CUDL_THROW("CachingAllocator: not implemented yet");
}
CachingAllocator::~CachingAllocator() = default;
void* CachingAllocator::allocate(std::size_t, StreamId) { CUDL_THROW("CachingAllocator: not implemented yet"); }
void CachingAllocator::deallocate(void*) {}
AllocatorStats CachingAllocator::stats() const { return {}; }
void CachingAllocator::reset_peak_stats() {}
void CachingAllocator::empty_cache() {}
Device CachingAllocator::device() const { return Device::cpu(); }
std::size_t CachingAllocator::segment_count() const { return 0; }
std::size_t CachingAllocator::free_block_count() const { return 0; }

}  // namespace cudl
