// CudaBackend: L-BFGS's device-scalar ops (axpy_scalar, abs_sum, scalar_op). Kernels in
// kernels/cuda/scalar_ops.cu; CPU twin kernels/cpu/scalar_ops.cpp. Arguments were checked by the
// Backend front.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::stream_of;

void CudaBackend::do_axpy_scalar(Context& ctx, float sign, const Tensor& alpha, const Tensor& x, Tensor& y) {
  cuda_detail::launch_axpy_scalar(sign, alpha.data<float>(), x.data<float>(), y.data<float>(), x.numel(),
                                  stream_of(ctx));
}

void CudaBackend::do_abs_sum(Context& ctx, const Tensor& x, Tensor& out) {
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_abs_sum(x.data<float>(), x.numel(), out.data<float>(), scratch.data(), stream_of(ctx));
}

void CudaBackend::do_scalar_op(Context& ctx, ScalarOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  cuda_detail::launch_scalar_op(op, a.data<float>(), b.data<float>(), out.data<float>(), stream_of(ctx));
}

}  // namespace cudl
