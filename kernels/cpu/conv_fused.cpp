// CpuBackend: the fused convolution + bias + ReLU (Backend::conv2d_bias_relu_forward). Under oneDNN
// it runs as one primitive with ReLU as a post-op (kernels/cpu/onednn_conv.cpp), in f32 and in the
// halves this CPU has native kernels for (bf16 on AVX-512 BF16/AMX: f32 sums and bias, y rounded
// once). A half without a native kernel here (bf16 on AVX2) runs the f32 op on exactly widened
// copies and rounds y once too, so the fused op means the same on every CPU (the unfused ops round
// twice: after the convolution and after the bias, which can cancel most of the convolution's
// value and keep its rounding error). Everything else in f32 (im2col, a geometry oneDNN cannot
// express) is the reference composition of the three unfused ops, so the network's fusion can be
// switched off (--fuse false) to compare. The CUDA twin is kernels/cudnn/conv_fused.cpp (halves
// there run the unfused ops).
// Below it, the inference-time convolution + batch norm (+ residual) (+ ReLU),
// Backend::conv2d_bn_forward, on the same pattern.
#include <cmath>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/format_route.hpp"
#include "cudl/kernels/cpu/conv_one_channel.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"

namespace cudl {

void CpuBackend::do_conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                             const Conv2dParams& p, Tensor& y) {
  if (y.numel() == 0) return;
  if (cpu::one_channel_conv_forward(x, w, bias, p, true, y)) return;
  if (x.numel() > 0 && w.numel() > 0 && cpu::onednn_conv_enabled(ctx.cpu_conv()) &&
      cpu::onednn_conv2d_bias_relu_forward(ctx, x, w, bias, p, y))
    return;
  if (any_channels_last({&x, &y})) {  // oneDNN did not take the call: the NCHW ops below
    on_nchw_copies(ctx, [&](NchwRoute& r) { do_conv2d_bias_relu_forward(ctx, r.in(x), w, bias, p, r.out(y)); });
    return;
  }
  if (x.dtype() != DType::f32 || w.dtype() != DType::f32) {
    // No native kernel for this half: the f32 op on exact copies (the bias is f32), one rounding of y.
    cpu::F32Copy wx(ctx, x, true), ww(ctx, w, true), wy(ctx, y, false);
    do_conv2d_bias_relu_forward(ctx, wx.tensor(), ww.tensor(), bias, p, wy.tensor());
    cpu::narrow(wy.data(), y);
    return;
  }
  do_conv2d_forward(ctx, x, w, p, y);
  if (bias.defined()) do_bias_add(ctx, y, bias);
  do_activation_forward(ctx, Activation::relu, 0.0f, y, y);  // elementwise: in place is safe
}

}  // namespace cudl

namespace cudl {

namespace {

// Batch norm with running statistics as y = x * scale + shift per channel, a conv bias folded into
// shift: scale = gamma / sqrt(var + eps), shift = beta + (bias - mean) * scale. K numbers per call,
// in double and rounded once, so nothing is cached that a changed statistic could leave stale.
void fold_batchnorm(const BatchNormEval& bn, const Tensor& bias, std::vector<float>& scale, std::vector<float>& shift) {
  const auto k = static_cast<std::size_t>(bn.gamma.numel());
  scale.resize(k);
  shift.resize(k);
  const float *gamma = bn.gamma.data<float>(), *beta = bn.beta.data<float>();
  const float *mean = bn.running_mean.data<float>(), *var = bn.running_var.data<float>();
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  for (std::size_t c = 0; c < k; ++c) {
    const double s = static_cast<double>(gamma[c]) / std::sqrt(static_cast<double>(var[c]) + bn.eps);
    scale[c] = static_cast<float>(s);
    shift[c] = static_cast<float>(beta[c] + ((b != nullptr ? b[c] : 0.0) - mean[c]) * s);
  }
}

}  // namespace

// f32 under oneDNN: one primitive, batch norm and the residual as binary post-ops, ReLU as an
// eltwise one (kernels/cpu/onednn_conv.cpp). Everything else is the unfused composition.
void CpuBackend::do_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                      const BatchNormEval& bn, const Conv2dParams& p, const Tensor& residual, bool relu,
                                      Tensor& y) {
  if (y.numel() == 0) return;
  if (x.numel() > 0 && w.numel() > 0 && x.dtype() == DType::f32 && cpu::onednn_conv_enabled(ctx.cpu_conv())) {
    std::vector<float> scale, shift;
    fold_batchnorm(bn, bias, scale, shift);
    if (cpu::onednn_conv2d_bn_forward(ctx, x, w, scale.data(), shift.data(), p, residual, relu, y)) return;
  }
  compose_conv2d_bn_forward(ctx, x, w, bias, bn, p, residual, relu, y);
}

}  // namespace cudl
