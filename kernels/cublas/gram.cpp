// CudaBackend: Gram matrices for style losses through cuBLAS's strided batched GEMM (CPU twin:
// kernels/cpu/gram.cpp). Per sample, F = x[n] viewed as row-major [C, H*W] and G = F Fᵀ / (C*H*W).
// A row-major buffer read as column-major is its transpose (see kernels/cublas/gemm.cpp).
// Arguments were checked by Backend::gram_forward/gram_backward (engine/backend.cpp); only
// cuBLAS's int limits are checked here.
#include <algorithm>
#include <string_view>

#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::to_int;

namespace {

// x [N, C, H, W] as cuBLAS's int sizes, and the 1/(C*H*W) scale.
struct GramDims {
  int n = 0, c = 0, hw = 0;
  float inv_chw = 0.0f;
};

GramDims gram_dims(std::string_view op, const Tensor& x) {
  GramDims d;
  d.n = to_int(op, "N", x.dim(0), x.shape());
  d.c = to_int(op, "C", x.dim(1), x.shape());
  d.hw = to_int(op, "H*W", x.dim(2) * x.dim(3), x.shape());
  const std::int64_t chw = x.dim(1) * x.dim(2) * x.dim(3);
  d.inv_chw = chw > 0 ? 1.0f / static_cast<float>(chw) : 0.0f;
  return d;
}

}  // namespace

// F_n = x[n] as row-major [C, HW], i.e. column-major Fc = F_nᵀ [HW, C] with ld HW.
// G_n = F_n F_nᵀ / CHW; column-major G_nᵀ = G_n = Fcᵀ Fc.
void CudaBackend::do_gram_forward(Context& ctx, const Tensor& x, Tensor& g) {
  const GramDims d = gram_dims("gram_forward", x);
  if (d.n == 0 || d.c == 0) return;
  if (d.hw == 0) {  // no pixels: G = 0, as on the CPU (not left to cuBLAS with k = 0)
    cuda_detail::launch_fill(g.data<float>(), g.numel(), 0.0f, cuda_detail::stream_of(ctx));
    return;
  }
  const float beta = 0.0f;
  const long long stride_f = static_cast<long long>(d.c) * d.hw;
  const long long stride_g = static_cast<long long>(d.c) * d.c;
  const int ld = std::max(1, d.hw);
  CUDL_CUBLAS_CHECK(cublasSgemmStridedBatched(cuda_resources(ctx).cublas, CUBLAS_OP_T, CUBLAS_OP_N, d.c, d.c, d.hw,
                                              &d.inv_chw, x.data<float>(), ld, stride_f, x.data<float>(), ld, stride_f,
                                              &beta, g.data<float>(), d.c, stride_g, d.n),
                    "gram_forward x={} g={}", x.shape(), g.shape());
}

// dX_n = (dG_n + dG_nᵀ) F_n / CHW as two accumulating GEMMs. Column-major, dXc = dX_nᵀ [HW, C]:
// dXc = Fc dG_nᵀ + Fc dG_n, and the dG buffer read column-major is dG_nᵀ.
void CudaBackend::do_gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx) {
  const GramDims d = gram_dims("gram_backward", x);
  if (d.n == 0 || d.c == 0 || d.hw == 0) return;
  cublasHandle_t cublas = cuda_resources(ctx).cublas;
  const float zero = 0.0f, one = 1.0f;
  const long long stride_f = static_cast<long long>(d.c) * d.hw;
  const long long stride_g = static_cast<long long>(d.c) * d.c;
  // dXc = inv * Fc * (dG buffer as is = dG_nᵀ)
  CUDL_CUBLAS_CHECK(cublasSgemmStridedBatched(cublas, CUBLAS_OP_N, CUBLAS_OP_N, d.hw, d.c, d.c, &d.inv_chw,
                                              x.data<float>(), d.hw, stride_f, dg.data<float>(), d.c, stride_g, &zero,
                                              dx.data<float>(), d.hw, stride_f, d.n),
                    "gram_backward x={} dg={} (dgᵀ term)", x.shape(), dg.shape());
  // dXc += inv * Fc * (dG buffer transposed = dG_n)
  CUDL_CUBLAS_CHECK(
      cublasSgemmStridedBatched(cublas, CUBLAS_OP_N, CUBLAS_OP_T, d.hw, d.c, d.c, &d.inv_chw, x.data<float>(), d.hw,
                                stride_f, dg.data<float>(), d.c, stride_g, &one, dx.data<float>(), d.hw, stride_f, d.n),
      "gram_backward x={} dg={} (dg term)", x.shape(), dg.shape());
}

}  // namespace cudl
