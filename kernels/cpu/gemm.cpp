// Dense linear algebra on the CPU: GEMM through OpenBLAS, bias add and its gradient with OpenMP.
#include <cblas.h>

#include "engine/check.hpp"
#include "engine/context.hpp"
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {
namespace {

// Below this much work a parallel region costs more than it saves (thread wake-up on a busy
// machine is milliseconds).
constexpr std::int64_t kParallelWork = 1 << 16;

void expect_cpu_f32(std::string_view op, std::string_view name, const Tensor& t) {
  check::defined(op, name, t);
  check::dtype_is(op, name, t, DType::f32);
  check::on_device(op, name, t, Device::cpu());
}

// Dims before the channel (dim 1) and after it: y is viewed as [outer, C, inner].
struct ChannelView {
  std::int64_t outer = 1, channels = 1, inner = 1;
};

ChannelView channel_view(const Tensor& t) {
  ChannelView v;
  v.outer = t.dim(0);
  v.channels = t.dim(1);
  for (int i = 2; i < t.rank(); ++i) v.inner *= t.dim(i);
  return v;
}

}  // namespace

void CpuBackend::gemm(Context&, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
                      Tensor& c) {
  constexpr std::string_view op = "gemm";
  expect_cpu_f32(op, "a", a);
  expect_cpu_f32(op, "b", b);
  expect_cpu_f32(op, "c", c);
  check::rank_is(op, "a", a, 2);
  check::rank_is(op, "b", b, 2);
  check::rank_is(op, "c", c, 2);
  const std::int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const std::int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const std::int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const std::int64_t n = trans_b ? b.dim(0) : b.dim(1);
  CUDL_CHECK(k == kb,
             "gemm: inner dimensions differ: op(a) is [{},{}] (a={}, trans_a={}) but op(b) is [{},{}] (b={}, "
             "trans_b={})",
             m, k, a.shape(), trans_a, kb, n, b.shape(), trans_b);
  CUDL_CHECK(c.dim(0) == m && c.dim(1) == n, "gemm: c={} but op(a)*op(b) is [{},{}] (a={}, b={})", c.shape(), m, n,
             a.shape(), b.shape());
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // BLAS would be asked for a zero-width product; C = beta * C is all that is left.
    float* pc = c.data<float>();
    for (std::int64_t i = 0; i < m * n; ++i) pc[i] = beta == 0.0f ? 0.0f : beta * pc[i];
    return;
  }
  // Row-major leading dimensions are the stored column counts, whatever the transposition.
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a.data<float>(),
              static_cast<blasint>(a.dim(1)), b.data<float>(), static_cast<blasint>(b.dim(1)), beta, c.data<float>(),
              static_cast<blasint>(n));
}

void CpuBackend::bias_add(Context&, Tensor& y, const Tensor& bias) {
  constexpr std::string_view op = "bias_add";
  expect_cpu_f32(op, "y", y);
  expect_cpu_f32(op, "bias", bias);
  CUDL_CHECK(y.rank() >= 2, "bias_add: y={} must have a channel dim (rank >= 2)", y.shape());
  CUDL_CHECK(bias.numel() == y.dim(1), "bias_add: bias={} but y={} has {} channels", bias.shape(), y.shape(), y.dim(1));
  const auto v = channel_view(y);
  float* py = y.data<float>();
  const float* pb = bias.data<float>();
#pragma omp parallel for schedule(static) if (y.numel() >= kParallelWork)
  for (std::int64_t plane = 0; plane < v.outer * v.channels; ++plane) {
    const float b = pb[plane % v.channels];
    float* row = py + plane * v.inner;
    for (std::int64_t i = 0; i < v.inner; ++i) row[i] += b;
  }
}

void CpuBackend::bias_grad(Context&, const Tensor& dy, Tensor& dbias, bool accumulate) {
  constexpr std::string_view op = "bias_grad";
  expect_cpu_f32(op, "dy", dy);
  expect_cpu_f32(op, "dbias", dbias);
  CUDL_CHECK(dy.rank() >= 2, "bias_grad: dy={} must have a channel dim (rank >= 2)", dy.shape());
  CUDL_CHECK(dbias.numel() == dy.dim(1), "bias_grad: dbias={} but dy={} has {} channels", dbias.shape(), dy.shape(),
             dy.dim(1));
  const auto v = channel_view(dy);
  const float* pdy = dy.data<float>();
  float* pdb = dbias.data<float>();
  // One channel per iteration, summed in a fixed order in double: deterministic and accurate.
#pragma omp parallel for schedule(static) if (dy.numel() >= kParallelWork)
  for (std::int64_t c = 0; c < v.channels; ++c) {
    double s = 0;
    for (std::int64_t n = 0; n < v.outer; ++n) {
      const float* row = pdy + (n * v.channels + c) * v.inner;
      for (std::int64_t i = 0; i < v.inner; ++i) s += row[i];
    }
    pdb[c] = static_cast<float>(accumulate ? pdb[c] + s : s);
  }
}

}  // namespace cudl
