// The per-channel affine map over dim 1 (input normalisation) and its backward (batch norm is
// cuDNN's, kernels/cudnn/normalization.cpp). CPU twin: kernels/cpu/normalization.cpp.
#include "cudl/kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void channel_affine_kernel(Planes s, const float* x, const float* scale, const float* shift, float* y) {
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float k = scale[c], b = shift[c];
    const float* xp = x + plane * s.size;
    float* yp = y + plane * s.size;
    // __fmul_rn/__fadd_rn: no FMA contraction, so y matches the CPU's x * s + b bit for bit.
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) yp[p] = __fadd_rn(__fmul_rn(xp[p], k), b);
  });
}

__global__ void channel_scale_kernel(Planes s, const float* dy, const float* scale, float* dx) {
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float k = scale[c];
    const float* dyp = dy + plane * s.size;
    float* dxp = dx + plane * s.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) dxp[p] = dyp[p] * k;
  });
}

}  // namespace

void launch_channel_affine(const float* x, const float* scale, const float* shift, float* y, const Planes& s,
                           cudaStream_t stream) {
  launch_planes("channel_affine_kernel", channel_affine_kernel, s, stream, x, scale, shift, y);
}

void launch_channel_scale(const float* dy, const float* scale, float* dx, const Planes& s, cudaStream_t stream) {
  launch_planes("channel_scale_kernel", channel_scale_kernel, s, stream, dy, scale, dx);
}

}  // namespace cudl::cuda_detail
