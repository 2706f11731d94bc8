// Gram matrices for style losses: per sample, F = x[n] viewed as [C, H*W], G = F Fᵀ / (C*H*W).
// Both directions are GEMMs on cpu::sgemm, threaded by the same pool as the convolutions around
// them (OpenBLAS's ssyrk did half the multiply-adds but woke OpenBLAS's own spinning pool, which
// fought the OpenMP threads for the cores in every style iteration).
#include <limits>
#include <vector>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

namespace {

// OpenBLAS, the fallback GEMM, takes int sizes; a plane larger than that would silently wrap.
void check_blas_size(const char* op, std::int64_t v, const Shape& shape) {
  CUDL_CHECK(v <= std::numeric_limits<int>::max(), "{}: dimension {} is too large for BLAS (x={})", op, v, shape);
}

}  // namespace

void CpuBackend::do_gram_forward(Context&, const Tensor& x, Tensor& g) {
  const char* op = "gram_forward";
  const std::int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  if (n == 0 || c == 0) return;
  check_blas_size(op, c, x.shape());
  check_blas_size(op, hw, x.shape());
  const float alpha = hw == 0 ? 0.0f : static_cast<float>(1.0 / static_cast<double>(c * hw));
  const float* px = x.data<float>();
  float* pg = g.data<float>();
  for (std::int64_t s = 0; s < n; ++s) {
    const float* f = px + s * c * hw;
    float* gs = pg + s * c * c;
    cpu::sgemm(false, true, c, c, hw, alpha, f, hw > 0 ? hw : 1, f, hw > 0 ? hw : 1, 0.0f, gs, c);
    // A GEMM kernel may sum G[i][j] and G[j][i] in different orders; a Gram matrix is symmetric
    // exactly, as it was from syrk, so the lower triangle mirrors the upper one.
    for (std::int64_t i = 0; i < c; ++i)
      for (std::int64_t j = 0; j < i; ++j) gs[i * c + j] = gs[j * c + i];
  }
}

void CpuBackend::do_gram_backward(Context&, const Tensor& x, const Tensor& dg, Tensor& dx) {
  const char* op = "gram_backward";
  const std::int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  check_blas_size(op, c, x.shape());
  check_blas_size(op, hw, x.shape());
  const float alpha = static_cast<float>(1.0 / static_cast<double>(c * hw));
  const float* px = x.data<float>();
  const float* pdg = dg.data<float>();
  float* pdx = dx.data<float>();
  std::vector<float> sym(static_cast<std::size_t>(c * c));
  for (std::int64_t s = 0; s < n; ++s) {
    const float* d = pdg + s * c * c;
    for (std::int64_t i = 0; i < c; ++i)
      for (std::int64_t j = 0; j < c; ++j) sym[static_cast<std::size_t>(i * c + j)] = d[i * c + j] + d[j * c + i];
    cpu::sgemm(false, false, c, hw, c, alpha, sym.data(), c, px + s * c * hw, hw, 0.0f, pdx + s * c * hw, hw);
  }
}

}  // namespace cudl
