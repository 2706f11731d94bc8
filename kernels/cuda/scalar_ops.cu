// Device-scalar arithmetic for L-BFGS: axpy with a coefficient read from device memory, Σ|x|, and
// the ScalarOp table evaluated by one thread. CPU twin: kernels/cpu/scalar_ops.cpp.
#include <cmath>

#include "cudl/kernels/cuda/launch.cuh"
#include "cudl/kernels/cuda/reduce.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void axpy_scalar_kernel(std::int64_t n, float sign, const float* alpha, const float* x, float* y) {
  const float a = sign * alpha[0];
  // The product rounded before the sum, as on the CPU (no FMA).
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) y[i] = __fadd_rn(y[i], __fmul_rn(a, x[i]));
}

struct AbsValue {
  const float* x;
  __device__ double operator()(std::int64_t i) const { return fabs(static_cast<double>(x[i])); }
};

__global__ void scalar_op_kernel(ScalarOp op, const float* a, const float* b, float* out) {
  const float va = a[0];
  const float vb = b[0];
  switch (op) {
    case ScalarOp::mul:
      out[0] = va * vb;
      break;
    case ScalarOp::sub:
      out[0] = va - vb;
      break;
    case ScalarOp::div:
      out[0] = va / vb;
      break;
    case ScalarOp::safe_recip:
      out[0] = va > 1e-10f ? 1.0f / va : 0.0f;
      break;
    case ScalarOp::safe_ratio:
      if (va > 1e-10f) out[0] = va / vb;
      break;
    case ScalarOp::first_step:
      out[0] = fminf(1.0f, 1.0f / va);
      break;
    case ScalarOp::clip_delta:
      out[0] = __fsub_rn(fminf(1.0f, __fdiv_rn(vb, __fadd_rn(sqrtf(va), 1e-6f))), 1.0f);
      break;
  }
}

}  // namespace

void launch_axpy_scalar(float sign, const float* alpha, const float* x, float* y, std::int64_t n, cudaStream_t stream) {
  launch_linear("axpy_scalar_kernel", axpy_scalar_kernel, n, stream, sign, alpha, x, y);
}

void launch_abs_sum(const float* x, std::int64_t n, float* out, void* scratch, cudaStream_t stream) {
  reduce_to_scalar<SumOp>(AbsValue{x}, n, DivideBy{1.0}, out, scratch, stream);
}

void launch_scalar_op(ScalarOp op, const float* a, const float* b, float* out, cudaStream_t stream) {
  launch_grid("scalar_op_kernel", scalar_op_kernel, dim3(1), dim3(1), stream, op, a, b, out);
}

}  // namespace cudl::cuda_detail
