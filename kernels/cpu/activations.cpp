// Pointwise activations: y = f(x), dx = f'(x) * dy.
#include <algorithm>
#include <cmath>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

// One loop per activation and element type, with both switches outside it, so each loop
// vectorises (AVX-512 where the CPU has it: simd_clones.hpp). f is evaluated in f32; a half
// result is rounded once.
template <class T, class F>
CUDL_CPU_CLONES void map_chunk(const T* x, T* y, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = store<T>(f(load(x[i])));
}

template <class T, class F>
CUDL_CPU_CLONES void map2_chunk(const T* a, const T* b, T* out, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = store<T>(f(load(a[i]), load(b[i])));
}

template <class T, class F>
void map(const T* x, T* y, std::int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; i += cpu::kSimdChunk) map_chunk(x + i, y + i, std::min(cpu::kSimdChunk, n - i), f);
}

template <class T, class F>
void map2(const T* a, const T* b, T* out, std::int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; i += cpu::kSimdChunk)
    map2_chunk(a + i, b + i, out + i, std::min(cpu::kSimdChunk, n - i), f);
}

template <class T>
void forward(Activation a, float alpha, const Tensor& x, Tensor& y) {
  const T* px = x.data<T>();
  T* py = y.data<T>();
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
    case Activation::relu6:
      map(px, py, n, [](float v) { return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f; });
      return;
  }
  CUDL_THROW("activation_forward: unknown activation {}", static_cast<int>(a));
}

template <class T>
void backward(Activation a, float alpha, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) {
  T* pdx = dx.data<T>();
  const T* pdy = dy.data<T>();
  const std::int64_t n = dy.numel();
  switch (a) {
    case Activation::relu:
      // 0, not 0 * dy: an infinite or NaN gradient stops where the unit is off (as in PyTorch and
      // the CUDA kernel).
      map2(x.data<T>(), pdy, pdx, n, [](float v, float g) { return v > 0.0f ? g : 0.0f; });
      return;
    case Activation::leaky_relu:
      map2(x.data<T>(), pdy, pdx, n, [alpha](float v, float g) { return v > 0.0f ? g : alpha * g; });
      return;
    case Activation::sigmoid:
      map2(y.data<T>(), pdy, pdx, n, [](float s, float g) { return g * s * (1.0f - s); });
      return;
    case Activation::tanh:
      map2(y.data<T>(), pdy, pdx, n, [](float t, float g) { return g * (1.0f - t * t); });
      return;
    case Activation::relu6:
      // PyTorch's hardtanh gradient: dy strictly inside (0, 6), 0 at and beyond the kinks.
      map2(x.data<T>(), pdy, pdx, n, [](float v, float g) { return v > 0.0f && v < 6.0f ? g : 0.0f; });
      return;
  }
  CUDL_THROW("activation_backward: unknown activation {}", static_cast<int>(a));
}

}  // namespace

void CpuBackend::do_activation_forward(Context&, Activation a, float alpha, const Tensor& x, Tensor& y) {
  cpu::dispatch_float(x.dtype(), "activation_forward", [&](auto tag) { forward<decltype(tag)>(a, alpha, x, y); });
}

void CpuBackend::do_activation_backward(Context&, Activation a, float alpha, const Tensor& x, const Tensor& y,
                                        const Tensor& dy, Tensor& dx) {
  cpu::dispatch_float(dy.dtype(), "activation_backward",
                      [&](auto tag) { backward<decltype(tag)>(a, alpha, x, y, dy, dx); });
}

}  // namespace cudl
