// The caching pool's bookkeeping, over host memory standing in for a device: every decision the
// pool makes (reuse, split, merge, release, retry) is visible in how often the raw memory is hit.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cudl/engine/caching_allocator.hpp"
#include "cudl/engine/error.hpp"

using namespace cudl;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * 1024;

// Shared between a test and the FakeMemory the allocator owns, so the test can still read it.
struct FakeLedger {
  std::size_t limit = SIZE_MAX;  // bytes the "device" has
  std::size_t in_use = 0;
  std::size_t mallocs = 0, frees = 0, failed_mallocs = 0, bad_frees = 0;
  std::vector<std::size_t> malloc_sizes;
  std::unordered_map<void*, std::size_t> live;
};

class FakeMemory final : public RawMemory {
 public:
  explicit FakeMemory(std::shared_ptr<FakeLedger> ledger) : ledger_(std::move(ledger)) {}
  ~FakeMemory() override {
    for (auto& [ptr, size] : ledger_->live) std::free(ptr);
  }
  void* try_malloc(std::size_t bytes) override {
    FakeLedger& l = *ledger_;
    if (bytes > l.limit - l.in_use) {
      ++l.failed_mallocs;
      return nullptr;
    }
    void* p = std::malloc(bytes);
    if (!p) return nullptr;
    l.live[p] = bytes;
    l.in_use += bytes;
    ++l.mallocs;
    l.malloc_sizes.push_back(bytes);
    return p;
  }
  void free(void* ptr) override {
    FakeLedger& l = *ledger_;
    auto it = l.live.find(ptr);
    if (it == l.live.end()) {
      ++l.bad_frees;
      return;
    }
    l.in_use -= it->second;
    l.live.erase(it);
    ++l.frees;
    std::free(ptr);
  }
  MemoryInfo memory_info() const override { return {ledger_->limit - ledger_->in_use, ledger_->limit}; }
  Device device() const override { return Device::cuda(0); }

 private:
  std::shared_ptr<FakeLedger> ledger_;
};

class CachingAllocatorTest : public ::testing::Test {
 protected:
  void make(std::size_t limit = SIZE_MAX) {
    ledger_ = std::make_shared<FakeLedger>();
    ledger_->limit = limit;
    pool_ = std::make_unique<CachingAllocator>(std::make_unique<FakeMemory>(ledger_));
  }
  void SetUp() override { make(); }

  char* alloc(std::size_t bytes, StreamId stream = 0) { return static_cast<char*>(pool_->allocate(bytes, stream)); }

  std::shared_ptr<FakeLedger> ledger_;
  std::unique_ptr<CachingAllocator> pool_;
};

TEST_F(CachingAllocatorTest, ReusesFreedBlockWithoutDeviceMalloc) {
  char* p = alloc(1000);
  pool_->deallocate(p);
  char* q = alloc(1000);
  EXPECT_EQ(q, p);
  EXPECT_EQ(ledger_->mallocs, 1u);
  AllocatorStats s = pool_->stats();
  EXPECT_EQ(s.device_mallocs, 1u);
  EXPECT_EQ(s.cache_hits, 1u);
  EXPECT_EQ(s.allocations, 2u);
  EXPECT_EQ(s.frees, 1u);
}

TEST_F(CachingAllocatorTest, RoundsRequestsTo512Bytes) {
  char* a = alloc(1);
  EXPECT_EQ(pool_->stats().allocated_bytes, 512u);
  char* b = alloc(0);  // still a real, distinct block
  ASSERT_NE(b, nullptr);
  EXPECT_NE(b, a);
  EXPECT_EQ(b, a + 512);  // carved right after `a` from the same segment
  EXPECT_EQ(pool_->stats().allocated_bytes, 1024u);
  char* c = alloc(513);
  EXPECT_EQ(c, b + 512);
  EXPECT_EQ(pool_->stats().allocated_bytes, 2048u);
  alloc(512);
  EXPECT_EQ(pool_->stats().allocated_bytes, 2560u);
  EXPECT_EQ(ledger_->mallocs, 1u);
}

TEST_F(CachingAllocatorTest, SmallAndLargePoolSegmentSizes) {
  alloc(1 * MiB);       // the largest small request: a 2 MiB small segment
  alloc(1 * MiB + 1);   // the smallest large request: a 20 MiB segment
  alloc(30 * MiB + 1);  // beyond 20 MiB: rounded up to 2 MiB
  EXPECT_EQ(ledger_->malloc_sizes, (std::vector<std::size_t>{2 * MiB, 20 * MiB, 32 * MiB}));
  EXPECT_EQ(pool_->segment_count(), 3u);
  EXPECT_EQ(pool_->stats().reserved_bytes, 54 * MiB);
  alloc(1 * MiB);  // the small segment's other half
  // The large segments still have free space, yet a small request does not take from them.
  alloc(4 * KiB);
  EXPECT_EQ(ledger_->malloc_sizes.back(), 2 * MiB);
  EXPECT_EQ(ledger_->mallocs, 4u);
}

TEST_F(CachingAllocatorTest, BestFitPicksSmallestSufficientBlock) {
  // Three free blocks of 64, 16 and 32 KiB, kept apart by allocated spacers so they cannot merge.
  char* a = alloc(64 * KiB);
  alloc(512);
  char* b = alloc(16 * KiB);
  alloc(512);
  char* c = alloc(32 * KiB);
  alloc(512);
  pool_->deallocate(a);
  pool_->deallocate(b);
  pool_->deallocate(c);
  EXPECT_EQ(alloc(20 * KiB), c);  // 32 KiB is the tightest fit; 64 KiB and the segment's tail are larger
  // What is left of c (12 KiB) is now the tightest fit for 10 KiB, ahead of b (16 KiB).
  EXPECT_EQ(alloc(10 * KiB), c + 20 * KiB);
  EXPECT_EQ(alloc(16 * KiB), b);
  EXPECT_EQ(ledger_->mallocs, 1u);
}

TEST_F(CachingAllocatorTest, SplitHalvesMergeBackIntoFullBlock) {
  char* p = alloc(512 * KiB);
  char* q = alloc(512 * KiB);
  char* tail = alloc(1 * MiB);  // the segment's last MiB, held so only p and q can serve 1 MiB
  ASSERT_EQ(q, p + 512 * KiB);
  ASSERT_EQ(tail, p + 1 * MiB);
  EXPECT_EQ(pool_->free_block_count(), 0u);
  pool_->deallocate(p);
  pool_->deallocate(q);
  EXPECT_EQ(pool_->free_block_count(), 1u);  // one 1 MiB block, not two halves
  EXPECT_EQ(alloc(1 * MiB), p);
  EXPECT_EQ(ledger_->mallocs, 1u);
  EXPECT_EQ(pool_->stats().allocated_bytes, 2 * MiB);
}

TEST_F(CachingAllocatorTest, LargeBlocksMergeAndServeTheirSum) {
  char* p = alloc(8 * MiB);
  char* q = alloc(8 * MiB);
  ASSERT_EQ(q, p + 8 * MiB);
  pool_->deallocate(q);
  pool_->deallocate(p);
  EXPECT_EQ(alloc(20 * MiB), p);  // the whole merged segment, no new device malloc
  EXPECT_EQ(ledger_->mallocs, 1u);
  EXPECT_EQ(pool_->stats().cache_hits, 2u);  // q from the split-off rest, then the merged whole
}

TEST_F(CachingAllocatorTest, LargeBlockSplitsOnlyWhenRemainderExceeds1MiB) {
  alloc(19 * MiB);  // 1 MiB left over in the 20 MiB segment: not worth a block of its own
  EXPECT_EQ(pool_->stats().allocated_bytes, 20 * MiB);
  EXPECT_EQ(pool_->free_block_count(), 0u);
  alloc(18 * MiB + 512 * KiB);  // 1.5 MiB left over: split off and cached
  EXPECT_EQ(pool_->stats().allocated_bytes, 20 * MiB + 18 * MiB + 512 * KiB);
  EXPECT_EQ(pool_->free_block_count(), 1u);
}

TEST_F(CachingAllocatorTest, BlockFreedOnOneStreamIsNotReusedOnAnother) {
  const StreamId stream_a = 1, stream_b = 2;
  char* p = alloc(4 * KiB, stream_a);
  pool_->deallocate(p);
  char* q = alloc(4 * KiB, stream_b);
  EXPECT_NE(q, p);
  EXPECT_EQ(ledger_->mallocs, 2u);  // stream B got a segment of its own
  EXPECT_EQ(pool_->stats().cache_hits, 0u);
  EXPECT_EQ(alloc(4 * KiB, stream_a), p);
  EXPECT_EQ(pool_->stats().cache_hits, 1u);
}

TEST_F(CachingAllocatorTest, RetiredStreamsBlocksServeAnotherStream) {
  const StreamId dead = 1, live = 2;
  char* p = alloc(4 * KiB, dead);
  char* big = alloc(8 * MiB, dead);
  pool_->deallocate(p);
  pool_->deallocate(big);
  pool_->retire_stream(dead);  // its context was destroyed after a stream sync
  EXPECT_EQ(pool_->free_block_count(), 2u);
  EXPECT_EQ(alloc(4 * KiB, live), p);
  EXPECT_EQ(alloc(8 * MiB, live), big);
  EXPECT_EQ(ledger_->mallocs, 2u);  // no new segments
  EXPECT_EQ(pool_->stats().cache_hits, 2u);
}

TEST_F(CachingAllocatorTest, BlockHeldPastItsStreamIsReusableOnceFreed) {
  const StreamId dead = 1, live = 2;
  char* p = alloc(4 * KiB, dead);  // a tensor that outlives its context
  pool_->retire_stream(dead);
  pool_->deallocate(p);
  EXPECT_EQ(alloc(4 * KiB, live), p);
  EXPECT_EQ(ledger_->mallocs, 1u);
}

TEST_F(CachingAllocatorTest, AdoptingARetiredBlockTakesItsWholeSegment) {
  const StreamId dead = 1, taker = 2, other = 3;
  char* p = alloc(4 * KiB, dead);
  char* q = alloc(4 * KiB, dead);  // same small segment, still held
  pool_->deallocate(p);
  pool_->retire_stream(dead);
  EXPECT_EQ(alloc(4 * KiB, taker), p);
  pool_->deallocate(q);  // joins the taker's stream with the rest of its segment
  char* r = alloc(4 * KiB, other);
  EXPECT_NE(r, q);
  EXPECT_EQ(ledger_->mallocs, 2u);  // the other stream found nothing retired left
  EXPECT_EQ(alloc(4 * KiB, taker), q);
  EXPECT_EQ(ledger_->mallocs, 2u);
}

TEST_F(CachingAllocatorTest, RetiringOneStreamLeavesTheOthersAlone) {
  const StreamId a = 1, b = 2, c = 3;
  char* p = alloc(4 * KiB, a);
  pool_->deallocate(p);
  pool_->retire_stream(b);  // nothing of b's in the pool
  EXPECT_NE(alloc(4 * KiB, c), p);
  EXPECT_EQ(ledger_->mallocs, 2u);
  EXPECT_EQ(alloc(4 * KiB, a), p);
}

TEST_F(CachingAllocatorTest, StatsTrackAllocatedReservedAndPeaks) {
  char* a = alloc(1000);
  char* b = alloc(3000);
  AllocatorStats s = pool_->stats();
  EXPECT_EQ(s.allocated_bytes, 1024u + 3072u);
  EXPECT_EQ(s.reserved_bytes, 2 * MiB);
  EXPECT_EQ(s.peak_allocated_bytes, 4096u);
  pool_->deallocate(a);
  s = pool_->stats();
  EXPECT_EQ(s.allocated_bytes, 3072u);
  EXPECT_EQ(s.peak_allocated_bytes, 4096u);
  pool_->reset_peak_stats();
  s = pool_->stats();
  EXPECT_EQ(s.peak_allocated_bytes, 3072u);
  EXPECT_EQ(s.peak_reserved_bytes, 2 * MiB);

  char* big = alloc(40 * MiB);
  pool_->deallocate(big);
  pool_->deallocate(b);
  pool_->empty_cache();
  s = pool_->stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.peak_allocated_bytes, 3072u + 40 * MiB);
  EXPECT_EQ(s.peak_reserved_bytes, 42 * MiB);
  EXPECT_EQ(s.allocations, 3u);
  EXPECT_EQ(s.frees, 3u);
  EXPECT_EQ(s.device_mallocs, 2u);
  EXPECT_EQ(s.device_frees, 2u);
}

TEST_F(CachingAllocatorTest, EmptyCacheReturnsWholeFreeSegmentsOnly) {
  char* small = alloc(4 * KiB);  // keeps its 2 MiB segment in use
  char* large = alloc(4 * MiB);
  pool_->deallocate(large);  // its 20 MiB segment is now entirely free
  ASSERT_EQ(pool_->segment_count(), 2u);
  pool_->empty_cache();
  EXPECT_EQ(pool_->segment_count(), 1u);
  EXPECT_EQ(ledger_->frees, 1u);
  EXPECT_EQ(ledger_->in_use, 2 * MiB);
  EXPECT_EQ(pool_->stats().reserved_bytes, 2 * MiB);
  EXPECT_EQ(pool_->free_block_count(), 1u);  // the small segment's free tail stays cached

  pool_->deallocate(small);
  pool_->empty_cache();
  EXPECT_EQ(pool_->segment_count(), 0u);
  EXPECT_EQ(pool_->free_block_count(), 0u);
  EXPECT_EQ(ledger_->in_use, 0u);
  EXPECT_EQ(pool_->stats().device_frees, 2u);
}

TEST_F(CachingAllocatorTest, FailedMallocReleasesCacheAndRetries) {
  make(30 * MiB);
  // 20 MiB cached on stream 1 leaves no room for stream 2's own 20 MiB segment, until released.
  pool_->deallocate(alloc(16 * MiB, 1));
  ASSERT_EQ(pool_->stats().reserved_bytes, 20 * MiB);
  char* p = alloc(16 * MiB, 2);
  EXPECT_NE(p, nullptr);
  AllocatorStats s = pool_->stats();
  EXPECT_EQ(s.oom_retries, 1u);
  EXPECT_EQ(s.device_frees, 1u);
  EXPECT_EQ(s.device_mallocs, 2u);
  EXPECT_EQ(s.reserved_bytes, 20 * MiB);
  EXPECT_EQ(ledger_->failed_mallocs, 1u);
}

// A CUDA graph's private pool while and after a stream records (engine/step_graph.cpp): the replays
// write into every segment the recording used, so none goes back, neither on empty_cache() nor to
// make room for a failed malloc (whose cudaFree would also come while the stream records). Released
// again, the pool behaves as before.
TEST_F(CachingAllocatorTest, HeldSegmentsStayThroughEmptyCacheAndAFailedMalloc) {
  make(30 * MiB);
  pool_->deallocate(alloc(16 * MiB, 1));  // a whole 20 MiB segment, cached and free
  pool_->hold_segments(true);
  pool_->empty_cache();
  EXPECT_EQ(pool_->segment_count(), 1u);
  EXPECT_EQ(ledger_->frees, 0u);
  std::string message;
  try {
    alloc(16 * MiB, 2);  // fits only if stream 1's segment is released
    ADD_FAILURE() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("the cache is held for a CUDA graph"), std::string::npos) << message;
  EXPECT_EQ(ledger_->frees, 0u);
  EXPECT_EQ(pool_->stats().oom_retries, 0u);
  EXPECT_EQ(pool_->segment_count(), 1u);
  EXPECT_EQ(pool_->stats().reserved_bytes, 20 * MiB);
  // The held segment itself still serves its stream.
  char* again = alloc(16 * MiB, 1);
  EXPECT_NE(again, nullptr);
  pool_->deallocate(again);

  pool_->hold_segments(false);
  EXPECT_NE(alloc(16 * MiB, 2), nullptr);  // released and retried, as FailedMallocReleasesCacheAndRetries
  EXPECT_EQ(ledger_->frees, 1u);
  EXPECT_EQ(pool_->stats().oom_retries, 1u);
}

TEST_F(CachingAllocatorTest, OutOfMemoryThrowsWithDiagnostics) {
  make(30 * MiB);
  // A 26 MiB segment (1.5 MiB of it cached, but only whole segments can be released): 4 MiB left.
  char* held = alloc(24 * MiB + 512 * KiB);
  std::string message;
  try {
    alloc(10 * MiB);
    ADD_FAILURE() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("10485760"), std::string::npos) << message;
  EXPECT_NE(message.find("10.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
  EXPECT_NE(message.find("allocated 24.50 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("reserved 26.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("free 4.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("total 30.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("[engine/caching_allocator.cpp:"), std::string::npos) << message;
  EXPECT_EQ(pool_->stats().oom_retries, 1u);
  EXPECT_EQ(ledger_->failed_mallocs, 2u);  // the first try and the retry

  // The failure left the pool consistent: what it holds can still be freed and reused.
  pool_->deallocate(held);
  EXPECT_EQ(alloc(24 * MiB), held);
  EXPECT_THROW(alloc(10 * MiB), Error);  // OutOfMemoryError is a cudl::Error
}

TEST_F(CachingAllocatorTest, DeallocateOfUnknownPointerThrows) {
  int not_from_pool = 0;
  try {
    pool_->deallocate(&not_from_pool);
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CachingAllocator::deallocate"), std::string::npos) << e.what();
  }
  char* p = alloc(1024);
  EXPECT_THROW(pool_->deallocate(p + 512), Error);  // inside a block is not a block
  pool_->deallocate(p);
  EXPECT_THROW(pool_->deallocate(p), Error);  // double free
  EXPECT_NO_THROW(pool_->deallocate(nullptr));
  EXPECT_EQ(pool_->stats().frees, 1u);
}

TEST_F(CachingAllocatorTest, DestructorReturnsEverySegment) {
  alloc(100);
  alloc(5 * MiB);
  pool_->deallocate(alloc(50 * MiB));
  ASSERT_EQ(ledger_->mallocs, 3u);
  pool_.reset();  // two blocks are still allocated: their segments go back all the same
  EXPECT_EQ(ledger_->frees, 3u);
  EXPECT_EQ(ledger_->in_use, 0u);
  EXPECT_EQ(ledger_->bad_frees, 0u);
}

TEST_F(CachingAllocatorTest, ConcurrentAllocateAndFreeKeepCountsConsistent) {
  auto worker = [this](StreamId stream) {
    for (int i = 0; i < 2000; ++i) {
      std::size_t bytes = static_cast<std::size_t>(512 + (i * 7919) % (64 * 1024));
      void* p = pool_->allocate(bytes, stream);
      static_cast<char*>(p)[bytes - 1] = 1;  // the memory is really ours
      pool_->deallocate(p);
    }
  };
  std::thread t1(worker, 1), t2(worker, 2);
  t1.join();
  t2.join();
  AllocatorStats s = pool_->stats();
  EXPECT_EQ(s.allocations, 4000u);
  EXPECT_EQ(s.frees, 4000u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(pool_->segment_count(), 2u);  // one small segment per stream sufficed
}

}  // namespace
