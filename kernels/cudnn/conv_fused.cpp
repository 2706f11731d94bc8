// CudaBackend: the fused convolution + bias + ReLU (Backend::conv2d_bias_relu_forward) through
// cudnnConvolutionBiasActivationForward: y = relu(conv(x, w) + bias), written once. CPU twin:
// kernels/cpu/conv_fused.cpp.
//
// cuDNN's documented limits shape the policy:
// - With CUDNN_ACTIVATION_RELU the call supports only CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
//   so that is the one algorithm asked for; it is deterministic, so --deterministic holds.
// - f32 data only (x, w, y, bias all FLOAT, float compute). Half data runs unfused (the convolution
//   with its own algorithm policy, then bias_add and the ReLU kernel), as does any call cuDNN
//   refuses (NOT_SUPPORTED) or whose workspace does not fit: never a wrong result, only a slower one.
// - The bias is a [1, K, 1, 1] tensor and must be given: a convolution without one passes zeros.
// - x and y are described in their own formats (NCHW, or NHWC when channels_last), the filter KCRS,
//   as in kernels/cudnn/conv.cpp; a format mix cuDNN refuses here runs unfused, whose convolution
//   has its own answer to it. The unfused bias_add reads y's format itself (kernels/cuda/gemm.cu).
// - z (the residual input) is y with alpha2 = 0, so nothing is added.
// The one fused algorithm may be slower than the fastest unfused one (Winograd, FFT) at some
// shapes. Under the measured search (ctx.conv_search() == measured) both are timed once per shape
// and the faster is kept; under the heuristic search the fused call runs wherever cuDNN takes it.
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "cudl/engine/timer.hpp"
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"
#include "cudl/kernels/cudnn/descriptors.hpp"

namespace cudl {

using cudnn_detail::ConvolutionDescriptor;
using cudnn_detail::FilterDescriptor;
using cudnn_detail::TensorDescriptor;

namespace {

constexpr std::string_view kOp = "conv2d_bias_relu_forward";

class ActivationDescriptor {
 public:
  // NaN maps to 0, as the ReLU kernels do (max(0, v) with an ordered comparison).
  ActivationDescriptor() {
    CUDL_CUDNN_CHECK(cudnnCreateActivationDescriptor(&desc_), "{}", kOp);
    const cudnnStatus_t status =
        cudnnSetActivationDescriptor(desc_, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, /*coef=*/0.0);
    if (status != CUDNN_STATUS_SUCCESS) {
      cudnnDestroyActivationDescriptor(desc_);
      CUDL_CUDNN_CHECK(status, "{} relu activation descriptor", kOp);
    }
  }
  ~ActivationDescriptor() { cudnnDestroyActivationDescriptor(desc_); }
  ActivationDescriptor(const ActivationDescriptor&) = delete;
  ActivationDescriptor& operator=(const ActivationDescriptor&) = delete;
  cudnnActivationDescriptor_t get() const { return desc_; }

 private:
  cudnnActivationDescriptor_t desc_ = nullptr;
};

// What was decided per call (shapes, parameters, math mode, search): whether the fused call runs.
// Unsupported shapes are remembered so that cuDNN is not asked again on every call.
enum class Choice { fused, unfused };

std::string choice_key(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& y, const Conv2dParams& p,
                       bool bias) {
  return fmt::format("x={} {} w={} y {} pad={},{} stride={},{} dilation={},{} bias={} {} {} device={}", x.shape(),
                     memory_format_name(x.format()), w.shape(), memory_format_name(y.format()), p.pad_h, p.pad_w,
                     p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, bias,
                     ctx.math_mode() == MathMode::strict_fp32 ? "fp32" : "tf32",
                     ctx.conv_search() == ConvSearch::measured ? "measured" : "heuristic", ctx.device().str());
}

struct Choices {
  std::mutex mutex;
  std::map<std::string, Choice> by_key;
};
Choices& choices() {
  static Choices c;
  return c;
}

// The fused call on its own. Returns cuDNN's status; NOT_SUPPORTED and an out-of-memory workspace
// (reported as CUDNN_STATUS_ALLOC_FAILED) let the caller fall back, anything else is thrown there.
cudnnStatus_t run_fused(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                        Tensor& y) {
  TensorDescriptor xd(kOp, "x", x.shape(), DType::f32, x.format()), yd(kOp, "y", y.shape(), DType::f32, y.format());
  TensorDescriptor bd(kOp, "bias", Shape{1, y.dim(1), 1, 1});
  FilterDescriptor wd(kOp, "w", w.shape());
  ConvolutionDescriptor cd(p, kOp);
  // Strict fp32 keeps FMA math (DEFAULT_MATH may take TF32 tensor cores on Ampere and later).
  cd.set_math(ctx.math_mode() == MathMode::strict_fp32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH, kOp);
  ActivationDescriptor ad;
  CudaResources& r = cuda_resources(ctx);
  constexpr auto algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  std::size_t bytes = 0;
  if (const cudnnStatus_t s =
          cudnnGetConvolutionForwardWorkspaceSize(r.cudnn, xd.get(), wd.get(), cd.get(), yd.get(), algo, &bytes);
      s != CUDNN_STATUS_SUCCESS)
    return s;
  std::optional<Workspace> workspace, zeros;
  try {
    workspace.emplace(ctx, bytes);
    if (!bias.defined()) {
      zeros.emplace(ctx, static_cast<std::size_t>(y.dim(1)) * sizeof(float));
      cuda_detail::launch_fill(zeros->data(), cuda_detail::FloatType::f32, y.dim(1), 0.0f, r.stream);
    }
  } catch (const OutOfMemoryError&) {
    return CUDNN_STATUS_ALLOC_FAILED;
  }
  const float alpha1 = 1.0f, alpha2 = 0.0f;
  const cudnnStatus_t status = cudnnConvolutionBiasActivationForward(
      r.cudnn, &alpha1, xd.get(), x.raw(), wd.get(), w.raw(), cd.get(), algo, workspace->data(), workspace->bytes(),
      &alpha2, yd.get(), y.raw(), bd.get(), bias.defined() ? bias.raw() : zeros->data(), ad.get(), yd.get(), y.raw());
  if (status != CUDNN_STATUS_SUCCESS) cudaGetLastError();  // a failed launch must not surface at the next check
  return status;
}

// With an NHWC tensor in the call, any failure falls back (not yet run on a GPU: should cuDNN answer
// a layout it does not fuse with something other than NOT_SUPPORTED, the unfused ops still run it,
// and report any real error themselves).
bool may_fall_back(cudnnStatus_t status, bool channels_last) {
  return channels_last || CUDNN_STATUS_CATEGORY(status) == CUDNN_STATUS_NOT_SUPPORTED ||
         status == CUDNN_STATUS_ALLOC_FAILED;
}

}  // namespace

void CudaBackend::do_conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                              const Conv2dParams& p, Tensor& y) {
  if (y.numel() == 0) return;
  const auto unfused = [&] {
    do_conv2d_forward(ctx, x, w, p, y);
    if (bias.defined()) do_bias_add(ctx, y, bias);
    do_activation_forward(ctx, Activation::relu, 0.0f, y, y);  // elementwise: in place is safe
  };
  if (x.dtype() != DType::f32 || x.numel() == 0 || w.numel() == 0) return unfused();

  const std::string key = choice_key(ctx, x, w, y, p, bias.defined());
  const bool nhwc = x.channels_last() || y.channels_last();
  std::optional<Choice> known;
  {
    const std::lock_guard lock(choices().mutex);
    if (auto it = choices().by_key.find(key); it != choices().by_key.end()) known = it->second;
  }
  const auto remember = [&](Choice c) {
    const std::lock_guard lock(choices().mutex);
    choices().by_key.insert_or_assign(key, c);
  };
  if (known == Choice::unfused) return unfused();

  if (!known && ctx.conv_search() == ConvSearch::measured) {
    // One warm-up each (the unfused one also runs its own algorithm search), then timed runs.
    constexpr int kTimedRuns = 3;
    cudnnStatus_t status = run_fused(ctx, x, w, bias, p, y);
    if (status == CUDNN_STATUS_SUCCESS) {
      unfused();
      Timer timer(ctx);
      timer.start();
      for (int i = 0; i < kTimedRuns && status == CUDNN_STATUS_SUCCESS; ++i) status = run_fused(ctx, x, w, bias, p, y);
      const double fused_ms = timer.stop_ms();
      timer.start();
      for (int i = 0; i < kTimedRuns; ++i) unfused();
      const double unfused_ms = timer.stop_ms();
      if (status == CUDNN_STATUS_SUCCESS) known = fused_ms <= unfused_ms ? Choice::fused : Choice::unfused;
    }
    if (status != CUDNN_STATUS_SUCCESS && !may_fall_back(status, nhwc))
      cuda_detail::throw_cudnn(status, "cudnnConvolutionBiasActivationForward", __FILE__, __LINE__,
                               fmt::format("{} x={} w={} y={}", kOp, x.shape(), w.shape(), y.shape()));
    // No memory for the fused workspace now says nothing about the shape: run unfused this time and
    // measure again at the next call, as the heuristic path below does.
    if (status == CUDNN_STATUS_ALLOC_FAILED) return unfused();
    remember(known.value_or(Choice::unfused));
    // The last timed run may have been either path: run the chosen one for the result.
    if (known != Choice::fused) return unfused();
  }

  const cudnnStatus_t status = run_fused(ctx, x, w, bias, p, y);
  if (status == CUDNN_STATUS_SUCCESS) {
    if (!known) remember(Choice::fused);
    return;
  }
  if (!may_fall_back(status, nhwc))
    cuda_detail::throw_cudnn(status, "cudnnConvolutionBiasActivationForward", __FILE__, __LINE__,
                             fmt::format("{} x={} w={} y={}", kOp, x.shape(), w.shape(), y.shape()));
  // Not supported here, or no memory for its workspace: the unfused ops give the same function.
  if (status != CUDNN_STATUS_ALLOC_FAILED) remember(Choice::unfused);
  unfused();
}

}  // namespace cudl

namespace cudl {

// Convolution + batch norm (+ residual) (+ ReLU) for inference (Backend::conv2d_bn_forward): the
// composition of the existing ops, which is what the CPU backend computes too wherever oneDNN does
// not take the call. cuDNN's conv-bias-activation could absorb the folded batch norm only with the
// scale folded into the weights (a per-call weight pass); left for a GPU session to measure.
void CudaBackend::do_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                       const BatchNormEval& bn, const Conv2dParams& p, const Tensor& residual,
                                       bool relu, Tensor& y) {
  compose_conv2d_bn_forward(ctx, x, w, bias, bn, p, residual, relu, y);
}

}  // namespace cudl
