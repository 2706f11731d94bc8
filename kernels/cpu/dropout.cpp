// Inverted dropout and the elementwise product its backward (and anyone else) uses.
#include "engine/philox.hpp"
#include "kernels/cpu/cpu_args.hpp"
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::host_tensor;
using cpu::kParallelThreshold;

void CpuBackend::dropout_forward(Context&, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                                 Tensor& y, Tensor& mask) {
  const char* op = "dropout_forward";
  host_tensor(op, "x", x);
  host_tensor(op, "y", y);
  host_tensor(op, "mask", mask);
  check::same_shape(op, "x", x, "y", y);
  check::same_shape(op, "x", x, "mask", mask);
  CUDL_CHECK(p >= 0.0f && p < 1.0f, "{}: p={} must be in [0, 1) (x={})", op, p, x.shape());
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

void CpuBackend::mul(Context&, const Tensor& a, const Tensor& b, Tensor& out) {
  host_tensor("mul", "a", a);
  host_tensor("mul", "b", b);
  host_tensor("mul", "out", out);
  check::same_shape("mul", "a", a, "b", b);
  check::same_shape("mul", "a", a, "out", out);
  const float *pa = a.data<float>(), *pb = b.data<float>();
  float* po = out.data<float>();
  const std::int64_t n = a.numel();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) po[i] = pa[i] * pb[i];
}

}  // namespace cudl
