#include "cudl/engine/timer.hpp"

#include <chrono>

#include "cudl/engine/error.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

// Owns the events: when the second cudaEventCreate throws, ~Timer never runs, but impl_ (already
// built) is destroyed and takes the first event with it.
struct Timer::Impl {
  Context* ctx;
  std::chrono::steady_clock::time_point begin;
#if defined(CUDL_HAVE_CUDA)
  int device = 0;
  cudaEvent_t start_event = nullptr, stop_event = nullptr;

  Impl() = default;
  ~Impl() {
    if (!start_event && !stop_event) return;
    CudaDeviceGuard guard(device, std::nothrow);  // as the events were made
    if (start_event) cudaEventDestroy(start_event);
    if (stop_event) cudaEventDestroy(stop_event);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
#endif
};

Timer::Timer(Context& ctx) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = &ctx;
#if defined(CUDL_HAVE_CUDA)
  if (ctx.cuda()) {
    impl_->device = ctx.cuda()->device;
    CudaDeviceGuard guard(impl_->device);  // events belong to the current device
    CUDL_CUDA_CHECK(cudaEventCreate(&impl_->start_event), "timer");
    CUDL_CUDA_CHECK(cudaEventCreate(&impl_->stop_event), "timer");
  }
#endif
}

Timer::~Timer() = default;

void Timer::start() {
#if defined(CUDL_HAVE_CUDA)
  if (impl_->start_event) {
    CUDL_CUDA_CHECK(cudaEventRecord(impl_->start_event, cuda_resources(*impl_->ctx).stream), "timer");
    return;
  }
#endif
  impl_->begin = std::chrono::steady_clock::now();
}

double Timer::stop_ms() {
#if defined(CUDL_HAVE_CUDA)
  if (impl_->stop_event) {
    CUDL_CUDA_CHECK(cudaEventRecord(impl_->stop_event, cuda_resources(*impl_->ctx).stream), "timer");
    CUDL_CUDA_CHECK(cudaEventSynchronize(impl_->stop_event), "timer");
    float ms = 0;
    CUDL_CUDA_CHECK(cudaEventElapsedTime(&ms, impl_->start_event, impl_->stop_event), "timer");
    return ms;
  }
#endif
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - impl_->begin).count();
}

}  // namespace cudl
