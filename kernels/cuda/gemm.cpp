// CudaBackend: bias_add and bias_grad (the GEMM itself is cuBLAS's, kernels/cublas/gemm.cpp).
// Kernels in kernels/cuda/gemm.cu; CPU twin kernels/cpu/gemm.cpp. Arguments were checked by the
// Backend front.
#include "kernels/channel_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"
#include "kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::stream_of;

void CudaBackend::do_bias_add(Context& ctx, Tensor& y, const Tensor& bias) {
  const channel_args::ChannelDims d = channel_args::channel_dims("bias_add", "y", y);
  cuda_detail::launch_bias_add(y.data<float>(), bias.data<float>(), d.outer, d.channels, d.inner, stream_of(ctx));
}

void CudaBackend::do_bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate) {
  const channel_args::ChannelDims d = channel_args::channel_dims("bias_grad", "dy", dy);
  cuda_detail::launch_bias_grad(dy.data<float>(), dbias.data<float>(), d.outer, d.channels, d.inner, accumulate,
                                stream_of(ctx));
}

}  // namespace cudl
