// Elementwise kernels: fills, axpy/scale/mul/clamp, seeded random fills, dropout, activations,
// bias, the per-channel affine map and the fused optimizer steps. Each mirrors its CPU twin's
// formula (kernels/cpu/).
#include <cmath>

#include "engine/philox.hpp"
#include "kernels/cuda/launch.hpp"
#include "kernels/cuda/reduce_util.cuh"

namespace cudl::cuda_detail {

namespace {

constexpr unsigned kBlock = 256;

__global__ void fill_kernel(float* x, std::int64_t n, float value) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) x[i] = value;
}

__global__ void axpy_kernel(float alpha, const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) y[i] += alpha * x[i];
}

__global__ void scale_kernel(float* x, float alpha, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) x[i] *= alpha;
}

__global__ void mul_kernel(const float* a, const float* b, float* out, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) out[i] = a[i] * b[i];
}

// __fmul_rn/__fadd_rn keep nvcc from contracting into an FMA, so the values are bit-identical to
// the CPU's `low + width * u`.
__global__ void fill_uniform_kernel(float* x, std::int64_t n, float low, float high, std::uint64_t seed,
                                    std::uint64_t offset) {
  const float width = high - low;
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    float u = philox::uniform(offset + static_cast<std::uint64_t>(i), seed);
    float v = __fadd_rn(low, __fmul_rn(width, u));
    x[i] = (v < high || low == high) ? v : low;  // keep the interval half-open, like the CPU
  }
}

__global__ void fill_normal_kernel(float* x, std::int64_t n, float mean, float stddev, std::uint64_t seed,
                                   std::uint64_t offset) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride())
    x[i] = __fadd_rn(mean, __fmul_rn(stddev, philox::normal(offset + static_cast<std::uint64_t>(i), seed)));
}

__global__ void dropout_kernel(const float* x, float* y, float* mask, std::int64_t n, float p, float keep_scale,
                               std::uint64_t seed, std::uint64_t offset) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    float u = philox::uniform(offset + static_cast<std::uint64_t>(i), seed);
    float m = u >= p ? keep_scale : 0.0f;
    mask[i] = m;
    y[i] = x[i] * m;
  }
}

__device__ __forceinline__ float activate(int kind, float alpha, float x) {
  switch (kind) {
    case kRelu: return x > 0.0f ? x : 0.0f;
    case kLeakyRelu: return x > 0.0f ? x : alpha * x;
    case kSigmoid: return 1.0f / (1.0f + expf(-x));
    default: return tanhf(x);
  }
}

__device__ __forceinline__ float activate_grad(int kind, float alpha, float x, float y, float dy) {
  switch (kind) {
    case kRelu: return x > 0.0f ? dy : 0.0f;
    case kLeakyRelu: return x > 0.0f ? dy : alpha * dy;
    case kSigmoid: return dy * y * (1.0f - y);
    default: return dy * (1.0f - y * y);
  }
}

__global__ void activation_forward_kernel(int kind, float alpha, const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) y[i] = activate(kind, alpha, x[i]);
}

__global__ void activation_backward_kernel(int kind, float alpha, const float* x, const float* y, const float* dy,
                                           float* dx, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride())
    dx[i] = activate_grad(kind, alpha, x[i], y[i], dy[i]);
}

__global__ void bias_add_kernel(float* y, const float* bias, std::int64_t n, std::int64_t channels,
                                std::int64_t inner) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) y[i] += bias[(i / inner) % channels];
}

__global__ void channel_affine_kernel(const float* x, const float* scale, const float* shift, float* y, std::int64_t n,
                                      std::int64_t channels, std::int64_t inner) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const std::int64_t c = (i / inner) % channels;
    // __fmul_rn/__fadd_rn: no FMA contraction, so y matches the CPU's x * s + b bit for bit.
    y[i] = __fadd_rn(__fmul_rn(x[i], scale[c]), shift[c]);
  }
}

__global__ void channel_scale_kernel(const float* dy, const float* scale, float* dx, std::int64_t n,
                                     std::int64_t channels, std::int64_t inner) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) dx[i] = dy[i] * scale[(i / inner) % channels];
}

// Comparisons rather than fminf/fmaxf, which would turn a NaN into a bound; the CPU does the same.
__global__ void clamp_kernel(float* x, std::int64_t n, float low, float high) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const float v = x[i];
    x[i] = v < low ? low : (v > high ? high : v);
  }
}

// One block per channel.
__global__ void bias_grad_kernel(const float* dy, float* dbias, std::int64_t outer, std::int64_t channels,
                                 std::int64_t inner, bool accumulate) {
  __shared__ float scratch[32];
  const std::int64_t c = blockIdx.x;
  const std::int64_t count = outer * inner;
  float acc = 0.0f;
  for (std::int64_t j = threadIdx.x; j < count; j += blockDim.x) {
    std::int64_t o = j / inner, i = j - o * inner;
    acc += dy[(o * channels + c) * inner + i];
  }
  float total = block_sum(acc, scratch);
  if (threadIdx.x == 0) dbias[c] = accumulate ? dbias[c] + total : total;
}

__global__ void sgd_kernel(float* param, const float* grad, float* buf, std::int64_t n, float lr, float momentum,
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

__global__ void adam_kernel(float* param, const float* grad, float* m_state, float* v_state, std::int64_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled,
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

void launch_fill(float* x, std::int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, n, value);
  check_launch("fill_kernel");
}

void launch_axpy(float alpha, const float* x, float* y, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  axpy_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(alpha, x, y, n);
  check_launch("axpy_kernel");
}

void launch_scale(float* x, float alpha, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, alpha, n);
  check_launch("scale_kernel");
}

void launch_mul(const float* a, const float* b, float* out, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  mul_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(a, b, out, n);
  check_launch("mul_kernel");
}

void launch_fill_uniform(float* x, std::int64_t n, float low, float high, std::uint64_t seed, std::uint64_t offset,
                         cudaStream_t stream) {
  if (n <= 0) return;
  fill_uniform_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, n, low, high, seed, offset);
  check_launch("fill_uniform_kernel");
}

void launch_fill_normal(float* x, std::int64_t n, float mean, float stddev, std::uint64_t seed,
                        std::uint64_t offset, cudaStream_t stream) {
  if (n <= 0) return;
  fill_normal_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, n, mean, stddev, seed, offset);
  check_launch("fill_normal_kernel");
}

void launch_dropout(const float* x, float* y, float* mask, std::int64_t n, float p, float keep_scale,
                    std::uint64_t seed, std::uint64_t offset, cudaStream_t stream) {
  if (n <= 0) return;
  dropout_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, y, mask, n, p, keep_scale, seed, offset);
  check_launch("dropout_kernel");
}

void launch_activation_forward(int kind, float alpha, const float* x, float* y, std::int64_t n,
                               cudaStream_t stream) {
  if (n <= 0) return;
  activation_forward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(kind, alpha, x, y, n);
  check_launch("activation_forward_kernel");
}

void launch_activation_backward(int kind, float alpha, const float* x, const float* y, const float* dy, float* dx,
                                std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  activation_backward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(kind, alpha, x, y, dy, dx, n);
  check_launch("activation_backward_kernel");
}

void launch_bias_add(float* y, const float* bias, std::int64_t outer, std::int64_t channels, std::int64_t inner,
                     cudaStream_t stream) {
  const std::int64_t n = outer * channels * inner;
  if (n <= 0) return;
  bias_add_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(y, bias, n, channels, inner);
  check_launch("bias_add_kernel");
}

void launch_bias_grad(const float* dy, float* dbias, std::int64_t outer, std::int64_t channels, std::int64_t inner,
                      bool accumulate, cudaStream_t stream) {
  if (channels <= 0) return;
  // channels is at most a few thousand for any layer; gridDim.x allows 2^31 - 1.
  bias_grad_kernel<<<static_cast<unsigned>(channels), kBlock, 0, stream>>>(dy, dbias, outer, channels, inner,
                                                                          accumulate);
  check_launch("bias_grad_kernel");
}

void launch_sgd_step(float* param, const float* grad, float* momentum_buf, std::int64_t n, float lr, float momentum,
                     float dampening, float weight_decay, bool nesterov, cudaStream_t stream) {
  if (n <= 0) return;
  sgd_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(param, grad, momentum_buf, n, lr, momentum, dampening,
                                                        weight_decay, nesterov);
  check_launch("sgd_kernel");
}

void launch_channel_affine(const float* x, const float* scale, const float* shift, float* y, std::int64_t outer,
                           std::int64_t channels, std::int64_t inner, cudaStream_t stream) {
  const std::int64_t n = outer * channels * inner;
  if (n <= 0) return;
  channel_affine_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, scale, shift, y, n, channels, inner);
  check_launch("channel_affine_kernel");
}

void launch_channel_scale(const float* dy, const float* scale, float* dx, std::int64_t outer, std::int64_t channels,
                          std::int64_t inner, cudaStream_t stream) {
  const std::int64_t n = outer * channels * inner;
  if (n <= 0) return;
  channel_scale_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(dy, scale, dx, n, channels, inner);
  check_launch("channel_scale_kernel");
}

void launch_clamp(float* x, std::int64_t n, float low, float high, cudaStream_t stream) {
  if (n <= 0) return;
  clamp_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, n, low, high);
  check_launch("clamp_kernel");
}

void launch_adam_step(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                      float beta2, float eps, float weight_decay, bool decoupled, float bias_correction1,
                      float bias_correction2, cudaStream_t stream) {
  if (n <= 0) return;
  adam_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay,
                                                         decoupled, bias_correction1, bias_correction2);
  check_launch("adam_kernel");
}

}  // namespace cudl::cuda_detail
