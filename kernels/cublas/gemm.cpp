// CudaBackend: GEMM through cuBLAS (CPU twin: kernels/cpu/gemm.cpp). cuBLAS is column-major and
// our tensors are row-major; a row-major buffer read as column-major is its transpose, so
// C = op(A) op(B) is computed as Cᵀ = op(B)ᵀ op(A)ᵀ by swapping the operands. The math mode
// (strict fp32 or TF32) is set on the handle per context (engine/cuda/cuda_context.cpp): strict
// fp32 is CUBLAS_DEFAULT_MATH, which never rounds SGEMM inputs to TF32.
// Determinism: cuBLAS's GEMMs give bit-identical results run to run on one GPU model and toolkit
// when a handle's work runs on one stream (each context has its own handle and stream) and atomics
// mode is off (its default), in either math mode; ctx.deterministic() needs nothing here or in
// kernels/cublas/gram.cpp.
// Half precision (a and b bf16 or f16; c f32 or a's dtype): cublasGemmEx with CUDA_R_16BF /
// CUDA_R_16F operands, CUBLAS_COMPUTE_32F (float accumulation, float alpha and beta, each output
// rounded once) and tensor cores (cuBLAS uses them for half operands in CUBLAS_DEFAULT_MATH too).
// f32 stays on cublasSgemm, so its results are unchanged.
// Arguments were checked by Backend::gemm (engine/backend.cpp); only cuBLAS's int limits are
// checked here.
#include <algorithm>

#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::to_int;

void CudaBackend::do_gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b,
                          float beta, Tensor& c) {
  const std::int64_t m = c.dim(0), n = c.dim(1);
  const std::int64_t k = trans_a ? a.dim(0) : a.dim(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // An empty product: C = beta C, zeros (over NaN too) when beta is 0, as on the CPU. Done here
    // rather than trusting cuBLAS with k = 0 (batched GEMMs have left C untouched: pytorch#31421).
    const cuda_detail::FloatType ct = cuda_detail::float_type(c.dtype());
    if (beta == 0.0f)
      cuda_detail::launch_fill(c.raw(), ct, c.numel(), 0.0f, cuda_detail::stream_of(ctx));
    else
      cuda_detail::launch_scale(c.raw(), ct, beta, c.numel(), cuda_detail::stream_of(ctx));
    return;
  }
  // Leading dimensions are the row lengths of the row-major buffers (at least 1, as cuBLAS asks,
  // even for an empty operand, which it then never reads).
  const int lda = std::max(1, to_int("gemm", "a.dim(1)", a.dim(1), a.shape()));
  const int ldb = std::max(1, to_int("gemm", "b.dim(1)", b.dim(1), b.shape()));
  const int ldc = to_int("gemm", "c.dim(1)", n, c.shape());
  if (a.dtype() != DType::f32) {
    CUDL_CUBLAS_CHECK(
        cublasGemmEx(cuda_resources(ctx).cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                     trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, to_int("gemm", "n", n, c.shape()),
                     to_int("gemm", "m", m, c.shape()), to_int("gemm", "k", k, a.shape()), &alpha, b.raw(),
                     cuda_detail::cublas_type(b.dtype()), ldb, a.raw(), cuda_detail::cublas_type(a.dtype()), lda, &beta,
                     c.raw(), cuda_detail::cublas_type(c.dtype()), ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "gemm a={} b={} c={} ({} x {} -> {}) trans_a={} trans_b={}", a.shape(), b.shape(), c.shape(),
        dtype_name(a.dtype()), dtype_name(b.dtype()), dtype_name(c.dtype()), trans_a, trans_b);
    return;
  }
  CUDL_CUBLAS_CHECK(cublasSgemm(cuda_resources(ctx).cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, to_int("gemm", "n", n, c.shape()),
                                to_int("gemm", "m", m, c.shape()), to_int("gemm", "k", k, a.shape()), &alpha,
                                b.data<float>(), ldb, a.data<float>(), lda, &beta, c.data<float>(), ldc),
                    "gemm a={} b={} c={} trans_a={} trans_b={}", a.shape(), b.shape(), c.shape(), trans_a, trans_b);
}

}  // namespace cudl
