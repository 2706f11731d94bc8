// CudaBackend: the per-channel affine map and its backward (batch norm is cuDNN's,
// kernels/cudnn/). Kernels in kernels/cuda/normalization.cu; CPU twin kernels/cpu/normalization.cpp.
// Arguments were checked by the Backend front.
#include "kernels/channel_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"
#include "kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::stream_of;

void CudaBackend::do_channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift,
                                    Tensor& y) {
  const channel_args::ChannelDims d = channel_args::channel_dims("channel_affine", "x", x);
  cuda_detail::launch_channel_affine(x.data<float>(), scale.data<float>(), shift.data<float>(), y.data<float>(),
                                     d.outer, d.channels, d.inner, stream_of(ctx));
}

void CudaBackend::do_channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx) {
  const channel_args::ChannelDims d = channel_args::channel_dims("channel_affine_backward", "dy", dy);
  cuda_detail::launch_channel_scale(dy.data<float>(), scale.data<float>(), dx.data<float>(), d.outer, d.channels,
                                    d.inner, stream_of(ctx));
}

}  // namespace cudl
