#include "cudl/engine/context.hpp"

#include "cudl/engine/backend.hpp"
#include "cudl/engine/error.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

void Context::CudaResourcesDeleter::operator()(CudaResources* r) const {
#if defined(CUDL_HAVE_CUDA)
  destroy_cuda_resources(r);
#else
  (void)r;
#endif
}

Context::Context(Device device, MathMode math) : device_(device), math_(math) {
  if (device.is_cpu()) {
    backend_ = &cpu_backend();
    allocator_ = allocator_for(device);
    return;
  }
#if defined(CUDL_HAVE_CUDA)
  int count = cuda_device_count();
  CUDL_CHECK(count > 0, "context: {} requested but no CUDA device is available (use --device cpu)", device);
  CUDL_CHECK(device.index < count, "context: {} requested but only {} CUDA device(s) exist", device, count);
  cuda_.reset(create_cuda_resources(device.index, math).release());
  backend_ = &cuda_backend();
  allocator_ = allocator_for(device);
#else
  CUDL_THROW("context: {} requested but cudl was built without the CUDA backend (-DCUDL_CUDA=OFF)", device);
#endif
}

Context::~Context() = default;
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;

StreamId Context::stream_id() const {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_) return reinterpret_cast<StreamId>(cuda_->stream);
#endif
  return 0;
}

void Context::set_math_mode(MathMode math) {
  math_ = math;
#if defined(CUDL_HAVE_CUDA)
  if (cuda_) apply_math_mode(*cuda_, math);
#endif
}

void Context::synchronize() const {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_) synchronize_cuda(*cuda_);
#endif
}

Workspace::Workspace(Context& ctx, std::size_t bytes) : allocator_(&ctx.allocator()), bytes_(bytes) {
  if (bytes > 0) ptr_ = allocator_->allocate(bytes, ctx.stream_id());
}

Workspace::~Workspace() {
  if (ptr_) allocator_->deallocate(ptr_);
}

}  // namespace cudl
