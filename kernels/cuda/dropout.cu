// Inverted dropout and the elementwise product its backward uses. CPU twin: kernels/cpu/dropout.cpp.
#include "cudl/engine/philox.hpp"
#include "cudl/kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void dropout_kernel(std::int64_t n, const float* x, float* y, float* mask, float p, float keep_scale,
                               std::uint64_t seed, std::uint64_t offset) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const float u = philox::uniform(offset + static_cast<std::uint64_t>(i), seed);
    const float m = u >= p ? keep_scale : 0.0f;
    mask[i] = m;
    y[i] = x[i] * m;
  }
}

__global__ void mul_kernel(std::int64_t n, const float* a, const float* b, float* out) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) out[i] = a[i] * b[i];
}

}  // namespace

void launch_dropout(const float* x, float* y, float* mask, std::int64_t n, float p, float keep_scale,
                    std::uint64_t seed, std::uint64_t offset, cudaStream_t stream) {
  launch_linear("dropout_kernel", dropout_kernel, n, stream, x, y, mask, p, keep_scale, seed, offset);
}

void launch_mul(const float* a, const float* b, float* out, std::int64_t n, cudaStream_t stream) {
  launch_linear("mul_kernel", mul_kernel, n, stream, a, b, out);
}

}  // namespace cudl::cuda_detail
