// Reductions into one-element tensors (sum, mean, max, dot) and per-row ones (argmax, accuracy).
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_args.hpp"
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::host_tensor;
using cpu::kParallelThreshold;

namespace {

double sum_double(const float* p, std::int64_t n) {
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

std::int32_t argmax_row(const float* row, std::int64_t k) {
  std::int64_t best = 0;
  // Strict > keeps the first of equal maxima; a NaN never wins, so a row of finite values
  // with one NaN still points at a real maximum.
  for (std::int64_t j = 1; j < k; ++j)
    if (row[j] > row[best]) best = j;
  return static_cast<std::int32_t>(best);
}

}  // namespace

void CpuBackend::sum(Context&, const Tensor& x, Tensor& out) {
  host_tensor("sum", "x", x);
  host_tensor("sum", "out", out);
  check::numel_is("sum", "out", out, 1);
  out.data<float>()[0] = static_cast<float>(sum_double(x.data<float>(), x.numel()));
}

void CpuBackend::mean(Context&, const Tensor& x, Tensor& out) {
  host_tensor("mean", "x", x);
  host_tensor("mean", "out", out);
  check::numel_is("mean", "out", out, 1);
  CUDL_CHECK(x.numel() > 0, "mean: x is empty (shape {})", x.shape());
  out.data<float>()[0] = static_cast<float>(sum_double(x.data<float>(), x.numel()) / static_cast<double>(x.numel()));
}

void CpuBackend::max(Context&, const Tensor& x, Tensor& out) {
  host_tensor("max", "x", x);
  host_tensor("max", "out", out);
  check::numel_is("max", "out", out, 1);
  CUDL_CHECK(x.numel() > 0, "max: x is empty (shape {})", x.shape());
  const float* p = x.data<float>();
  const std::int64_t n = x.numel();
  float m = -std::numeric_limits<float>::infinity();
#pragma omp parallel for reduction(max : m) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) m = p[i] > m ? p[i] : m;
  out.data<float>()[0] = m;
}

void CpuBackend::dot(Context&, const Tensor& a, const Tensor& b, Tensor& out) {
  host_tensor("dot", "a", a);
  host_tensor("dot", "b", b);
  host_tensor("dot", "out", out);
  check::same_shape("dot", "a", a, "b", b);
  check::numel_is("dot", "out", out, 1);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const std::int64_t n = a.numel();
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(pa[i]) * pb[i];
  out.data<float>()[0] = static_cast<float>(s);
}

void CpuBackend::argmax_rows(Context&, const Tensor& x, Tensor& out) {
  host_tensor("argmax_rows", "x", x);
  host_tensor("argmax_rows", "out", out, DType::i32);
  check::rank_is("argmax_rows", "x", x, 2);
  check::shape_is("argmax_rows", "out", out, Shape{x.dim(0)});
  CUDL_CHECK(x.dim(1) > 0, "argmax_rows: x has no columns (shape {})", x.shape());
  const float* px = x.data<float>();
  std::int32_t* po = out.data<std::int32_t>();
  const std::int64_t n = x.dim(0), k = x.dim(1);
  for (std::int64_t r = 0; r < n; ++r) po[r] = argmax_row(px + r * k, k);
}

void CpuBackend::accuracy(Context&, const Tensor& logits, const Tensor& labels, Tensor& out) {
  host_tensor("accuracy", "logits", logits);
  host_tensor("accuracy", "labels", labels, DType::i32);
  host_tensor("accuracy", "out", out);
  check::rank_is("accuracy", "logits", logits, 2);
  check::shape_is("accuracy", "labels", labels, Shape{logits.dim(0)});
  check::numel_is("accuracy", "out", out, 1);
  const std::int64_t n = logits.dim(0), k = logits.dim(1);
  CUDL_CHECK(n > 0 && k > 0, "accuracy: logits is empty (shape {})", logits.shape());
  const float* px = logits.data<float>();
  const std::int32_t* pl = labels.data<std::int32_t>();
  std::int64_t correct = 0;
  for (std::int64_t r = 0; r < n; ++r) correct += argmax_row(px + r * k, k) == pl[r] ? 1 : 0;
  out.data<float>()[0] = static_cast<float>(static_cast<double>(correct) / static_cast<double>(n));
}

}  // namespace cudl
