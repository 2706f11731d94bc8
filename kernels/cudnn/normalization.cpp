// CudaBackend: batch normalisation through cuDNN's legacy API in CUDNN_BATCHNORM_SPATIAL mode
// (one mean and variance per channel over N and every spatial position). The CPU twin is
// kernels/cpu/normalization.cpp; channel_affine, the other per-channel op, is a kernel of our own
// (kernels/cuda). Arguments were checked by Backend's public methods (engine/backend.cpp).
//
// cuDNN's conventions are the ones engine/backend.hpp documents, so its results are used as they
// come: exponentialAverageFactor is our momentum (running = (1 - f) running + f batch), the running
// variance is updated with the unbiased batch variance, the normalisation uses the biased one,
// and resultSaveInvVariance is 1/sqrt(var + eps) (what backward consumes). Any rank >= 2 input is
// described as [N, C, inner, 1], which spatial mode treats exactly like [N, C, H, W].
//
// Dtypes: x, y, dy and dx f32, bf16 or f16; gamma, beta and the statistics f32. f16 data goes to
// cuDNN as HALF with float per-channel tensors (the derived parameter descriptor is FLOAT), the
// configuration cuDNN documents and PyTorch uses for half batch norm; cuDNN computes the
// statistics in float. bf16 data does not: PyTorch never hands bf16 to cuDNN's batch norm, and its
// support in the legacy API is not documented, so bf16 x and dy are widened (exactly) into f32
// scratch, normalised by the f32 path, and y and dx rounded back once. That costs two extra
// passes and the f32 copies; VGG has no batch norm, so it is off the hot path.
#include <optional>
#include <string_view>

#include "cudl/engine/channel_dims.hpp"
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cudnn/descriptors.hpp"

namespace cudl {

using cudnn_detail::DataDescriptor;
using cudnn_detail::ParamDescriptor;

namespace {

// eps as cuDNN takes it. The front checked that it is finite and >= 0; cuDNN also wants it
// >= CUDNN_BN_MIN_EPSILON (0.0 in cuDNN 9.19, so this never fires there).
double cudnn_eps(std::string_view op, float eps) {
  CUDL_CHECK(static_cast<double>(eps) >= CUDNN_BN_MIN_EPSILON, "{}: eps={} is below cuDNN's minimum {}", op, eps,
             CUDNN_BN_MIN_EPSILON);
  return static_cast<double>(eps);
}

// The dtype cuDNN sees for x's data: bf16 goes through f32 scratch (see the top).
DType cudnn_dtype(const Tensor& x) { return x.dtype() == DType::bf16 ? DType::f32 : x.dtype(); }

// x's descriptor [N, C, inner, 1] and the [1, C, 1, 1] one cuDNN derives from it for the parameters.
struct Descriptors {
  Descriptors(const Tensor& x_tensor, std::string_view op)
      : x(x_tensor, channel_dims(op, "x", x_tensor), cudnn_dtype(x_tensor), op), param(x, x_tensor.shape(), op) {}
  DataDescriptor x;
  ParamDescriptor param;
};

// A data tensor as cuDNN reads or writes it: the tensor itself, or for bf16 an f32 scratch copy.
class CudnnData {
 public:
  // `read`: the scratch starts as the tensor's values, widened.
  CudnnData(Context& ctx, const Tensor& t, bool read) : t_(t) {
    if (t.dtype() != DType::bf16) return;
    scratch_.emplace(ctx, static_cast<std::size_t>(t.numel()) * sizeof(float));
    if (read)
      cuda_detail::launch_cast(t.raw(), cuda_detail::FloatType::bf16, scratch_->data(), cuda_detail::FloatType::f32,
                               t.numel(), cuda_resources(ctx).stream);
  }
  void* get() const { return scratch_ ? scratch_->data() : t_.raw(); }
  // For an output: rounds the scratch back into the tensor (nothing to do without scratch).
  void write_back(Context& ctx) const {
    if (scratch_)
      cuda_detail::launch_cast(scratch_->data(), cuda_detail::FloatType::f32, t_.raw(), cuda_detail::FloatType::bf16,
                               t_.numel(), cuda_resources(ctx).stream);
  }

 private:
  const Tensor& t_;
  std::optional<Workspace> scratch_;
};

}  // namespace

void CudaBackend::do_batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                             float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                             Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  constexpr std::string_view op = "batchnorm_forward_train";
  const double epsilon = cudnn_eps(op, eps);
  const Descriptors desc(x, op);
  const float alpha = 1.0f, beta_blend = 0.0f;
  const CudnnData xd(ctx, x, /*read=*/true), yd(ctx, y, /*read=*/false);
  CUDL_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
                       cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &alpha, &beta_blend, desc.x.get(), xd.get(),
                       desc.x.get(), yd.get(), desc.param.get(), gamma.data<float>(), beta.data<float>(),
                       static_cast<double>(momentum), running_mean.data<float>(), running_var.data<float>(), epsilon,
                       save_mean.data<float>(), save_invstd.data<float>()),
                   "{} x={} ({}) eps={} momentum={}", op, x.shape(), dtype_name(x.dtype()), eps, momentum);
  yd.write_back(ctx);
}

void CudaBackend::do_batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                            const Tensor& running_mean, const Tensor& running_var, float eps,
                                            Tensor& y) {
  constexpr std::string_view op = "batchnorm_forward_eval";
  const double epsilon = cudnn_eps(op, eps);
  const Descriptors desc(x, op);
  const float alpha = 1.0f, beta_blend = 0.0f;
  const CudnnData xd(ctx, x, /*read=*/true), yd(ctx, y, /*read=*/false);
  CUDL_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
                       cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &alpha, &beta_blend, desc.x.get(), xd.get(),
                       desc.x.get(), yd.get(), desc.param.get(), gamma.data<float>(), beta.data<float>(),
                       running_mean.data<float>(), running_var.data<float>(), epsilon),
                   "{} x={} ({}) eps={}", op, x.shape(), dtype_name(x.dtype()), eps);
  yd.write_back(ctx);
}

void CudaBackend::do_batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                        const Tensor& save_mean, const Tensor& save_invstd, float eps, Tensor& dx,
                                        Tensor& dgamma, Tensor& dbeta) {
  constexpr std::string_view op = "batchnorm_backward";
  // The layer's eps, as in forward: cuDNN asks for the same value in both, and whether an engine
  // ignores it when given the saved mean and inverse deviation is not documented.
  const double epsilon = cudnn_eps(op, eps);
  const Descriptors desc(x, op);
  // dx is overwritten (alphaDataDiff 1, betaDataDiff 0); dgamma and dbeta accumulate (both 1).
  const float one = 1.0f, zero = 0.0f;
  const CudnnData xd(ctx, x, /*read=*/true), dyd(ctx, dy, /*read=*/true), dxd(ctx, dx, /*read=*/false);
  CUDL_CUDNN_CHECK(
      cudnnBatchNormalizationBackward(cuda_resources(ctx).cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &one,
                                      desc.x.get(), xd.get(), desc.x.get(), dyd.get(), desc.x.get(), dxd.get(),
                                      desc.param.get(), gamma.data<float>(), dgamma.data<float>(), dbeta.data<float>(),
                                      epsilon, save_mean.data<float>(), save_invstd.data<float>()),
      "{} x={} ({}) eps={}", op, x.shape(), dtype_name(x.dtype()), eps);
  dxd.write_back(ctx);
}

}  // namespace cudl
