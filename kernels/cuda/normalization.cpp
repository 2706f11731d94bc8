// CudaBackend: the per-channel affine map and its backward, and batch norm + ReLU fused for
// training (plain batch norm is cuDNN's, kernels/cudnn/: cuDNN's legacy API fuses an activation
// only for NHWC half data, so the fused pair is ours). Kernels in kernels/cuda/normalization.cu; CPU twin
// kernels/cpu/normalization.cpp. Arguments were checked by the Backend front; the one check here is the CUDA backend's
// own: a plane (the dims after the channel) fits the kernels' 32-bit offsets.
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

void CudaBackend::do_batchnorm_relu_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma,
                                                  const Tensor& beta, float eps, float momentum, Tensor& running_mean,
                                                  Tensor& running_var, Tensor& y, Tensor& save_mean,
                                                  Tensor& save_invstd) {
  cuda_detail::launch_batchnorm_relu_forward_train(
      x.raw(), gamma.data<float>(), beta.data<float>(), eps, momentum, running_mean.data<float>(),
      running_var.data<float>(), y.raw(), save_mean.data<float>(), save_invstd.data<float>(), float_type(x.dtype()),
      cuda_detail::planes_of("batchnorm_relu_forward_train", "x", x), stream_of(ctx));
}

void CudaBackend::do_batchnorm_relu_backward(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& dy,
                                             const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd,
                                             float /*eps*/, Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  const cuda_detail::Planes s = cuda_detail::planes_of("batchnorm_relu_backward", "x", x);
  const Workspace coef(ctx, static_cast<std::size_t>(cuda_detail::batchnorm_relu_coef_count(s)) * sizeof(float));
  cuda_detail::launch_batchnorm_relu_backward(x.raw(), y.raw(), dy.raw(), gamma.data<float>(), save_mean.data<float>(),
                                              save_invstd.data<float>(), dx.raw(), dgamma.data<float>(),
                                              dbeta.data<float>(), static_cast<float*>(coef.data()),
                                              float_type(x.dtype()), s, stream_of(ctx));
}

}  // namespace cudl
