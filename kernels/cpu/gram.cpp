// Gram matrices for style losses: per sample, F = x[n] viewed as [C, H*W], G = F Fᵀ / (C*H*W), for
// NCHW and channels_last x (the latter as the same GEMMs on the transposed storage).
// Both directions are GEMMs (cpu::sgemm; a half x on oneDNN's half matmul where it is native),
// threaded by the same pool as the convolutions around them (OpenBLAS's ssyrk did half the multiply-adds but woke
// OpenBLAS's own spinning pool, which fought the OpenMP threads for the cores in every style iteration).
#include <algorithm>
#include <cstddef>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"

namespace cudl {

namespace {

// OpenBLAS, the fallback GEMM, takes int sizes; a plane larger than that would silently wrap.
void check_blas_size(const char* op, std::int64_t v, const Shape& shape) {
  CUDL_CHECK(v <= std::numeric_limits<int>::max(), "{}: dimension {} is too large for BLAS (x={})", op, v, shape);
}

// s = d + dᵀ (c x c), rounded to T, in square tiles so the transposed reads stay in cache (a
// 512-channel tap's column walk missed on every element).
template <class T>
void symmetrise(const float* d, std::int64_t c, T* s) {
  constexpr std::int64_t kTile = 32;
  for (std::int64_t i0 = 0; i0 < c; i0 += kTile)
    for (std::int64_t j0 = 0; j0 < c; j0 += kTile)
      for (std::int64_t i = i0; i < std::min(c, i0 + kTile); ++i)
        for (std::int64_t j = j0; j < std::min(c, j0 + kTile); ++j)
          s[i * c + j] = store<T>(d[i * c + j] + d[j * c + i]);
}

}  // namespace

void CpuBackend::do_gram_forward(Context& ctx, const Tensor& x, Tensor& g) {
  const char* op = "gram_forward";
  const std::int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  if (n == 0 || c == 0) return;
  check_blas_size(op, c, x.shape());
  check_blas_size(op, hw, x.shape());
  const float alpha = hw == 0 ? 0.0f : static_cast<float>(1.0 / static_cast<double>(c * hw));
  float* pg = g.data<float>();
  // A half x goes to oneDNN's matmul where it has a native kernel (F in bf16 on AMX, G in f32), else
  // one sample at a time is widened to f32 (exact) for sgemm.
  const bool half = x.dtype() != DType::f32;
  std::optional<Workspace> widened;
  if (half) widened.emplace(ctx, static_cast<std::size_t>(c * hw) * sizeof(float));
  // NCHW stores F = x[n] as [C, HW] row-major, so G = F Fᵀ; channels_last stores Fᵀ ([HW, C]), so
  // G = (Fᵀ)ᵀ Fᵀ: the same product with the transposition on the other operand, no copy.
  const bool cl = x.channels_last();
  const std::int64_t ld = cl ? c : std::max<std::int64_t>(hw, 1);
  for (std::int64_t s = 0; s < n; ++s) {
    float* gs = pg + s * c * c;
    if (!half) {
      const float* f = x.data<float>() + s * c * hw;
      cpu::sgemm(ctx.cpu_gemm(), cl, !cl, c, c, hw, alpha, f, ld, f, ld, 0.0f, gs, c);
    } else {
      const auto* f =
          static_cast<const std::byte*>(x.raw()) + s * c * hw * static_cast<std::int64_t>(dtype_size(x.dtype()));
      if (hw == 0 || !cpu::onednn_half_gemm(ctx.cpu_gemm(), cl, !cl, c, c, hw, alpha, x.dtype(), f, ld, f, ld, 0.0f,
                                            DType::f32, gs, c)) {
        auto* wf = static_cast<float*>(widened->data());
        cpu::dispatch_float(x.dtype(), op,
                            [&](auto tag) { cpu::widen(reinterpret_cast<const decltype(tag)*>(f), wf, c * hw); });
        cpu::sgemm(ctx.cpu_gemm(), cl, !cl, c, c, hw, alpha, wf, ld, wf, ld, 0.0f, gs, c);
      }
    }
    // A GEMM kernel may sum G[i][j] and G[j][i] in different orders; a Gram matrix is symmetric
    // exactly, as it was from syrk, so the lower triangle mirrors the upper one.
    for (std::int64_t i = 0; i < c; ++i)
      for (std::int64_t j = 0; j < i; ++j) gs[i * c + j] = gs[j * c + i];
  }
}

void CpuBackend::do_gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx) {
  const char* op = "gram_backward";
  const std::int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  check_blas_size(op, c, x.shape());
  check_blas_size(op, hw, x.shape());
  if (n == 0 || c == 0 || hw == 0) return;
  const float alpha = static_cast<float>(1.0 / static_cast<double>(c * hw));
  const float* pdg = dg.data<float>();
  // dX_n = alpha S_n X_n with S_n = dG_n + dG_nᵀ. For a half x, S is rounded to x's dtype and the
  // GEMM runs in half with f32 sums, dx rounded once: autocast's half matmul backward, and what the
  // CUDA backend does (kernels/cublas/gram.cpp). Without a native half GEMM here, the rounded S
  // and x are widened (exactly) for sgemm: the same products.
  // Channels_last: dx[n] and x[n] are stored transposed ([HW, C]), and dXᵀ = alpha Xᵀ Sᵀ = alpha Xᵀ S
  // (S is symmetric): the product with its operands swapped, written [HW, C].
  const bool cl = x.channels_last();
  const std::int64_t m = cl ? hw : c, cols = cl ? c : hw;
  const auto product = [&](CpuGemm gemm, const float* sym, const float* xs, float* out) {
    if (cl)
      cpu::sgemm(gemm, false, false, hw, c, c, alpha, xs, c, sym, c, 0.0f, out, c);
    else
      cpu::sgemm(gemm, false, false, c, hw, c, alpha, sym, c, xs, hw, 0.0f, out, hw);
  };
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* pdx = dx.data<T>();
    std::vector<T> sym(static_cast<std::size_t>(c * c));
    std::vector<float> wsym;
    std::optional<Workspace> widened;
    for (std::int64_t s = 0; s < n; ++s) {
      const float* d = pdg + s * c * c;
      symmetrise(d, c, sym.data());
      if constexpr (std::is_same_v<T, float>) {
        product(ctx.cpu_gemm(), sym.data(), px + s * c * hw, pdx + s * c * hw);
      } else {
        const T* a = cl ? px + s * c * hw : sym.data();
        const T* b = cl ? sym.data() : px + s * c * hw;
        if (cpu::onednn_half_gemm(ctx.cpu_gemm(), false, false, m, cols, c, alpha, x.dtype(), a, c, b, cols, 0.0f,
                                  x.dtype(), pdx + s * c * hw, cols))
          continue;
        if (!widened) {
          widened.emplace(ctx, static_cast<std::size_t>(2 * c * hw) * sizeof(float));
          wsym.resize(sym.size());
        }
        cpu::widen(sym.data(), wsym.data(), c * c);
        float* wx = static_cast<float*>(widened->data());
        float* wdx = wx + c * hw;
        cpu::widen(px + s * c * hw, wx, c * hw);
        product(ctx.cpu_gemm(), wsym.data(), wx, wdx);
        cpu::narrow(wdx, pdx + s * c * hw, c * hw);
      }
    }
  });
}

}  // namespace cudl
