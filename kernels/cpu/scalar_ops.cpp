// Device-scalar arithmetic for L-BFGS on the CPU backend: axpy with a tensor-held coefficient, Σ|x|
// and the ScalarOp table. The CUDA twins live in kernels/cuda/scalar_ops.cu.
#include <cmath>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {}  // namespace

void CpuBackend::do_axpy_scalar(Context&, float sign, const Tensor& alpha, const Tensor& x, Tensor& y) {
  const float a = sign * alpha.data<float>()[0];
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const std::int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) py[i] += a * px[i];
}

void CpuBackend::do_abs_sum(Context&, const Tensor& x, Tensor& out) {
  const float* p = x.data<float>();
  const std::int64_t n = x.numel();
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(p[i]));
  out.data<float>()[0] = static_cast<float>(s);
}

void CpuBackend::do_scalar_op(Context&, ScalarOp kind, const Tensor& a, const Tensor& b, Tensor& out) {
  const float va = a.data<float>()[0];
  const float vb = b.data<float>()[0];
  float& r = out.data<float>()[0];
  switch (kind) {
    case ScalarOp::mul:
      r = va * vb;
      break;
    case ScalarOp::sub:
      r = va - vb;
      break;
    case ScalarOp::div:
      r = va / vb;
      break;
    case ScalarOp::safe_recip:
      r = va > 1e-10f ? 1.0f / va : 0.0f;
      break;
    case ScalarOp::safe_ratio:
      if (va > 1e-10f) r = va / vb;
      break;
    case ScalarOp::first_step:
      r = std::fmin(1.0f, 1.0f / va);
      break;
    case ScalarOp::clip_delta:
      r = std::fmin(1.0f, vb / (std::sqrt(va) + 1e-6f)) - 1.0f;
      break;
  }
}

}  // namespace cudl
