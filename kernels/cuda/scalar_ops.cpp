// CudaBackend: L-BFGS's device-scalar ops (axpy_scalar, abs_sum, scalar_op). Kernels in
// kernels/cuda/scalar.cu and kernels/cuda/reduce.cu.
#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"

namespace cudl {

using cuda_detail::device_tensor;
using cuda_detail::stream_of;

static_assert(static_cast<int>(ScalarOp::mul) == cuda_detail::kScalarMul &&
                  static_cast<int>(ScalarOp::sub) == cuda_detail::kScalarSub &&
                  static_cast<int>(ScalarOp::div) == cuda_detail::kScalarDiv &&
                  static_cast<int>(ScalarOp::safe_recip) == cuda_detail::kScalarSafeRecip &&
                  static_cast<int>(ScalarOp::safe_ratio) == cuda_detail::kScalarSafeRatio &&
                  static_cast<int>(ScalarOp::first_step) == cuda_detail::kScalarFirstStep,
              "ScalarOp and cuda_detail::ScalarOpKind list the operations in the same order");

namespace {
void device_scalar(Context& ctx, std::string_view op, std::string_view name, const Tensor& t) {
  device_tensor(op, name, t, ctx);
  check::numel_is(op, name, t, 1);
}
}  // namespace

void CudaBackend::axpy_scalar(Context& ctx, float sign, const Tensor& alpha, const Tensor& x, Tensor& y) {
  const char* op = "axpy_scalar";
  device_scalar(ctx, op, "alpha", alpha);
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "y", y, ctx);
  check::same_shape(op, "x", x, "y", y);
  cuda_detail::launch_axpy_scalar(sign, alpha.data<float>(), x.data<float>(), y.data<float>(), x.numel(),
                                  stream_of(ctx));
}

void CudaBackend::abs_sum(Context& ctx, const Tensor& x, Tensor& out) {
  device_tensor("abs_sum", "x", x, ctx);
  device_scalar(ctx, "abs_sum", "out", out);
  Workspace partials(ctx, cuda_detail::kLossPartials * sizeof(float));
  cuda_detail::launch_abs_sum(x.data<float>(), x.numel(), static_cast<float*>(partials.data()), out.data<float>(),
                              stream_of(ctx));
}

void CudaBackend::scalar_op(Context& ctx, ScalarOp kind, const Tensor& a, const Tensor& b, Tensor& out) {
  device_scalar(ctx, "scalar_op", "a", a);
  device_scalar(ctx, "scalar_op", "b", b);
  device_scalar(ctx, "scalar_op", "out", out);
  cuda_detail::launch_scalar_op(static_cast<int>(kind), a.data<float>(), b.data<float>(), out.data<float>(),
                                stream_of(ctx));
}

}  // namespace cudl
