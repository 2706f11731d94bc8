// Gram matrices for style losses: per sample, F = x[n] viewed as [C, H*W], G = F Fᵀ / (C*H*W).
#include <cblas.h>

#include <limits>
#include <vector>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

namespace {

// BLAS takes int sizes; a plane larger than that would silently wrap.
int blas_int(const char* op, std::int64_t v, const Shape& shape) {
  CUDL_CHECK(v <= std::numeric_limits<int>::max(), "{}: dimension {} is too large for BLAS (x={})", op, v, shape);
  return static_cast<int>(v);
}

}  // namespace

void CpuBackend::do_gram_forward(Context&, const Tensor& x, Tensor& g) {
  const char* op = "gram_forward";
  const std::int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  if (n == 0 || c == 0) return;
  const int ci = blas_int(op, c, x.shape()), hwi = blas_int(op, hw, x.shape());
  const float alpha = hw == 0 ? 0.0f : static_cast<float>(1.0 / static_cast<double>(c * hw));
  const float* px = x.data<float>();
  float* pg = g.data<float>();
  for (std::int64_t s = 0; s < n; ++s) {
    const float* f = px + s * c * hw;
    float* gs = pg + s * c * c;
    // syrk does half the multiply-adds of a GEMM and fills the upper triangle; mirror it after.
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, ci, hwi, alpha, f, hwi > 0 ? hwi : 1, 0.0f, gs, ci);
    for (std::int64_t i = 0; i < c; ++i)
      for (std::int64_t j = 0; j < i; ++j) gs[i * c + j] = gs[j * c + i];
  }
}

void CpuBackend::do_gram_backward(Context&, const Tensor& x, const Tensor& dg, Tensor& dx) {
  const char* op = "gram_backward";
  const std::int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const int ci = blas_int(op, c, x.shape()), hwi = blas_int(op, hw, x.shape());
  const float alpha = static_cast<float>(1.0 / static_cast<double>(c * hw));
  const float* px = x.data<float>();
  const float* pdg = dg.data<float>();
  float* pdx = dx.data<float>();
  std::vector<float> sym(static_cast<std::size_t>(c * c));
  for (std::int64_t s = 0; s < n; ++s) {
    const float* d = pdg + s * c * c;
    for (std::int64_t i = 0; i < c; ++i)
      for (std::int64_t j = 0; j < c; ++j) sym[static_cast<std::size_t>(i * c + j)] = d[i * c + j] + d[j * c + i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ci, hwi, ci, alpha, sym.data(), ci, px + s * c * hw, hwi,
                0.0f, pdx + s * c * hw, hwi);
  }
}

}  // namespace cudl
