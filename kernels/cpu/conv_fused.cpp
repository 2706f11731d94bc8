// CpuBackend: the fused convolution + bias + ReLU (Backend::conv2d_bias_relu_forward). Under oneDNN
// it runs as one primitive with ReLU as a post-op (kernels/cpu/onednn_conv.cpp), in f32 and in the
// halves this CPU has native kernels for (bf16 on AVX-512 BF16/AMX: f32 sums and bias, y rounded
// once); everything else (im2col, a half without a native kernel, a geometry oneDNN cannot
// express) is the reference composition of the three unfused ops, so both paths compute the same
// function and the network's fusion can be switched off (--fuse false) to compare. The CUDA twin
// is kernels/cudnn/conv_fused.cpp.
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"

namespace cudl {

void CpuBackend::do_conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                             const Conv2dParams& p, Tensor& y) {
  if (y.numel() == 0) return;
  if (x.numel() > 0 && w.numel() > 0 && cpu::onednn_conv_enabled(ctx.cpu_conv()) &&
      cpu::onednn_conv2d_bias_relu_forward(ctx, x, w, bias, p, y))
    return;
  do_conv2d_forward(ctx, x, w, p, y);
  if (bias.defined()) do_bias_add(ctx, y, bias);
  do_activation_forward(ctx, Activation::relu, 0.0f, y, y);  // elementwise: in place is safe
}

}  // namespace cudl
