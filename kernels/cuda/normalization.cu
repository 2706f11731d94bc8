// The per-channel affine map over dim 1 (input normalisation) and its backward (batch norm is
// cuDNN's, kernels/cudnn/normalization.cpp). CPU twin: kernels/cpu/normalization.cpp.
#include "kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void channel_affine_kernel(std::int64_t n, const float* x, const float* scale, const float* shift, float* y,
                                      std::int64_t channels, std::int64_t inner) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const std::int64_t c = (i / inner) % channels;
    // __fmul_rn/__fadd_rn: no FMA contraction, so y matches the CPU's x * s + b bit for bit.
    y[i] = __fadd_rn(__fmul_rn(x[i], scale[c]), shift[c]);
  }
}

__global__ void channel_scale_kernel(std::int64_t n, const float* dy, const float* scale, float* dx,
                                     std::int64_t channels, std::int64_t inner) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) dx[i] = dy[i] * scale[(i / inner) % channels];
}

}  // namespace

void launch_channel_affine(const float* x, const float* scale, const float* shift, float* y, std::int64_t outer,
                           std::int64_t channels, std::int64_t inner, cudaStream_t stream) {
  launch_linear("channel_affine_kernel", channel_affine_kernel, outer * channels * inner, stream, x, scale, shift, y,
                channels, inner);
}

void launch_channel_scale(const float* dy, const float* scale, float* dx, std::int64_t outer, std::int64_t channels,
                          std::int64_t inner, cudaStream_t stream) {
  launch_linear("channel_scale_kernel", channel_scale_kernel, outer * channels * inner, stream, dy, scale, dx, channels,
                inner);
}

}  // namespace cudl::cuda_detail
