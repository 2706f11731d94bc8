#pragma once
// Host staging memory for host -> device copies. In CUDA builds, for a CUDA context, it is
// page-locked (cudaHostAlloc), so cudaMemcpyAsync is a real DMA at full bus speed and returns at
// once; the buffer then must not be rewritten until the copy has finished, which is what
// `mark_in_use` / `wait_until_free` (a CUDA event) track. Otherwise it is plain host memory and
// both calls do nothing (copies out of it finish before copy_bytes returns).
//
// Header-only so the CPU-only build, which compiles no engine/cuda/*.cpp, still gets the plain path.
#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

#include "cudl/config.hpp"  // CUDL_HAVE_CUDA
#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

class HostStaging {
 public:
  HostStaging() = default;
  // `bytes` of staging for copies to ctx's device (page-locked when that is a CUDA device).
  HostStaging(std::size_t bytes, const Context& ctx) : bytes_(bytes) {
    if (bytes == 0) return;
#if defined(CUDL_HAVE_CUDA)
    if (ctx.device().is_cuda()) {
      CudaDeviceGuard guard(ctx.device().index);  // the event belongs to the current device
      pinned_ = true;
      CUDL_CUDA_CHECK(cudaHostAlloc(&ptr_, bytes, cudaHostAllocDefault), "pinned staging of {}", format_bytes(bytes));
      cudaError_t status = cudaEventCreateWithFlags(&event_, cudaEventDisableTiming);
      if (status != cudaSuccess) {
        cudaFreeHost(ptr_);
        CUDL_CUDA_CHECK(status, "pinned staging event");
      }
      return;
    }
#else
    (void)ctx;
#endif
    ptr_ = std::malloc(bytes);
    if (ptr_ == nullptr) throw OutOfMemoryError(fmt::format("host staging: cannot allocate {}", format_bytes(bytes)));
  }

  ~HostStaging() { release(); }
  HostStaging(HostStaging&& other) noexcept { swap(other); }
  HostStaging& operator=(HostStaging&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  bool pinned() const { return pinned_; }

  // Call after queueing an asynchronous copy out of this buffer on ctx's stream.
  void mark_in_use(Context& ctx) {
#if defined(CUDL_HAVE_CUDA)
    if (pinned_) CUDL_CUDA_CHECK(cudaEventRecord(event_, cuda_resources(ctx).stream), "host staging");
#else
    (void)ctx;
#endif
  }

  // Blocks until the copies marked so far have read the buffer (callable from any thread).
  void wait_until_free() const {
#if defined(CUDL_HAVE_CUDA)
    if (pinned_) CUDL_CUDA_CHECK(cudaEventSynchronize(event_), "host staging");
#endif
  }

 private:
  void swap(HostStaging& other) noexcept {
    std::swap(ptr_, other.ptr_);
    std::swap(bytes_, other.bytes_);
    std::swap(pinned_, other.pinned_);
#if defined(CUDL_HAVE_CUDA)
    std::swap(event_, other.event_);
#endif
  }

  // Never throws: a failure here means the device is already broken, and the caller is a destructor.
  void release() noexcept {
    if (ptr_ == nullptr) return;
#if defined(CUDL_HAVE_CUDA)
    if (pinned_) {
      // The copies out of the buffer must finish before the memory goes back.
      cudaEventSynchronize(event_);
      cudaEventDestroy(event_);
      cudaFreeHost(ptr_);
      event_ = nullptr;
      ptr_ = nullptr;
      return;
    }
#endif
    std::free(ptr_);
    ptr_ = nullptr;
  }

  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
  bool pinned_ = false;
#if defined(CUDL_HAVE_CUDA)
  cudaEvent_t event_ = nullptr;
#endif
};

}  // namespace cudl
