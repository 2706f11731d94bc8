// Elementwise basics (fill, copy, axpy, scale, clamp) and seeded random fills.
#include <algorithm>
#include <cstring>

#include "cudl/engine/philox.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {
template <class T>
void fill_with(T* p, std::int64_t n, T value) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) p[i] = value;
}
}  // namespace

void CpuBackend::do_fill(Context&, Tensor& x, float value) {
  const std::int64_t n = x.numel();
  if (x.dtype() == DType::bf16) return fill_with(x.data<bf16>(), n, to_bf16(value));
  if (x.dtype() == DType::f16) return fill_with(x.data<f16>(), n, to_f16(value));
  fill_with(x.data<float>(), n, value);
}

void CpuBackend::do_copy(Context&, const Tensor& src, Tensor& dst) {
  // memmove: the caller may copy between overlapping views of one storage.
  std::memmove(dst.raw(), src.raw(), src.nbytes());
}

namespace {

// In chunks through the cloned loops (simd_clones.hpp): a half axpy is how style transfer adds each
// tap's gradient, and the baseline build rounded those one element at a time.
template <class T>
CUDL_CPU_CLONES void axpy_chunk(float alpha, const T* px, T* py, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) py[i] = store<T>(load(py[i]) + alpha * load(px[i]));
}

template <class T>
void axpy_kernel(float alpha, const T* px, T* py, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; i += cpu::kSimdChunk)
    axpy_chunk(alpha, px + i, py + i, std::min(cpu::kSimdChunk, n - i));
}

template <class T>
CUDL_CPU_CLONES void scale_chunk(T* p, float alpha, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) p[i] = store<T>(load(p[i]) * alpha);
}

template <class T>
void scale_kernel(T* p, float alpha, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; i += cpu::kSimdChunk) scale_chunk(p + i, alpha, std::min(cpu::kSimdChunk, n - i));
}

}  // namespace

void CpuBackend::do_axpy(Context&, float alpha, const Tensor& x, Tensor& y) {
  cpu::dispatch_float(x.dtype(), "axpy", [&](auto tag) {
    using T = decltype(tag);
    axpy_kernel(alpha, x.data<T>(), y.data<T>(), x.numel());
  });
}

void CpuBackend::do_scale(Context&, Tensor& x, float alpha) {
  cpu::dispatch_float(x.dtype(), "scale", [&](auto tag) { scale_kernel(x.data<decltype(tag)>(), alpha, x.numel()); });
}

void CpuBackend::do_clamp(Context&, Tensor& x, float low, float high) {
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
  // Comparisons, not std::clamp/fmin: a NaN stays NaN (as in PyTorch), the same on the GPU.
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) p[i] = p[i] < low ? low : (p[i] > high ? high : p[i]);
}

void CpuBackend::do_fill_uniform(Context&, Tensor& x, float low, float high, std::uint64_t seed, std::uint64_t offset) {
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
  const float width = high - low;
#pragma omp parallel for if (n >= kParallelThreshold / 8)
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = low + width * philox::uniform(offset + static_cast<std::uint64_t>(i), seed);
    p[i] = (v < high || low == high) ? v : low;  // rounding can reach high: keep [low, high) half-open, as on the GPU
  }
}

void CpuBackend::do_fill_normal(Context&, Tensor& x, float mean, float stddev, std::uint64_t seed,
                                std::uint64_t offset) {
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelThreshold / 8)
  for (std::int64_t i = 0; i < n; ++i)
    p[i] = mean + stddev * philox::normal(offset + static_cast<std::uint64_t>(i), seed);
}

}  // namespace cudl
