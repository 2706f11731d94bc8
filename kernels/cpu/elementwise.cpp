// Elementwise basics (fill, copy, axpy, scale, clamp) and seeded random fills.
#include <cstring>

#include "engine/philox.hpp"
#include "kernels/cpu/cpu_args.hpp"
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::host_tensor;
using cpu::kParallelThreshold;

void CpuBackend::fill(Context&, Tensor& x, float value) {
  host_tensor("fill", "x", x);
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) p[i] = value;
}

void CpuBackend::copy(Context&, const Tensor& src, Tensor& dst) {
  check::defined("copy", "src", src);
  check::defined("copy", "dst", dst);
  check::on_device("copy", "src", src, Device::cpu());
  check::on_device("copy", "dst", dst, Device::cpu());
  CUDL_CHECK(src.nbytes() == dst.nbytes(), "copy: size mismatch: src={} ({}) but dst={} ({})", src.shape(),
             dtype_name(src.dtype()), dst.shape(), dtype_name(dst.dtype()));
  // memmove: the caller may copy between overlapping views of one storage.
  if (src.nbytes() > 0) std::memmove(dst.raw(), src.raw(), src.nbytes());
}

void CpuBackend::axpy(Context&, float alpha, const Tensor& x, Tensor& y) {
  host_tensor("axpy", "x", x);
  host_tensor("axpy", "y", y);
  check::same_shape("axpy", "x", x, "y", y);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const std::int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) py[i] += alpha * px[i];
}

void CpuBackend::scale(Context&, Tensor& x, float alpha) {
  host_tensor("scale", "x", x);
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) p[i] *= alpha;
}

void CpuBackend::clamp(Context&, Tensor& x, float low, float high) {
  host_tensor("clamp", "x", x);
  CUDL_CHECK(low <= high, "clamp: low={} > high={} (x={})", low, high, x.shape());
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
  // Comparisons, not std::clamp/fmin: a NaN stays NaN (as in PyTorch), the same on the GPU.
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) p[i] = p[i] < low ? low : (p[i] > high ? high : p[i]);
}

void CpuBackend::fill_uniform(Context&, Tensor& x, float low, float high, std::uint64_t seed, std::uint64_t offset) {
  host_tensor("fill_uniform", "x", x);
  CUDL_CHECK(low <= high, "fill_uniform: low={} > high={} (x={})", low, high, x.shape());
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
  const float width = high - low;
#pragma omp parallel for if (n >= kParallelThreshold / 8)
  for (std::int64_t i = 0; i < n; ++i)
    p[i] = low + width * philox::uniform(offset + static_cast<std::uint64_t>(i), seed);
}

void CpuBackend::fill_normal(Context&, Tensor& x, float mean, float stddev, std::uint64_t seed, std::uint64_t offset) {
  host_tensor("fill_normal", "x", x);
  CUDL_CHECK(stddev >= 0.0f, "fill_normal: stddev={} is negative (x={})", stddev, x.shape());
  float* p = x.data<float>();
  const std::int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelThreshold / 8)
  for (std::int64_t i = 0; i < n; ++i)
    p[i] = mean + stddev * philox::normal(offset + static_cast<std::uint64_t>(i), seed);
}

}  // namespace cudl
