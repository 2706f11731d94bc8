// Fused optimizer steps: one pass over param, grad and state. CPU twin: kernels/cpu/optimizers.cpp,
// whose expressions these are, term for term. __fmul_rn/__fadd_rn/__fsub_rn round every product
// and sum separately, as the CPU does (nvcc would otherwise fuse them into FMAs), so a step on the
// GPU gives the CPU's bits and a run can move between devices without drifting.
#include <cmath>

#include "cudl/engine/op_kinds.hpp"  // OptimizerScalar
#include "cudl/kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

// d = g + wd * w; with momentum: b = mu * buf + damp * d, d = nesterov ? d + mu * b : b; w -= lr * d.
__global__ void sgd_kernel(std::int64_t n, float* param, const float* grad, float* buf, float lr, float momentum,
                           float damp, float weight_decay, bool nesterov, const float* scalars) {
  if (scalars) lr = scalars[kOptLr];  // a replayed graph's step: this step's rate, on the device
  const bool use_momentum = momentum > 0.0f;
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const float w = param[i];
    float d = __fadd_rn(grad[i], __fmul_rn(weight_decay, w));
    if (use_momentum) {
      const float b = __fadd_rn(__fmul_rn(momentum, buf[i]), __fmul_rn(damp, d));
      buf[i] = b;
      d = nesterov ? __fadd_rn(d, __fmul_rn(momentum, b)) : b;
    }
    param[i] = __fsub_rn(w, __fmul_rn(lr, d));
  }
}

// d = g + l2 * w; m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d d;
// w = w * shrink - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps).
__global__ void adam_kernel(std::int64_t n, float* param, const float* grad, float* m_state, float* v_state,
                            float beta1, float beta2, float eps, float l2, float shrink, float step_size,
                            float inv_sqrt_bc2, const float* scalars) {
  if (scalars) {  // a replayed graph's step: this step's values, on the device
    step_size = scalars[kOptAdamStepSize];
    inv_sqrt_bc2 = scalars[kOptAdamInvSqrtBc2];
    shrink = scalars[kOptAdamShrink];
  }
  const float one_minus_b1 = 1.0f - beta1, one_minus_b2 = 1.0f - beta2;
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const float w = param[i];
    const float d = __fadd_rn(grad[i], __fmul_rn(l2, w));
    const float m = __fadd_rn(__fmul_rn(beta1, m_state[i]), __fmul_rn(one_minus_b1, d));
    const float v = __fadd_rn(__fmul_rn(beta2, v_state[i]), __fmul_rn(__fmul_rn(one_minus_b2, d), d));
    m_state[i] = m;
    v_state[i] = v;
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v), inv_sqrt_bc2), eps);
    param[i] = __fsub_rn(__fmul_rn(w, shrink), __fdiv_rn(__fmul_rn(step_size, m), denom));
  }
}

}  // namespace

void launch_sgd_step(float* param, const float* grad, float* momentum_buf, std::int64_t n, float lr, float momentum,
                     float dampening, float weight_decay, bool nesterov, const float* scalars, cudaStream_t stream) {
  launch_linear("sgd_kernel", sgd_kernel, n, stream, param, grad, momentum_buf, lr, momentum, 1.0f - dampening,
                weight_decay, nesterov, scalars);
}

void launch_adam_step(float* param, const float* grad, float* m, float* v, std::int64_t n, float beta1, float beta2,
                      float eps, float l2, float shrink, float step_size, float inv_sqrt_bc2, const float* scalars,
                      cudaStream_t stream) {
  launch_linear("adam_kernel", adam_kernel, n, stream, param, grad, m, v, beta1, beta2, eps, l2, shrink, step_size,
                inv_sqrt_bc2, scalars);
}

}  // namespace cudl::cuda_detail
