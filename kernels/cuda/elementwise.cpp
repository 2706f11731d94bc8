// CudaBackend: fill, copy, axpy, scale, clamp and the seeded random fills. Kernels in
// kernels/cuda/elementwise.cu; CPU twin kernels/cpu/elementwise.cpp. Arguments were checked by the
// Backend front (fill, axpy and scale: any float dtype; the others f32).
#include <cstdint>

#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

void CudaBackend::do_fill(Context& ctx, Tensor& x, float value) {
  cuda_detail::launch_fill(x.raw(), float_type(x.dtype()), x.numel(), value, stream_of(ctx));
}

void CudaBackend::do_copy(Context& ctx, const Tensor& src, Tensor& dst) {
  const std::size_t bytes = src.nbytes();
  const auto from = reinterpret_cast<std::uintptr_t>(src.raw());
  const auto to = reinterpret_cast<std::uintptr_t>(dst.raw());
  if (from < to + bytes && to < from + bytes) {
    // Overlapping views of one storage: the CPU's memmove handles them, cudaMemcpy does not (its
    // result is undefined), so go through scratch.
    Workspace staging(ctx, bytes);
    CUDL_CUDA_CHECK(cudaMemcpyAsync(staging.data(), src.raw(), bytes, cudaMemcpyDeviceToDevice, stream_of(ctx)),
                    "copy src={} to staging", src.shape());
    CUDL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), staging.data(), bytes, cudaMemcpyDeviceToDevice, stream_of(ctx)),
                    "copy staging to dst={}", dst.shape());
    return;
  }
  CUDL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), bytes, cudaMemcpyDeviceToDevice, stream_of(ctx)),
                  "copy src={} dst={}", src.shape(), dst.shape());
}

void CudaBackend::do_axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y) {
  cuda_detail::launch_axpy(alpha, x.raw(), y.raw(), float_type(x.dtype()), x.numel(), stream_of(ctx));
}

void CudaBackend::do_scale(Context& ctx, Tensor& x, float alpha) {
  cuda_detail::launch_scale(x.raw(), float_type(x.dtype()), alpha, x.numel(), stream_of(ctx));
}

void CudaBackend::do_clamp(Context& ctx, Tensor& x, float low, float high) {
  cuda_detail::launch_clamp(x.data<float>(), x.numel(), low, high, stream_of(ctx));
}

void CudaBackend::do_fill_uniform(Context& ctx, Tensor& x, float low, float high, std::uint64_t seed,
                                  std::uint64_t offset) {
  cuda_detail::launch_fill_uniform(x.data<float>(), x.numel(), low, high, seed, offset, stream_of(ctx));
}

void CudaBackend::do_fill_normal(Context& ctx, Tensor& x, float mean, float stddev, std::uint64_t seed,
                                 std::uint64_t offset) {
  cuda_detail::launch_fill_normal(x.data<float>(), x.numel(), mean, stddev, seed, offset, stream_of(ctx));
}

}  // namespace cudl
