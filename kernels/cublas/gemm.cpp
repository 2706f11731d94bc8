// CudaBackend: GEMM and Gram matrices through cuBLAS. cuBLAS is column-major and our tensors are
// row-major; a row-major buffer read as column-major is its transpose, so C = op(A) op(B) is
// computed as Cᵀ = op(B)ᵀ op(A)ᵀ by swapping the operands. The math mode (strict fp32 or TF32)
// is set on the handle per context (engine/cuda/cuda_context.cpp).
#include <algorithm>

#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"

namespace cudl {

using cuda_detail::device_tensor;
using cuda_detail::to_int;

void CudaBackend::gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b,
                       float beta, Tensor& c) {
  device_tensor("gemm", "a", a, ctx);
  device_tensor("gemm", "b", b, ctx);
  device_tensor("gemm", "c", c, ctx);
  check::rank_is("gemm", "a", a, 2);
  check::rank_is("gemm", "b", b, 2);
  check::rank_is("gemm", "c", c, 2);
  const std::int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const std::int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const std::int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const std::int64_t n = trans_b ? b.dim(0) : b.dim(1);
  CUDL_CHECK(k == kb, "gemm: inner dimensions differ: op(a) is [{},{}] (a={}, trans_a={}) but op(b) is [{},{}] (b={}, trans_b={})",
             m, k, a.shape(), trans_a, kb, n, b.shape(), trans_b);
  check::shape_is("gemm", "c", c, Shape{m, n});
  if (m == 0 || n == 0) return;
  CudaResources& r = cuda_resources(ctx);
  // Leading dimensions are the row lengths of the row-major buffers (at least 1, as cuBLAS asks,
  // even for an empty operand, which it then never reads).
  const int lda = std::max(1, to_int("gemm", "a.dim(1)", a.dim(1), a.shape()));
  const int ldb = std::max(1, to_int("gemm", "b.dim(1)", b.dim(1), b.shape()));
  const int ldc = to_int("gemm", "c.dim(1)", n, c.shape());
  CUDL_CUBLAS_CHECK(cublasSgemm(r.cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                to_int("gemm", "n", n, c.shape()), to_int("gemm", "m", m, c.shape()),
                                to_int("gemm", "k", k, a.shape()), &alpha, b.data<float>(), ldb, a.data<float>(), lda,
                                &beta, c.data<float>(), ldc),
                    "gemm a={} b={} c={} trans_a={} trans_b={}", a.shape(), b.shape(), c.shape(), trans_a, trans_b);
}

namespace {
struct GramDims {
  int n = 0, c = 0, hw = 0;
  float inv_chw = 0.0f;
};

GramDims gram_dims(std::string_view op, const Tensor& x) {
  check::rank_is(op, "x", x, 4);
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
void CudaBackend::gram_forward(Context& ctx, const Tensor& x, Tensor& g) {
  device_tensor("gram", "x", x, ctx);
  device_tensor("gram", "g", g, ctx);
  const GramDims d = gram_dims("gram", x);
  check::shape_is("gram", "g", g, Shape{x.dim(0), x.dim(1), x.dim(1)});
  if (d.n == 0 || d.c == 0) return;
  CudaResources& r = cuda_resources(ctx);
  const float beta = 0.0f;
  const long long stride_f = static_cast<long long>(d.c) * d.hw;
  const long long stride_g = static_cast<long long>(d.c) * d.c;
  const int ld = std::max(1, d.hw);
  CUDL_CUBLAS_CHECK(cublasSgemmStridedBatched(r.cublas, CUBLAS_OP_T, CUBLAS_OP_N, d.c, d.c, d.hw, &d.inv_chw,
                                              x.data<float>(), ld, stride_f, x.data<float>(), ld, stride_f, &beta,
                                              g.data<float>(), d.c, stride_g, d.n),
                    "gram x={} g={}", x.shape(), g.shape());
}

// dX_n = (dG_n + dG_nᵀ) F_n / CHW as two accumulating GEMMs. Column-major, dXc = dX_nᵀ [HW, C]:
// dXc = Fc dG_nᵀ + Fc dG_n, and the dG buffer read column-major is dG_nᵀ.
void CudaBackend::gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx) {
  device_tensor("gram_backward", "x", x, ctx);
  device_tensor("gram_backward", "dg", dg, ctx);
  device_tensor("gram_backward", "dx", dx, ctx);
  const GramDims d = gram_dims("gram_backward", x);
  check::shape_is("gram_backward", "dg", dg, Shape{x.dim(0), x.dim(1), x.dim(1)});
  check::same_shape("gram_backward", "x", x, "dx", dx);
  if (d.n == 0 || d.c == 0 || d.hw == 0) return;
  CudaResources& r = cuda_resources(ctx);
  const float zero = 0.0f, one = 1.0f;
  const long long stride_f = static_cast<long long>(d.c) * d.hw;
  const long long stride_g = static_cast<long long>(d.c) * d.c;
  // dXc = inv * Fc * (dG buffer as is = dG_nᵀ)
  CUDL_CUBLAS_CHECK(cublasSgemmStridedBatched(r.cublas, CUBLAS_OP_N, CUBLAS_OP_N, d.hw, d.c, d.c, &d.inv_chw,
                                              x.data<float>(), d.hw, stride_f, dg.data<float>(), d.c, stride_g, &zero,
                                              dx.data<float>(), d.hw, stride_f, d.n),
                    "gram_backward x={} dg={} (dgᵀ term)", x.shape(), dg.shape());
  // dXc += inv * Fc * (dG buffer transposed = dG_n)
  CUDL_CUBLAS_CHECK(cublasSgemmStridedBatched(r.cublas, CUBLAS_OP_N, CUBLAS_OP_T, d.hw, d.c, d.c, &d.inv_chw,
                                              x.data<float>(), d.hw, stride_f, dg.data<float>(), d.c, stride_g, &one,
                                              dx.data<float>(), d.hw, stride_f, d.n),
                    "gram_backward x={} dg={} (dg term)", x.shape(), dg.shape());
}

}  // namespace cudl
