// Inverted dropout and the elementwise product its backward (and anyone else) uses.
#include "cudl/engine/philox.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

// y is x times the exact keep factor, rounded once; the stored mask is that factor rounded to T
// (what backward multiplies by), 0 where dropped.
template <class T>
void dropout(const T* px, float p, std::uint64_t seed, std::uint64_t offset, T* py, T* pm, std::int64_t n) {
  const float keep = 1.0f / (1.0f - p);
#pragma omp parallel for if (n >= kParallelThreshold / 8)
  for (std::int64_t i = 0; i < n; ++i) {
    // u >= 0 always, so p == 0 keeps every element with mask exactly 1.
    const float m = philox::uniform(offset + static_cast<std::uint64_t>(i), seed) >= p ? keep : 0.0f;
    pm[i] = store<T>(m);
    py[i] = store<T>(load(px[i]) * m);
  }
}

template <class T>
void multiply(const T* pa, const T* pb, T* po, std::int64_t n) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) po[i] = store<T>(load(pa[i]) * load(pb[i]));
}

}  // namespace

void CpuBackend::do_dropout_forward(Context&, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                                    Tensor& y, Tensor& mask) {
  cpu::dispatch_float(x.dtype(), "dropout_forward", [&](auto tag) {
    using T = decltype(tag);
    dropout(x.data<T>(), p, seed, offset, y.data<T>(), mask.data<T>(), x.numel());
  });
}

void CpuBackend::do_mul(Context&, const Tensor& a, const Tensor& b, Tensor& out) {
  cpu::dispatch_float(a.dtype(), "mul", [&](auto tag) {
    using T = decltype(tag);
    multiply(a.data<T>(), b.data<T>(), out.data<T>(), a.numel());
  });
}

}  // namespace cudl
