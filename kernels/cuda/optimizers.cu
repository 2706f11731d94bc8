// Fused optimizer steps: one pass over param, grad and state. CPU twin: kernels/cpu/optimizers.cpp.
#include <cmath>

#include "kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void sgd_kernel(std::int64_t n, float* param, const float* grad, float* buf, float lr, float momentum,
                           float dampening, float weight_decay, bool nesterov) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f) g += weight_decay * p;
    if (momentum != 0.0f) {
      float b = momentum * buf[i] + (1.0f - dampening) * g;
      buf[i] = b;
      g = nesterov ? g + momentum * b : b;
    }
    param[i] = p - lr * g;
  }
}

__global__ void adam_kernel(std::int64_t n, float* param, const float* grad, float* m_state, float* v_state, float lr,
                            float beta1, float beta2, float eps, float weight_decay, bool decoupled,
                            float bias_correction1, float bias_correction2) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f) {
      if (decoupled)
        p *= 1.0f - lr * weight_decay;
      else
        g += weight_decay * p;
    }
    float m = beta1 * m_state[i] + (1.0f - beta1) * g;
    float v = beta2 * v_state[i] + (1.0f - beta2) * g * g;
    m_state[i] = m;
    v_state[i] = v;
    float m_hat = m / bias_correction1;
    float v_hat = v / bias_correction2;
    param[i] = p - lr * m_hat / (sqrtf(v_hat) + eps);
  }
}

}  // namespace

void launch_sgd_step(float* param, const float* grad, float* momentum_buf, std::int64_t n, float lr, float momentum,
                     float dampening, float weight_decay, bool nesterov, cudaStream_t stream) {
  launch_linear("sgd_kernel", sgd_kernel, n, stream, param, grad, momentum_buf, lr, momentum, dampening, weight_decay,
                nesterov);
}

void launch_adam_step(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                      float beta2, float eps, float weight_decay, bool decoupled, float bias_correction1,
                      float bias_correction2, cudaStream_t stream) {
  launch_linear("adam_kernel", adam_kernel, n, stream, param, grad, m, v, lr, beta1, beta2, eps, weight_decay,
                decoupled, bias_correction1, bias_correction2);
}

}  // namespace cudl::cuda_detail
