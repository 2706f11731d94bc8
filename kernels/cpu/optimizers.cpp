// Fused optimizer steps: one pass over param, grad and state per tensor.
#include <cmath>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

void CpuBackend::do_sgd_step(Context&, const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf) {
  const bool use_momentum = p.momentum > 0.0f;
  float* buf = nullptr;
  if (use_momentum) {
    buf = momentum_buf.data<float>();
  }
  float* w = param.data<float>();
  const float* g = grad.data<float>();
  const std::int64_t n = param.numel();
  const float lr = p.lr, wd = p.weight_decay, mu = p.momentum, damp = 1.0f - p.dampening;
  const bool nesterov = p.nesterov;
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    float d = g[i] + wd * w[i];
    if (use_momentum) {
      const float b = mu * buf[i] + damp * d;
      buf[i] = b;
      d = nesterov ? d + mu * b : b;
    }
    w[i] -= lr * d;
  }
}

void CpuBackend::do_adam_step(Context&, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v) {
  // Bias corrections in double: beta2^t stays accurate for the large t of long runs.
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const float step_size = static_cast<float>(p.lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float b1 = p.beta1, b2 = p.beta2, eps = p.eps;
  const float l2 = p.decoupled_weight_decay ? 0.0f : p.weight_decay;
  const float shrink = p.decoupled_weight_decay ? 1.0f - p.lr * p.weight_decay : 1.0f;
  float* w = param.data<float>();
  const float* g = grad.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const std::int64_t n = param.numel();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float d = g[i] + l2 * w[i];
    const float mi = b1 * pm[i] + (1.0f - b1) * d;
    const float vi = b2 * pv[i] + (1.0f - b2) * d * d;
    pm[i] = mi;
    pv[i] = vi;
    w[i] = w[i] * shrink - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

}  // namespace cudl
