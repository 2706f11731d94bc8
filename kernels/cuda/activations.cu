// Pointwise activations: y = f(x), dx = f'(x) * dy. CPU twin: kernels/cpu/activations.cpp.
#include <cmath>

#include "cudl/kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

__device__ __forceinline__ float activate(Activation a, float alpha, float x) {
  switch (a) {
    case Activation::relu:
      return x > 0.0f ? x : 0.0f;
    case Activation::leaky_relu:
      return x > 0.0f ? x : alpha * x;
    case Activation::sigmoid:
      return 1.0f / (1.0f + expf(-x));
    case Activation::tanh:
      break;
  }
  return tanhf(x);
}

// `saved` is x for ReLU-like activations and y for sigmoid/tanh.
__device__ __forceinline__ float activate_grad(Activation a, float alpha, float saved, float dy) {
  switch (a) {
    case Activation::relu:
      return saved > 0.0f ? dy : 0.0f;
    case Activation::leaky_relu:
      return saved > 0.0f ? dy : alpha * dy;
    case Activation::sigmoid:
      return dy * saved * (1.0f - saved);
    case Activation::tanh:
      break;
  }
  return dy * __fsub_rn(1.0f, __fmul_rn(saved, saved));  // y*y rounded first, as on the CPU (no FMA)
}

__global__ void activation_forward_kernel(std::int64_t n, Activation a, float alpha, const float* x, float* y) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) y[i] = activate(a, alpha, x[i]);
}

__global__ void activation_backward_kernel(std::int64_t n, Activation a, float alpha, const float* saved,
                                           const float* dy, float* dx) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) dx[i] = activate_grad(a, alpha, saved[i], dy[i]);
}

}  // namespace

void launch_activation_forward(Activation a, float alpha, const float* x, float* y, std::int64_t n,
                               cudaStream_t stream) {
  launch_linear("activation_forward_kernel", activation_forward_kernel, n, stream, a, alpha, x, y);
}

void launch_activation_backward(Activation a, float alpha, const float* saved, const float* dy, float* dx,
                                std::int64_t n, cudaStream_t stream) {
  launch_linear("activation_backward_kernel", activation_backward_kernel, n, stream, a, alpha, saved, dy, dx);
}

}  // namespace cudl::cuda_detail
