// CudaBackend: Gram matrices for style losses through cuBLAS's strided batched GEMM (CPU twin:
// kernels/cpu/gram.cpp). Per sample, F = x[n] viewed as row-major [C, H*W] and G = F Fᵀ / (C*H*W).
// A row-major buffer read as column-major is its transpose (see kernels/cublas/gemm.cpp).
// Half x (bf16, f16): cublasGemmStridedBatchedEx with CUBLAS_COMPUTE_32F (tensor cores, float
// accumulation, float alpha and beta); forward writes the f32 g directly. Backward, whose dg is f32
// and dx x's dtype, first forms S = dg + dgᵀ in float rounded once to x's dtype (one small kernel,
// N*C*C elements), then dX = F S / CHW is one GEMM instead of two (S is symmetric), its output
// rounded once. f32 stays on cublasSgemmStridedBatched, so its results are unchanged.
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
    cuda_detail::launch_fill(g.raw(), cuda_detail::FloatType::f32, g.numel(), 0.0f, cuda_detail::stream_of(ctx));
    return;
  }
  const float beta = 0.0f;
  const long long stride_f = static_cast<long long>(d.c) * d.hw;
  const long long stride_g = static_cast<long long>(d.c) * d.c;
  const int ld = std::max(1, d.hw);
  if (x.dtype() != DType::f32) {
    const cudaDataType_t xt = cuda_detail::cublas_type(x.dtype());
    CUDL_CUBLAS_CHECK(
        cublasGemmStridedBatchedEx(cuda_resources(ctx).cublas, CUBLAS_OP_T, CUBLAS_OP_N, d.c, d.c, d.hw, &d.inv_chw,
                                   x.raw(), xt, ld, stride_f, x.raw(), xt, ld, stride_f, &beta, g.raw(), CUDA_R_32F,
                                   d.c, stride_g, d.n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "gram_forward x={} ({}) g={}", x.shape(), dtype_name(x.dtype()), g.shape());
    return;
  }
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
  if (x.dtype() != DType::f32) {
    // S_n = dG_n + dG_nᵀ in x's dtype; dXc = inv * Fc * S_n (S symmetric: no transpose to mind).
    const cudaDataType_t xt = cuda_detail::cublas_type(x.dtype());
    Workspace s(ctx, static_cast<std::size_t>(dg.numel()) * dtype_size(x.dtype()));
    cuda_detail::launch_gram_symmetrize(dg.data<float>(), s.data(), cuda_detail::float_type(x.dtype()), d.n, d.c,
                                        cuda_detail::stream_of(ctx));
    CUDL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas, CUBLAS_OP_N, CUBLAS_OP_N, d.hw, d.c, d.c, &d.inv_chw, x.raw(),
                                                 xt, d.hw, stride_f, s.data(), xt, d.c, stride_g, &zero, dx.raw(), xt,
                                                 d.hw, stride_f, d.n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "gram_backward x={} ({}) dg={}", x.shape(), dtype_name(x.dtype()), dg.shape());
    return;
  }
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
