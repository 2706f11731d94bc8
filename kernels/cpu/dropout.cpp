// Inverted dropout and the elementwise product its backward (and anyone else) uses.
#include "cudl/engine/philox.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

void CpuBackend::do_dropout_forward(Context&, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                                    Tensor& y, Tensor& mask) {
  const float keep = 1.0f / (1.0f - p);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  float* pm = mask.data<float>();
  const std::int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelThreshold / 8)
  for (std::int64_t i = 0; i < n; ++i) {
    // u >= 0 always, so p == 0 keeps every element with mask exactly 1.
    const float m = philox::uniform(offset + static_cast<std::uint64_t>(i), seed) >= p ? keep : 0.0f;
    pm[i] = m;
    py[i] = px[i] * m;
  }
}

void CpuBackend::do_mul(Context&, const Tensor& a, const Tensor& b, Tensor& out) {
  const float *pa = a.data<float>(), *pb = b.data<float>();
  float* po = out.data<float>();
  const std::int64_t n = a.numel();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) po[i] = pa[i] * pb[i];
}

}  // namespace cudl
