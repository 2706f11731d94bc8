// CudaBackend: batch normalisation through cuDNN's legacy API in CUDNN_BATCHNORM_SPATIAL mode
// (one mean and variance per channel over N and every spatial position).
//
// cuDNN's conventions are the ones engine/backend.hpp documents, so its results are used as they
// come: exponentialAverageFactor is our momentum (running = (1 - f) running + f batch), the running
// variance is updated with the unbiased batch variance, the normalisation uses the biased one,
// and resultSaveInvVariance is 1/sqrt(var + eps) (what backward consumes). Any rank >= 2 input is
// described as [N, C, inner, 1], which spatial mode treats exactly like [N, C, H, W].
#include <utility>

#include "kernels/channel_args.hpp"
#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"

namespace cudl {

using channel_args::ChannelDims;
using cuda_detail::device_tensor;
using cuda_detail::to_int;

namespace {

// ---- RAII descriptors (destructors only release; they never throw) ----

// x (and y, dy, dx) as a 4-D NCHW descriptor [N, C, inner, 1].
class DataDescriptor {
 public:
  DataDescriptor(const Tensor& x, const ChannelDims& d, std::string_view op) {
    CUDL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_), "{} x={}", op, x.shape());
    try {
      CUDL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(
                           desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, to_int(op, "N", d.outer, x.shape()),
                           to_int(op, "C", d.channels, x.shape()), to_int(op, "spatial size", d.inner, x.shape()), 1),
                       "{} x={}", op, x.shape());
    } catch (...) {
      cudnnDestroyTensorDescriptor(desc_);
      throw;
    }
  }
  ~DataDescriptor() { cudnnDestroyTensorDescriptor(desc_); }
  DataDescriptor(const DataDescriptor&) = delete;
  DataDescriptor& operator=(const DataDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

// gamma, beta and the running and saved statistics: [1, C, 1, 1], derived from x's descriptor.
class ParamDescriptor {
 public:
  ParamDescriptor(const DataDescriptor& x, const Shape& x_shape, std::string_view op) {
    CUDL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_), "{} x={}", op, x_shape);
    try {
      CUDL_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(desc_, x.get(), CUDNN_BATCHNORM_SPATIAL), "{} x={}", op, x_shape);
    } catch (...) {
      cudnnDestroyTensorDescriptor(desc_);
      throw;
    }
  }
  ~ParamDescriptor() { cudnnDestroyTensorDescriptor(desc_); }
  ParamDescriptor(const ParamDescriptor&) = delete;
  ParamDescriptor& operator=(const ParamDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

void check_eps(std::string_view op, float eps) {
  channel_args::batchnorm_eps(op, eps);
  CUDL_CHECK(static_cast<double>(eps) >= CUDNN_BN_MIN_EPSILON, "{}: eps={} is below cuDNN's minimum {}", op, eps,
             CUDNN_BN_MIN_EPSILON);
}

// cuDNN's backward ignores epsilon when it is given the saved mean and inverse deviation (it is
// only used to recompute them when both pointers are null), but it still validates the argument.
constexpr double kBackwardEpsilon = 1e-5;

}  // namespace

void CudaBackend::batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                          float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                          Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  constexpr std::string_view op = "batchnorm_forward_train";
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "gamma", gamma, ctx);
  device_tensor(op, "beta", beta, ctx);
  device_tensor(op, "running_mean", running_mean, ctx);
  device_tensor(op, "running_var", running_var, ctx);
  device_tensor(op, "y", y, ctx);
  device_tensor(op, "save_mean", save_mean, ctx);
  device_tensor(op, "save_invstd", save_invstd, ctx);
  const ChannelDims d = channel_args::channel_dims(op, "x", x);
  for (const auto& [name, t] : {std::pair<std::string_view, const Tensor*>{"gamma", &gamma},
                                {"beta", &beta},
                                {"running_mean", &running_mean},
                                {"running_var", &running_var},
                                {"save_mean", &save_mean},
                                {"save_invstd", &save_invstd}})
    channel_args::per_channel(op, name, *t, "x", x);
  check::same_shape(op, "x", x, "y", y);
  check_eps(op, eps);
  channel_args::batchnorm_momentum(op, momentum);
  if (d.channels == 0) return;
  channel_args::batchnorm_train_count(op, d, x);

  DataDescriptor xd(x, d, op);
  ParamDescriptor pd(xd, x.shape(), op);
  const float alpha = 1.0f, beta_blend = 0.0f;
  CUDL_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
                       cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &alpha, &beta_blend, xd.get(),
                       x.data<float>(), xd.get(), y.data<float>(), pd.get(), gamma.data<float>(), beta.data<float>(),
                       static_cast<double>(momentum), running_mean.data<float>(), running_var.data<float>(),
                       static_cast<double>(eps), save_mean.data<float>(), save_invstd.data<float>()),
                   "{} x={} eps={} momentum={}", op, x.shape(), eps, momentum);
}

void CudaBackend::batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                         const Tensor& running_mean, const Tensor& running_var, float eps, Tensor& y) {
  constexpr std::string_view op = "batchnorm_forward_eval";
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "gamma", gamma, ctx);
  device_tensor(op, "beta", beta, ctx);
  device_tensor(op, "running_mean", running_mean, ctx);
  device_tensor(op, "running_var", running_var, ctx);
  device_tensor(op, "y", y, ctx);
  const ChannelDims d = channel_args::channel_dims(op, "x", x);
  for (const auto& [name, t] : {std::pair<std::string_view, const Tensor*>{"gamma", &gamma},
                                {"beta", &beta},
                                {"running_mean", &running_mean},
                                {"running_var", &running_var}})
    channel_args::per_channel(op, name, *t, "x", x);
  check::same_shape(op, "x", x, "y", y);
  check_eps(op, eps);
  if (x.numel() == 0) return;

  DataDescriptor xd(x, d, op);
  ParamDescriptor pd(xd, x.shape(), op);
  const float alpha = 1.0f, beta_blend = 0.0f;
  CUDL_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
                       cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &alpha, &beta_blend, xd.get(),
                       x.data<float>(), xd.get(), y.data<float>(), pd.get(), gamma.data<float>(), beta.data<float>(),
                       running_mean.data<float>(), running_var.data<float>(), static_cast<double>(eps)),
                   "{} x={} eps={}", op, x.shape(), eps);
}

void CudaBackend::batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                     const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                                     Tensor& dbeta) {
  constexpr std::string_view op = "batchnorm_backward";
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "dy", dy, ctx);
  device_tensor(op, "gamma", gamma, ctx);
  device_tensor(op, "save_mean", save_mean, ctx);
  device_tensor(op, "save_invstd", save_invstd, ctx);
  device_tensor(op, "dx", dx, ctx);
  device_tensor(op, "dgamma", dgamma, ctx);
  device_tensor(op, "dbeta", dbeta, ctx);
  const ChannelDims d = channel_args::channel_dims(op, "x", x);
  for (const auto& [name, t] : {std::pair<std::string_view, const Tensor*>{"gamma", &gamma},
                                {"save_mean", &save_mean},
                                {"save_invstd", &save_invstd},
                                {"dgamma", &dgamma},
                                {"dbeta", &dbeta}})
    channel_args::per_channel(op, name, *t, "x", x);
  check::same_shape(op, "x", x, "dy", dy);
  check::same_shape(op, "x", x, "dx", dx);
  if (x.numel() == 0) return;  // no values: nothing to differentiate, nothing to add

  DataDescriptor xd(x, d, op);
  ParamDescriptor pd(xd, x.shape(), op);
  // dx is overwritten (alphaDataDiff 1, betaDataDiff 0); dgamma and dbeta accumulate (both 1).
  const float one = 1.0f, zero = 0.0f;
  CUDL_CUDNN_CHECK(
      cudnnBatchNormalizationBackward(cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &one,
                                      xd.get(), x.data<float>(), xd.get(), dy.data<float>(), xd.get(), dx.data<float>(),
                                      pd.get(), gamma.data<float>(), dgamma.data<float>(), dbeta.data<float>(),
                                      kBackwardEpsilon, save_mean.data<float>(), save_invstd.data<float>()),
      "{} x={}", op, x.shape());
}

}  // namespace cudl
