// CudaBackend: 2-D convolution (cross-correlation, NCHW, fp32) through the legacy cuDNN API. The
// CPU twin is kernels/cpu/conv.cpp. Arguments were checked by Backend's public methods
// (engine/backend.cpp); only cuDNN's own limits are checked here (kernels/cudnn/descriptors.hpp).
//
// Algorithm policy: per direction and shape, ask cuDNN's heuristics (cudnnGet*Algorithm_v7) for
// its ranked list and take the first entry that (1) reports CUDNN_STATUS_SUCCESS, (2) uses an
// allowed math type, (3) is deterministic when ctx.deterministic() is on (the default), and (4)
// whose workspace cuDNN confirms for that math type. Strict fp32 allows CUDNN_FMA_MATH only
// (CUDNN_DEFAULT_MATH may use TF32 tensor cores on Ampere and later); TF32 mode allows everything
// except CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (which may round to fp16). (PyTorch asserts the
// same: with an FMA descriptor, float heuristics report CUDNN_FMA_MATH.) Determinism is the
// algorithm's, whatever its math type: the TF32 tensor-op kernels of the deterministic algorithms
// stay available in TF32 mode. Entries needing more than 1 GiB of workspace are skipped.
// If no ranked entry qualifies, the direction's always-available deterministic algorithm runs
// with FMA math: IMPLICIT_GEMM forward, ALGO_1 for backward data and filter (their ALGO_0, and
// filter's ALGO_3, add with atomics, so their sums change from run to run). The choice is cached
// in CudaResources::conv_algorithms, keyed by direction, shapes, parameters, math mode and
// determinism (the cache is cleared when the math mode changes; determinism is in the key because
// Context::set_deterministic does not clear it).
#include <array>
#include <string>

#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"
#include "kernels/cudnn/descriptors.hpp"

namespace cudl {

using cudnn_detail::ConvolutionDescriptor;
using cudnn_detail::FilterDescriptor;
using cudnn_detail::TensorDescriptor;

namespace {

// ---- algorithm choice ----

// Algorithms that want more scratch than this (FFT variants on big images) are passed over.
constexpr std::size_t kMaxWorkspaceBytes = std::size_t{1} << 30;

// Strict fp32 runs every algorithm with CUDNN_FMA_MATH on the descriptor, which keeps cuDNN off
// TF32 tensor cores whatever math type its heuristics report (some report DEFAULT_MATH for plain
// FMA kernels); tensor-op-only candidates are skipped.
bool math_allowed(cudnnMathType_t math, MathMode mode) {
  if (mode == MathMode::strict_fp32) return math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH;
  return math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

cudnnMathType_t execution_math(cudnnMathType_t candidate, MathMode mode) {
  return mode == MathMode::strict_fp32 ? CUDNN_FMA_MATH : candidate;
}

std::string cache_key(std::string_view direction, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p,
                      MathMode mode, bool deterministic) {
  return fmt::format("{} x={} w={} y={} pad={},{} stride={},{} dilation={},{} {} {}", direction, x, w, y, p.pad_h,
                     p.pad_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                     mode == MathMode::strict_fp32 ? "fp32" : "tf32", deterministic ? "deterministic" : "any");
}

// The three directions differ only in their cuDNN entry points.
struct Forward {
  static constexpr std::string_view name = "conv2d_forward";
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  using Algo = cudnnConvolutionFwdAlgo_t;
  static constexpr Algo fallback = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
};
struct BackwardData {
  static constexpr std::string_view name = "conv2d_backward_data";
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  static constexpr Algo fallback = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
};
struct BackwardFilter {
  static constexpr std::string_view name = "conv2d_backward_filter";
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  static constexpr Algo fallback = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
};

// Descriptors and shapes of one convolution call; x is the input image, y the output.
struct ConvCall {
  Context& ctx;
  const Shape& x_shape;
  const Shape& w_shape;
  const Shape& y_shape;
  const Conv2dParams& params;
  TensorDescriptor& x;
  FilterDescriptor& w;
  ConvolutionDescriptor& conv;
  TensorDescriptor& y;
};

cudnnStatus_t heuristics(const ConvCall& c, Forward, int requested, int* returned, Forward::Perf* perf) {
  return cudnnGetConvolutionForwardAlgorithm_v7(cuda_resources(c.ctx).cudnn, c.x.get(), c.w.get(), c.conv.get(),
                                                c.y.get(), requested, returned, perf);
}
cudnnStatus_t heuristics(const ConvCall& c, BackwardData, int requested, int* returned, BackwardData::Perf* perf) {
  return cudnnGetConvolutionBackwardDataAlgorithm_v7(cuda_resources(c.ctx).cudnn, c.w.get(), c.y.get(), c.conv.get(),
                                                     c.x.get(), requested, returned, perf);
}
cudnnStatus_t heuristics(const ConvCall& c, BackwardFilter, int requested, int* returned, BackwardFilter::Perf* perf) {
  return cudnnGetConvolutionBackwardFilterAlgorithm_v7(cuda_resources(c.ctx).cudnn, c.x.get(), c.y.get(), c.conv.get(),
                                                       c.w.get(), requested, returned, perf);
}

cudnnStatus_t workspace_size(const ConvCall& c, Forward, Forward::Algo algo, std::size_t* bytes) {
  return cudnnGetConvolutionForwardWorkspaceSize(cuda_resources(c.ctx).cudnn, c.x.get(), c.w.get(), c.conv.get(),
                                                 c.y.get(), algo, bytes);
}
cudnnStatus_t workspace_size(const ConvCall& c, BackwardData, BackwardData::Algo algo, std::size_t* bytes) {
  return cudnnGetConvolutionBackwardDataWorkspaceSize(cuda_resources(c.ctx).cudnn, c.w.get(), c.y.get(), c.conv.get(),
                                                      c.x.get(), algo, bytes);
}
cudnnStatus_t workspace_size(const ConvCall& c, BackwardFilter, BackwardFilter::Algo algo, std::size_t* bytes) {
  return cudnnGetConvolutionBackwardFilterWorkspaceSize(cuda_resources(c.ctx).cudnn, c.x.get(), c.y.get(), c.conv.get(),
                                                        c.w.get(), algo, bytes);
}

// Picks (or recalls) the algorithm, and leaves c.conv set to its math type.
template <class Direction>
ConvAlgorithm choose_algorithm(const ConvCall& c) {
  constexpr Direction dir{};
  const MathMode mode = c.ctx.math_mode();
  const bool deterministic = c.ctx.deterministic();
  CudaResources& r = cuda_resources(c.ctx);
  const std::string key = cache_key(Direction::name, c.x_shape, c.w_shape, c.y_shape, c.params, mode, deterministic);
  if (auto it = r.conv_algorithms.find(key); it != r.conv_algorithms.end()) {
    c.conv.set_math(it->second.math, Direction::name);
    return it->second;
  }

  // Ask with the mode's math type on the descriptor: FMA restricts cuDNN to non-tensor-core kernels.
  c.conv.set_math(mode == MathMode::strict_fp32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH, Direction::name);
  std::array<typename Direction::Perf, 16> perf{};
  int returned = 0;
  CUDL_CUDNN_CHECK(heuristics(c, dir, static_cast<int>(perf.size()), &returned, perf.data()), "{} x={} w={} y={}",
                   Direction::name, c.x_shape, c.w_shape, c.y_shape);

  ConvAlgorithm chosen;
  bool found = false;
  for (int i = 0; i < returned && !found; ++i) {
    const auto& candidate = perf[static_cast<std::size_t>(i)];
    if (candidate.status != CUDNN_STATUS_SUCCESS || !math_allowed(candidate.mathType, mode)) continue;
    if (deterministic && candidate.determinism == CUDNN_NON_DETERMINISTIC) continue;
    const cudnnMathType_t math = execution_math(candidate.mathType, mode);
    c.conv.set_math(math, Direction::name);
    std::size_t bytes = 0;
    if (workspace_size(c, dir, candidate.algo, &bytes) != CUDNN_STATUS_SUCCESS || bytes > kMaxWorkspaceBytes) continue;
    chosen.algo = static_cast<int>(candidate.algo);
    chosen.math = math;
    chosen.workspace_bytes = bytes;
    found = true;
  }
  if (!found) {
    chosen.algo = static_cast<int>(Direction::fallback);
    chosen.math = CUDNN_FMA_MATH;
    c.conv.set_math(chosen.math, Direction::name);
    CUDL_CUDNN_CHECK(workspace_size(c, dir, Direction::fallback, &chosen.workspace_bytes),
                     "{} x={} w={} y={}: no usable algorithm", Direction::name, c.x_shape, c.w_shape, c.y_shape);
  }
  c.conv.set_math(chosen.math, Direction::name);
  r.conv_algorithms.emplace(key, chosen);
  return chosen;
}

}  // namespace

void CudaBackend::do_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p,
                                    Tensor& y) {
  if (y.numel() == 0) return;
  if (x.numel() == 0 || w.numel() == 0) {  // no input channels: the sum is empty
    cuda_detail::launch_fill(y.data<float>(), y.numel(), 0.0f, cuda_resources(ctx).stream);
    return;
  }
  TensorDescriptor xd(x.shape(), "conv2d_forward"), yd(y.shape(), "conv2d_forward");
  FilterDescriptor wd(w.shape(), "conv2d_forward");
  ConvolutionDescriptor cd(p, "conv2d_forward");
  const ConvCall call{ctx, x.shape(), w.shape(), y.shape(), p, xd, wd, cd, yd};
  const ConvAlgorithm algo = choose_algorithm<Forward>(call);
  Workspace ws(ctx, algo.workspace_bytes);
  const float alpha = 1.0f, beta = 0.0f;
  CUDL_CUDNN_CHECK(cudnnConvolutionForward(cuda_resources(ctx).cudnn, &alpha, xd.get(), x.data<float>(), wd.get(),
                                           w.data<float>(), cd.get(), static_cast<cudnnConvolutionFwdAlgo_t>(algo.algo),
                                           ws.data(), ws.bytes(), &beta, yd.get(), y.data<float>()),
                   "conv2d_forward x={} w={} y={} algo={}", x.shape(), w.shape(), y.shape(), algo.algo);
}

void CudaBackend::do_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                                          Tensor& dx) {
  if (dx.numel() == 0) return;
  if (dy.numel() == 0 || w.numel() == 0) {
    cuda_detail::launch_fill(dx.data<float>(), dx.numel(), 0.0f, cuda_resources(ctx).stream);
    return;
  }
  TensorDescriptor xd(dx.shape(), "conv2d_backward_data"), yd(dy.shape(), "conv2d_backward_data");
  FilterDescriptor wd(w.shape(), "conv2d_backward_data");
  ConvolutionDescriptor cd(p, "conv2d_backward_data");
  const ConvCall call{ctx, dx.shape(), w.shape(), dy.shape(), p, xd, wd, cd, yd};
  const ConvAlgorithm algo = choose_algorithm<BackwardData>(call);
  Workspace ws(ctx, algo.workspace_bytes);
  const float alpha = 1.0f, beta = 0.0f;
  CUDL_CUDNN_CHECK(
      cudnnConvolutionBackwardData(cuda_resources(ctx).cudnn, &alpha, wd.get(), w.data<float>(), yd.get(),
                                   dy.data<float>(), cd.get(), static_cast<cudnnConvolutionBwdDataAlgo_t>(algo.algo),
                                   ws.data(), ws.bytes(), &beta, xd.get(), dx.data<float>()),
      "conv2d_backward_data dy={} w={} dx={} algo={}", dy.shape(), w.shape(), dx.shape(), algo.algo);
}

void CudaBackend::do_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p,
                                            Tensor& dw, bool accumulate) {
  if (dw.numel() == 0) return;
  if (x.numel() == 0 || dy.numel() == 0) {  // empty batch: the gradient is zero
    if (!accumulate) cuda_detail::launch_fill(dw.data<float>(), dw.numel(), 0.0f, cuda_resources(ctx).stream);
    return;
  }
  TensorDescriptor xd(x.shape(), "conv2d_backward_filter"), yd(dy.shape(), "conv2d_backward_filter");
  FilterDescriptor wd(dw.shape(), "conv2d_backward_filter");
  ConvolutionDescriptor cd(p, "conv2d_backward_filter");
  const ConvCall call{ctx, x.shape(), dw.shape(), dy.shape(), p, xd, wd, cd, yd};
  const ConvAlgorithm algo = choose_algorithm<BackwardFilter>(call);
  Workspace ws(ctx, algo.workspace_bytes);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUDL_CUDNN_CHECK(cudnnConvolutionBackwardFilter(cuda_resources(ctx).cudnn, &alpha, xd.get(), x.data<float>(),
                                                  yd.get(), dy.data<float>(), cd.get(),
                                                  static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo.algo), ws.data(),
                                                  ws.bytes(), &beta, wd.get(), dw.data<float>()),
                   "conv2d_backward_filter x={} dy={} dw={} algo={}", x.shape(), dy.shape(), dw.shape(), algo.algo);
}

}  // namespace cudl
