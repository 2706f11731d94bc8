// CudaBackend: the per-channel affine map and its backward (batch norm is cuDNN's,
// kernels/cudnn/). Kernels in kernels/cuda/normalization.cu; CPU twin kernels/cpu/normalization.cpp.
// Arguments were checked by the Backend front; the one check here is the CUDA backend's own: a plane
// (the dims after the channel) fits the kernels' 32-bit offsets.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

void CudaBackend::do_channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift,
                                    Tensor& y) {
  cuda_detail::launch_channel_affine(x.raw(), scale.data<float>(), shift.data<float>(), y.raw(), float_type(x.dtype()),
                                     cuda_detail::planes_of("channel_affine", "x", x), stream_of(ctx));
}

void CudaBackend::do_channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx) {
  cuda_detail::launch_channel_scale(dy.raw(), scale.data<float>(), dx.raw(), float_type(dy.dtype()),
                                    cuda_detail::planes_of("channel_affine_backward", "dy", dy), stream_of(ctx));
}

}  // namespace cudl
