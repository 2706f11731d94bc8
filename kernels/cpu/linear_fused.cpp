// CpuBackend: the fused Linear + bias + ReLU (Backend::linear_bias_relu_forward). Under oneDNN
// (CpuGemm::onednn) one matmul primitive with the bias inside it and ReLU as a post-op, in f32 and,
// where this CPU has native kernels, bf16/f16 with f32 accumulation (kernels/cpu/onednn_linear.cpp);
// otherwise (OpenBLAS, an empty operand, fewer than 8 rows, no native half kernel) the reference composition of the
// three unfused ops, exactly what Linear then ReLU run, so --fuse false compares like with like.
// The CUDA twin is kernels/cublas/linear_fused.cpp.
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/onednn_linear.hpp"

namespace cudl {

void CpuBackend::do_linear_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                             Tensor& y) {
  if (y.numel() == 0) return;
  // An empty inner dimension (in = 0) leaves relu(bias): the composition handles it.
  if (x.numel() > 0 && cpu::onednn_linear_bias_relu(ctx.cpu_gemm(), x, w, bias, y)) return;
  do_gemm(ctx, false, true, 1.0f, x, w, 0.0f, y);
  if (bias.defined()) do_bias_add(ctx, y, bias);
  do_activation_forward(ctx, Activation::relu, 0.0f, y, y);  // elementwise: in place is safe
}

}  // namespace cudl
