// Softmax, log-softmax and softmax cross-entropy over the last dim of [N, K]. Rows are
// independent, so the row loop is the parallel one; each row subtracts its max before exp.
#include <cmath>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

namespace {

// Rows are parallel when there is enough work in all of them together.
bool parallel_rows(std::int64_t n, std::int64_t k) { return n > 1 && n * k >= cpu::kParallelThreshold / 4; }

// max and log Σ exp(x - max) of one row, in double.
struct RowStats {
  float max;
  double log_sum;
};

RowStats row_stats(const float* x, std::int64_t k) {
  float m = x[0];
  for (std::int64_t j = 1; j < k; ++j) m = x[j] > m ? x[j] : m;
  double s = 0.0;
  for (std::int64_t j = 0; j < k; ++j) s += std::exp(static_cast<double>(x[j]) - m);
  return {m, std::log(s)};
}

// y = softmax(x) or log_softmax(x), row by row.
void softmax_rows(const Tensor& x, Tensor& y, bool log) {
  const std::int64_t n = x.dim(0), k = x.dim(1);
  const float* px = x.data<float>();
  float* py = y.data<float>();
#pragma omp parallel for if (parallel_rows(n, k))
  for (std::int64_t r = 0; r < n; ++r) {
    const float* xr = px + r * k;
    float* yr = py + r * k;
    const RowStats st = row_stats(xr, k);
    for (std::int64_t j = 0; j < k; ++j) {
      const double z = static_cast<double>(xr[j]) - st.max - st.log_sum;
      yr[j] = static_cast<float>(log ? z : std::exp(z));
    }
  }
}

// dx from y = softmax(x) (or log-softmax with `log`) and dy, per row:
//   softmax:     dx_j = y_j (dy_j - Σ_i dy_i y_i)
//   log-softmax: dx_j = dy_j - softmax_j Σ_i dy_i, with softmax = exp(y)
void softmax_rows_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool log) {
  const std::int64_t n = y.dim(0), k = y.dim(1);
  const float *py = y.data<float>(), *pdy = dy.data<float>();
  float* pdx = dx.data<float>();
#pragma omp parallel for if (parallel_rows(n, k))
  for (std::int64_t r = 0; r < n; ++r) {
    const float *yr = py + r * k, *gr = pdy + r * k;
    float* dr = pdx + r * k;
    double sum = 0.0;
    if (log) {
      for (std::int64_t j = 0; j < k; ++j) sum += gr[j];
      for (std::int64_t j = 0; j < k; ++j)
        dr[j] = static_cast<float>(gr[j] - std::exp(static_cast<double>(yr[j])) * sum);
    } else {
      for (std::int64_t j = 0; j < k; ++j) sum += static_cast<double>(gr[j]) * yr[j];
      for (std::int64_t j = 0; j < k; ++j) dr[j] = static_cast<float>(yr[j] * (gr[j] - sum));
    }
  }
}

void check_labels(const char* op, const Tensor& labels, std::int64_t n, std::int64_t k) {
  const std::int32_t* pl = labels.data<std::int32_t>();
  for (std::int64_t r = 0; r < n; ++r)
    CUDL_CHECK(pl[r] >= 0 && pl[r] < k, "{}: labels[{}]={} is outside [0, {}) (K={})", op, r, pl[r], k, k);
}

}  // namespace

void CpuBackend::do_softmax_forward(Context&, const Tensor& x, Tensor& y) { softmax_rows(x, y, false); }

void CpuBackend::do_log_softmax_forward(Context&, const Tensor& x, Tensor& y) { softmax_rows(x, y, true); }

void CpuBackend::do_softmax_backward(Context&, const Tensor& y, const Tensor& dy, Tensor& dx) {
  softmax_rows_backward(y, dy, dx, false);
}

void CpuBackend::do_log_softmax_backward(Context&, const Tensor& y, const Tensor& dy, Tensor& dx) {
  softmax_rows_backward(y, dy, dx, true);
}

void CpuBackend::do_softmax_cross_entropy_forward(Context&, const Tensor& logits, const Tensor& labels, Tensor& probs,
                                                  Tensor& loss) {
  const char* op = "softmax_cross_entropy_forward";
  const std::int64_t n = logits.dim(0), k = logits.dim(1);
  check_labels(op, labels, n, k);
  const float* px = logits.data<float>();
  const std::int32_t* pl = labels.data<std::int32_t>();
  float* pp = probs.data<float>();
  double total = 0.0;
  // -log p[label] = log Σ exp(x - max) - (x[label] - max): exact even where p underflows to 0.
#pragma omp parallel for reduction(+ : total) if (parallel_rows(n, k))
  for (std::int64_t r = 0; r < n; ++r) {
    const float* xr = px + r * k;
    float* pr = pp + r * k;
    const RowStats st = row_stats(xr, k);
    for (std::int64_t j = 0; j < k; ++j)
      pr[j] = static_cast<float>(std::exp(static_cast<double>(xr[j]) - st.max - st.log_sum));
    total += st.log_sum - (static_cast<double>(xr[pl[r]]) - st.max);
  }
  loss.data<float>()[0] = static_cast<float>(total / static_cast<double>(n));
}

void CpuBackend::do_softmax_cross_entropy_backward(Context&, const Tensor& probs, const Tensor& labels, float dloss,
                                                   Tensor& dlogits) {
  const char* op = "softmax_cross_entropy_backward";
  const std::int64_t n = probs.dim(0), k = probs.dim(1);
  check_labels(op, labels, n, k);
  const float* pp = probs.data<float>();
  const std::int32_t* pl = labels.data<std::int32_t>();
  float* pd = dlogits.data<float>();
  const float scale = dloss / static_cast<float>(n);
#pragma omp parallel for if (parallel_rows(n, k))
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t j = 0; j < k; ++j) {
      const float onehot = j == pl[r] ? 1.0f : 0.0f;
      pd[r * k + j] = (pp[r * k + j] - onehot) * scale;
    }
  }
}

}  // namespace cudl
