// The engine's CUDA plumbing (engine/cuda/cuda_context.cpp): the device fault word, copies asked
// of a CPU context, reuse of a destroyed context's pool blocks, the current-device guard and
// CUDL_SYNC_CHECK. The message and no-device checks run in any CUDA build; the rest skip visibly
// without a device.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "cudl/engine/allocator.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/op_kinds.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/test_util.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

using namespace cudl;
using namespace cudl::testing;

namespace {

bool have_device() { return cuda_compiled() && cuda_device_count() > 0; }

#if defined(CUDL_HAVE_CUDA)
// What a kernel does when it meets a bad label: write the code into the context's fault word,
// ordered on the context's stream.
void raise_fault_on_device(Context& ctx, DeviceFault fault) {
  static int code = 0;  // read by the async copy before the next sync below; static, so it outlives it
  code = static_cast<int>(fault);
  CudaResources& r = cuda_resources(ctx);
  ASSERT_EQ(cudaMemcpyAsync(device_fault_word(ctx), &code, sizeof(int), cudaMemcpyHostToDevice, r.stream), cudaSuccess);
}
#endif

}  // namespace

TEST(CudaEngine, DeviceFaultMessagesNameTheFaultAndTheDevice) {
#if defined(CUDL_HAVE_CUDA)
  std::string message = device_fault_message(static_cast<int>(DeviceFault::label_out_of_range), 1);
  EXPECT_TRUE(contains(message, "softmax_cross_entropy")) << message;
  EXPECT_TRUE(contains(message, "a label was outside [0, K) on cuda:1")) << message;
  EXPECT_TRUE(contains(message, "detected on the device")) << message;
  message = device_fault_message(77, 0);
  EXPECT_TRUE(contains(message, "device fault code 77 on cuda:0")) << message;
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaEngine, SyncCheckIsOffByDefaultAndThenDoesNothing) {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_detail::sync_check_enabled()) GTEST_SKIP() << "CUDL_SYNC_CHECK=1 is set for this run";
  // Off: no device call at all, so it is free and works without a device.
  EXPECT_NO_THROW(cuda_detail::sync_check("some_kernel", __FILE__, __LINE__));
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaEngine, DeviceFaultThrowsAtTheNextReadThenClears) {
#if defined(CUDL_HAVE_CUDA)
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Context ctx{Device::cuda(0)};
  Tensor x = Tensor::full({4}, 2.0f, ctx);
  EXPECT_EQ(x.to_vector(ctx), std::vector<float>(4, 2.0f)) << "a fresh context has a clear word";
  raise_fault_on_device(ctx, DeviceFault::label_out_of_range);
  std::string message = error_message([&] { x.to_vector(ctx); });
  EXPECT_TRUE(contains(message, "a label was outside [0, K) on cuda:0")) << message;
  EXPECT_EQ(x.to_vector(ctx), std::vector<float>(4, 2.0f)) << "reported once, then cleared";
  raise_fault_on_device(ctx, DeviceFault::label_out_of_range);
  message = error_message([&] { ctx.synchronize(); });
  EXPECT_TRUE(contains(message, "a label was outside [0, K)")) << message;
  EXPECT_NO_THROW(ctx.synchronize());
  // Another context's word is its own.
  Context other{Device::cuda(0)};
  raise_fault_on_device(ctx, DeviceFault::label_out_of_range);
  EXPECT_NO_THROW(other.synchronize());
  EXPECT_THROW(ctx.synchronize(), Error);
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaEngine, ToACpuContextCopiesACudaTensor) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  Context cpu{Device::cpu()}, gpu{Device::cuda(0)};
  std::vector<float> values{1.0f, -2.5f, 3.25f, 0.0f, 7.0f, 8.5f};
  Tensor back = Tensor::from_host(values, {2, 3}, gpu).to(cpu);
  EXPECT_EQ(back.device(), Device::cpu());
  EXPECT_EQ(back.shape(), (Shape{2, 3}));
  EXPECT_EQ(back.to_vector(cpu), values);
  // A fill still queued on the CUDA context's stream: the copy waits for the device first.
  Tensor big = Tensor::full({1 << 20}, 2.5f, gpu);
  EXPECT_EQ(big.to(cpu).to_vector(cpu), std::vector<float>(1 << 20, 2.5f));
  std::vector<std::int32_t> ints{3, -1, 4};
  EXPECT_EQ(Tensor::from_host(ints, {3}, gpu).to(cpu).to_int_vector(cpu), ints);
}

TEST(CudaEngine, DestroyedContextsPoolBlocksAreReused) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  if (caching_disabled()) GTEST_SKIP() << "CUDL_NO_CACHING=1: no pool";
  std::shared_ptr<Allocator> pool = allocator_for(Device::cuda(0));
  constexpr std::int64_t kFloats = 37 * 1024 * 1024 / 4;  // a 37 MiB segment of its own
  {
    Context a{Device::cuda(0)};
    Tensor t = Tensor::empty({kFloats}, a);
  }  // a's stream is synchronised and retired: its 38 MiB segment is idle
  const AllocatorStats before = pool->stats();
  {
    Context b{Device::cuda(0)};
    Tensor t = Tensor::empty({kFloats}, b);
  }
  EXPECT_EQ(pool->stats().device_mallocs, before.device_mallocs) << "context b reused a's memory: no new cudaMalloc";
  EXPECT_GT(pool->stats().cache_hits, before.cache_hits);
}

TEST(CudaEngine, ContextOnASecondDeviceWorksThere) {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  Context ctx{Device::cuda(1)};
  int current = -1;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 0) << "creating a context leaves the current device as it was";
  Tensor x = Tensor::full({1000}, 3.0f, ctx);
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, x.raw()), cudaSuccess);
  EXPECT_EQ(attributes.device, 1);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  EXPECT_EQ(x.to_vector(ctx), std::vector<float>(1000, 3.0f));
  {
    CudaDeviceGuard guard(1);
    ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
    EXPECT_EQ(current, 1);
  }
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 0) << "the guard restores the previous device";
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaEngine, AMissingDeviceHasNoEntry) {
  EXPECT_FALSE(cuda_device(-1));
  EXPECT_FALSE(cuda_device(cuda_device_count()));
  if (!have_device()) {
    EXPECT_TRUE(cuda_devices().empty());
  }
}

// Engine code asks about its own device through cuda_device(i), never cuda_devices(): the listing
// makes every GPU current (a primary context on each, CUDA 12 on), so every rank of a job would
// take memory on every other rank's GPU. The one-device answer is the listing's entry, read
// without disturbing the caller's current device.
TEST(CudaEngine, OneDeviceQueryMatchesTheListingAndLeavesTheCurrentDevice) {
#if defined(CUDL_HAVE_CUDA)
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const std::vector<CudaDeviceInfo> all = cuda_devices();
  ASSERT_EQ(static_cast<int>(all.size()), cuda_device_count());
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  for (const CudaDeviceInfo& listed : all) {
    const std::optional<CudaDeviceInfo> one = cuda_device(listed.index);
    ASSERT_TRUE(one) << "cuda:" << listed.index;
    EXPECT_EQ(one->index, listed.index);
    EXPECT_EQ(one->name, listed.name);
    EXPECT_EQ(one->cc_major, listed.cc_major);
    EXPECT_EQ(one->cc_minor, listed.cc_minor);
    EXPECT_EQ(one->total_memory, listed.total_memory);
    EXPECT_EQ(one->multiprocessors, listed.multiprocessors);
    EXPECT_GT(one->free_memory, 0u);
    EXPECT_LE(one->free_memory, one->total_memory);
    int current = -1;
    ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
    EXPECT_EQ(current, 0) << "asking about cuda:" << listed.index << " leaves the current device as it was";
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}
