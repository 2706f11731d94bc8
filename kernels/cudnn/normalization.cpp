// CudaBackend: batch normalisation through cuDNN's legacy API in CUDNN_BATCHNORM_SPATIAL mode
// (one mean and variance per channel over N and every spatial position).
//
// cuDNN's conventions are the ones engine/backend.hpp documents, so its results are used as they
// come: exponentialAverageFactor is our momentum (running = (1 - f) running + f batch), the running
// variance is updated with the unbiased batch variance, the normalisation uses the biased one,
// and resultSaveInvVariance is 1/sqrt(var + eps) (what backward consumes). Any rank >= 2 input is
// described as [N, C, inner, 1], which spatial mode treats exactly like [N, C, H, W].
#include <initializer_list>
#include <string_view>

#include "kernels/channel_args.hpp"
#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cudnn/descriptors.hpp"

namespace cudl {

using channel_args::ChannelDims;
using channel_args::Role;
using cuda_detail::device_tensor;
using cudnn_detail::DataDescriptor;
using cudnn_detail::ParamDescriptor;

namespace {

void check_eps(std::string_view op, float eps) {
  channel_args::batchnorm_eps(op, eps);
  CUDL_CHECK(static_cast<double>(eps) >= CUDNN_BN_MIN_EPSILON, "{}: eps={} is below cuDNN's minimum {}", op, eps,
             CUDNN_BN_MIN_EPSILON);
}

// cuDNN's backward ignores epsilon when it is given the saved mean and inverse deviation (it is
// only used to recompute them when both pointers are null), but it still validates the argument.
constexpr double kBackwardEpsilon = 1e-5;

// channel_args::batchnorm_args with each tensor a defined f32 tensor on ctx's device.
ChannelDims check_args(Context& ctx, std::string_view op, const Tensor& x,
                       std::initializer_list<channel_args::Arg> args) {
  return channel_args::batchnorm_args(op, x, args,
                                      [&](std::string_view name, const Tensor& t) { device_tensor(op, name, t, ctx); });
}

// x's descriptor [N, C, inner, 1] and the [1, C, 1, 1] one cuDNN derives from it for the parameters.
struct Descriptors {
  Descriptors(const Tensor& x_tensor, const ChannelDims& d, std::string_view op)
      : x(x_tensor, d, op), param(x, x_tensor.shape(), op) {}
  DataDescriptor x;
  ParamDescriptor param;
};

}  // namespace

void CudaBackend::batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                          float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                          Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  constexpr std::string_view op = "batchnorm_forward_train";
  const ChannelDims d = check_args(ctx, op, x,
                                   {{"gamma", gamma, Role::per_channel},
                                    {"beta", beta, Role::per_channel},
                                    {"running_mean", running_mean, Role::per_channel},
                                    {"running_var", running_var, Role::per_channel},
                                    {"y", y, Role::like_x},
                                    {"save_mean", save_mean, Role::per_channel},
                                    {"save_invstd", save_invstd, Role::per_channel}});
  check::same_shape(op, "x", x, "y", y);
  check_eps(op, eps);
  channel_args::batchnorm_momentum(op, momentum);
  if (d.channels == 0) return;
  channel_args::batchnorm_train_count(op, d, x);

  const Descriptors desc(x, d, op);
  const float alpha = 1.0f, beta_blend = 0.0f;
  CUDL_CUDNN_CHECK(
      cudnnBatchNormalizationForwardTraining(
          cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &alpha, &beta_blend, desc.x.get(), x.data<float>(),
          desc.x.get(), y.data<float>(), desc.param.get(), gamma.data<float>(), beta.data<float>(),
          static_cast<double>(momentum), running_mean.data<float>(), running_var.data<float>(),
          static_cast<double>(eps), save_mean.data<float>(), save_invstd.data<float>()),
      "{} x={} eps={} momentum={}", op, x.shape(), eps, momentum);
}

void CudaBackend::batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                         const Tensor& running_mean, const Tensor& running_var, float eps, Tensor& y) {
  constexpr std::string_view op = "batchnorm_forward_eval";
  const ChannelDims d = check_args(ctx, op, x,
                                   {{"gamma", gamma, Role::per_channel},
                                    {"beta", beta, Role::per_channel},
                                    {"running_mean", running_mean, Role::per_channel},
                                    {"running_var", running_var, Role::per_channel},
                                    {"y", y, Role::like_x}});
  check::same_shape(op, "x", x, "y", y);
  check_eps(op, eps);
  if (x.numel() == 0) return;

  const Descriptors desc(x, d, op);
  const float alpha = 1.0f, beta_blend = 0.0f;
  CUDL_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &alpha,
                                                           &beta_blend, desc.x.get(), x.data<float>(), desc.x.get(),
                                                           y.data<float>(), desc.param.get(), gamma.data<float>(),
                                                           beta.data<float>(), running_mean.data<float>(),
                                                           running_var.data<float>(), static_cast<double>(eps)),
                   "{} x={} eps={}", op, x.shape(), eps);
}

void CudaBackend::batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                     const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                                     Tensor& dbeta) {
  constexpr std::string_view op = "batchnorm_backward";
  const ChannelDims d = check_args(ctx, op, x,
                                   {{"dy", dy, Role::like_x},
                                    {"gamma", gamma, Role::per_channel},
                                    {"save_mean", save_mean, Role::per_channel},
                                    {"save_invstd", save_invstd, Role::per_channel},
                                    {"dx", dx, Role::like_x},
                                    {"dgamma", dgamma, Role::per_channel},
                                    {"dbeta", dbeta, Role::per_channel}});
  check::same_shape(op, "x", x, "dy", dy);
  check::same_shape(op, "x", x, "dx", dx);
  if (x.numel() == 0) return;  // no values: nothing to differentiate, nothing to add

  const Descriptors desc(x, d, op);
  // dx is overwritten (alphaDataDiff 1, betaDataDiff 0); dgamma and dbeta accumulate (both 1).
  const float one = 1.0f, zero = 0.0f;
  CUDL_CUDNN_CHECK(cudnnBatchNormalizationBackward(
                       cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &one, desc.x.get(),
                       x.data<float>(), desc.x.get(), dy.data<float>(), desc.x.get(), dx.data<float>(),
                       desc.param.get(), gamma.data<float>(), dgamma.data<float>(), dbeta.data<float>(),
                       kBackwardEpsilon, save_mean.data<float>(), save_invstd.data<float>()),
                   "{} x={}", op, x.shape());
}

}  // namespace cudl
