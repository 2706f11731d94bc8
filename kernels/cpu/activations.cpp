// Pointwise activations: y = f(x), dx = f'(x) * dy.
#include <cmath>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

// One loop per activation, with the switch outside it, so each loop vectorises.
template <class F>
void map(const float* x, float* y, std::int64_t n, F f) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class F>
void map2(const float* a, const float* b, float* out, std::int64_t n, F f) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}

}  // namespace

void CpuBackend::do_activation_forward(Context&, Activation a, float alpha, const Tensor& x, Tensor& y) {
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const std::int64_t n = x.numel();
  switch (a) {
    case Activation::relu:
      map(px, py, n, [](float v) { return v > 0.0f ? v : 0.0f; });
      return;
    case Activation::leaky_relu:
      map(px, py, n, [alpha](float v) { return v > 0.0f ? v : alpha * v; });
      return;
    case Activation::sigmoid:
      map(px, py, n, [](float v) { return 1.0f / (1.0f + std::exp(-v)); });
      return;
    case Activation::tanh:
      map(px, py, n, [](float v) { return std::tanh(v); });
      return;
  }
  CUDL_THROW("activation_forward: unknown activation {}", static_cast<int>(a));
}

void CpuBackend::do_activation_backward(Context&, Activation a, float alpha, const Tensor& x, const Tensor& y,
                                        const Tensor& dy, Tensor& dx) {
  float* pdx = dx.data<float>();
  const float* pdy = dy.data<float>();
  const std::int64_t n = dy.numel();
  switch (a) {
    case Activation::relu:
      // 0, not 0 * dy: an infinite or NaN gradient stops where the unit is off (as in PyTorch and
      // the CUDA kernel).
      map2(x.data<float>(), pdy, pdx, n, [](float v, float g) { return v > 0.0f ? g : 0.0f; });
      return;
    case Activation::leaky_relu:
      map2(x.data<float>(), pdy, pdx, n, [alpha](float v, float g) { return v > 0.0f ? g : alpha * g; });
      return;
    case Activation::sigmoid:
      map2(y.data<float>(), pdy, pdx, n, [](float s, float g) { return g * s * (1.0f - s); });
      return;
    case Activation::tanh:
      map2(y.data<float>(), pdy, pdx, n, [](float t, float g) { return g * (1.0f - t * t); });
      return;
  }
  CUDL_THROW("activation_backward: unknown activation {}", static_cast<int>(a));
}

}  // namespace cudl
