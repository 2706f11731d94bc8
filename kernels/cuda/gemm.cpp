// CudaBackend: bias_add and bias_grad (the GEMM itself is cuBLAS's, kernels/cublas/gemm.cpp).
// Kernels in kernels/cuda/gemm.cu; CPU twin kernels/cpu/gemm.cpp. Arguments were checked by the
// Backend front; the one check here is the CUDA backend's own: a plane (the dims after the channel)
// fits the kernels' 32-bit offsets.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

void CudaBackend::do_bias_add(Context& ctx, Tensor& y, const Tensor& bias) {
  if (y.channels_last()) {  // NHWC: the channel is the fastest dim (the front hands this op y's own format)
    if (y.numel() == 0) return;
    const std::int64_t channels = y.dim(1);
    cuda_detail::launch_bias_add_channels_last(y.raw(), float_type(y.dtype()), bias.data<float>(), y.numel() / channels,
                                               channels, stream_of(ctx));
    return;
  }
  cuda_detail::launch_bias_add(y.raw(), float_type(y.dtype()), bias.data<float>(),
                               cuda_detail::planes_of("bias_add", "y", y), stream_of(ctx));
}

void CudaBackend::do_bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate) {
  if (dy.channels_last()) {  // NHWC: columns of a [N*H*W, C] matrix
    const std::int64_t channels = dy.dim(1), rows = channels > 0 ? dy.numel() / channels : 0;
    Workspace scratch(ctx, cuda_detail::bias_grad_channels_last_scratch_bytes(rows, channels));
    cuda_detail::launch_bias_grad_channels_last(dy.raw(), float_type(dy.dtype()), dbias.data<float>(), rows, channels,
                                                accumulate, scratch.data(), stream_of(ctx));
    return;
  }
  const cuda_detail::Planes s = cuda_detail::planes_of("bias_grad", "dy", dy);
  Workspace scratch(ctx, cuda_detail::bias_grad_scratch_bytes(s));
  cuda_detail::launch_bias_grad(dy.raw(), float_type(dy.dtype()), dbias.data<float>(), s, accumulate, scratch.data(),
                                stream_of(ctx));
}

}  // namespace cudl
