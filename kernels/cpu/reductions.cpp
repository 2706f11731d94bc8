// Reductions into one-element tensors (sum, mean, max, dot) and per-row ones (argmax, accuracy).
#include <cmath>
#include <limits>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

template <class T>
double sum_double(const T* p, std::int64_t n) {
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) s += load(p[i]);
  return s;
}

double sum_double(const Tensor& x) {
  return cpu::dispatch_float(x.dtype(), "sum",
                             [&](auto tag) { return sum_double(x.data<decltype(tag)>(), x.numel()); });
}

// Widening is exact and order-preserving, so a half row picks the same index its f32 copy would.
template <class T>
std::int32_t argmax_row(const T* t, std::int64_t k) {
  const auto row = [t](std::int64_t j) { return load(t[j]); };
  std::int64_t best = 0;
  // Strict > keeps the first of equal maxima. A NaN never wins, wherever it sits (a NaN in column
  // 0 is replaced by the first real value), so a row of finite values with a NaN still points at
  // a real maximum; a row of NaN only gives 0. The CUDA kernel follows the same rule.
  for (std::int64_t j = 1; j < k; ++j)
    if (row(j) > row(best) || (std::isnan(row(best)) && !std::isnan(row(j)))) best = j;
  return static_cast<std::int32_t>(best);
}

}  // namespace

void CpuBackend::do_sum(Context&, const Tensor& x, Tensor& out) {
  out.data<float>()[0] = static_cast<float>(sum_double(x));
}

void CpuBackend::do_mean(Context&, const Tensor& x, Tensor& out) {
  out.data<float>()[0] = static_cast<float>(sum_double(x) / static_cast<double>(x.numel()));
}

// OpenMP's built-in max reduction starts each thread's copy at the "least representable value",
// which clang's runtime takes to be -FLT_MAX (GCC's, -inf): all -inf or all NaN then gave
// -3.4e38 in a clang build. This one starts from -inf and skips NaN the same way everywhere.
#pragma omp declare reduction(max_skip_nan:float                               \
                              : omp_out = omp_in > omp_out ? omp_in : omp_out) \
    initializer(omp_priv = -std::numeric_limits <float>::infinity())

namespace {
template <class T>
float max_of(const T* p, std::int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp parallel for reduction(max_skip_nan : m) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = load(p[i]);
    m = v > m ? v : m;
  }
  return m;
}
}  // namespace

void CpuBackend::do_max(Context&, const Tensor& x, Tensor& out) {
  out.data<float>()[0] =
      cpu::dispatch_float(x.dtype(), "max", [&](auto tag) { return max_of(x.data<decltype(tag)>(), x.numel()); });
}

void CpuBackend::do_dot(Context&, const Tensor& a, const Tensor& b, Tensor& out) {
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const std::int64_t n = a.numel();
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(pa[i]) * pb[i];
  out.data<float>()[0] = static_cast<float>(s);
}

void CpuBackend::do_argmax_rows(Context&, const Tensor& x, Tensor& out) {
  std::int32_t* po = out.data<std::int32_t>();
  const std::int64_t n = x.dim(0), k = x.dim(1);
  cpu::dispatch_float(x.dtype(), "argmax_rows", [&](auto tag) {
    const auto* px = x.data<decltype(tag)>();
    for (std::int64_t r = 0; r < n; ++r) po[r] = argmax_row(px + r * k, k);
  });
}

void CpuBackend::do_accuracy(Context&, const Tensor& logits, const Tensor& labels, Tensor& out) {
  const std::int64_t n = logits.dim(0), k = logits.dim(1);
  const std::int32_t* pl = labels.data<std::int32_t>();
  // A label outside [0, K) is a bug upstream, not a wrong prediction: refuse it (the CUDA backend
  // reports it through the device fault word).
  for (std::int64_t r = 0; r < n; ++r)
    CUDL_CHECK(pl[r] >= 0 && pl[r] < k, "accuracy: labels[{}]={} is outside [0, {}) (K={})", r, pl[r], k, k);
  std::int64_t correct = 0;
  cpu::dispatch_float(logits.dtype(), "accuracy", [&](auto tag) {
    const auto* px = logits.data<decltype(tag)>();
    for (std::int64_t r = 0; r < n; ++r) correct += argmax_row(px + r * k, k) == pl[r] ? 1 : 0;
  });
  out.data<float>()[0] = static_cast<float>(static_cast<double>(correct) / static_cast<double>(n));
}

}  // namespace cudl
