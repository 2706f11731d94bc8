// Device-scalar arithmetic for L-BFGS: axpy with a coefficient read from device memory, and the
// ScalarOp table evaluated by one thread. Nothing here waits for the device.
#include "kernels/cuda/launch.hpp"
#include "kernels/cuda/reduce_util.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void axpy_scalar_kernel(float sign, const float* alpha, const float* x, float* y, std::int64_t n) {
  const float a = sign * alpha[0];
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) y[i] += a * x[i];
}

__global__ void scalar_op_kernel(int op, const float* a, const float* b, float* out) {
  const float va = a[0];
  const float vb = b[0];
  switch (op) {
    case kScalarMul:
      out[0] = va * vb;
      break;
    case kScalarSub:
      out[0] = va - vb;
      break;
    case kScalarDiv:
      out[0] = va / vb;
      break;
    case kScalarSafeRecip:
      out[0] = va > 1e-10f ? 1.0f / va : 0.0f;
      break;
    case kScalarSafeRatio:
      if (va > 1e-10f) out[0] = va / vb;
      break;
    case kScalarFirstStep:
      out[0] = fminf(1.0f, 1.0f / va);
      break;
    default:
      break;
  }
}

}  // namespace

void launch_axpy_scalar(float sign, const float* alpha, const float* x, float* y, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  axpy_scalar_kernel<<<grid_for(n), 256, 0, stream>>>(sign, alpha, x, y, n);
  check_launch("axpy_scalar_kernel");
}

void launch_scalar_op(int op, const float* a, const float* b, float* out, cudaStream_t stream) {
  scalar_op_kernel<<<1, 1, 0, stream>>>(op, a, b, out);
  check_launch("scalar_op_kernel");
}

}  // namespace cudl::cuda_detail
