// Fused optimizer steps: one pass over param, grad and state per tensor.
#include <cmath>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {
// The step's per-step values: from p.scalars when given (a host tensor here), else from p's host
// fields, by the same function that filled the tensor (so both give the same bits).
template <class Params>
OptimizerStepValues step_values(const Params& p) {
  if (!p.scalars.defined()) return optimizer_scalars(p);
  OptimizerStepValues s;
  const float* values = p.scalars.template data<float>();
  for (int i = 0; i < kOptimizerScalars; ++i) s.v[i] = values[i];
  return s;
}
}  // namespace

void CpuBackend::do_sgd_step(Context&, const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf) {
  const bool use_momentum = p.momentum > 0.0f;
  float* buf = nullptr;
  if (use_momentum) {
    buf = momentum_buf.data<float>();
  }
  float* w = param.data<float>();
  const float* g = grad.data<float>();
  const std::int64_t n = param.numel();
  const float lr = step_values(p).v[kOptLr], wd = p.weight_decay, mu = p.momentum, damp = 1.0f - p.dampening;
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
  const OptimizerStepValues s = step_values(p);
  const float step_size = s.v[kOptAdamStepSize];
  const float inv_sqrt_bc2 = s.v[kOptAdamInvSqrtBc2];
  const float shrink = s.v[kOptAdamShrink];
  const float b1 = p.beta1, b2 = p.beta2, eps = p.eps;
  const float l2 = p.decoupled_weight_decay ? 0.0f : p.weight_decay;
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
