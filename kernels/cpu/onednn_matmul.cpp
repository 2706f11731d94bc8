// Half-precision GEMMs through oneDNN's matmul primitive (oneDNN 2.6 has no bf16 gemm in its C
// API: dnnl_sgemm and the int8 ones only). bf16 A and B are multiplied with f32 accumulation on
// AMX or AVX-512 BF16 tiles; C is f32 or rounded once to bf16. alpha is the primitive's output
// scale and beta its sum post-op, both fixed at creation, so a primitive is cached per
// (shapes, transposes, leading dimensions, dtypes, alpha, beta): the callers (layers, Gram) use a
// few fixed shapes with alpha and beta constant.
#include "cudl/kernels/cpu/onednn_conv.hpp"

#if CUDL_HAVE_ONEDNN
#include <array>
#include <bit>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>

#include "cudl/engine/error.hpp"
#include "cudl/kernels/cpu/onednn_common.hpp"
#endif

namespace cudl::cpu {

#if CUDL_HAVE_ONEDNN
namespace {

using dnnl::memory;
using dt = memory::data_type;
using onednn_detail::engine;
using onednn_detail::kSerialGemmMacs;
using onednn_detail::SerialTeam;
using onednn_detail::to_dnnl;

// Row-major op(X) [rows, cols] of a matrix stored with leading dimension ld: a transposed one is
// read through swapped strides, no copy.
memory::desc operand(std::int64_t rows, std::int64_t cols, bool trans, std::int64_t ld, dt type) {
  return trans ? memory::desc({rows, cols}, type, {1, ld}) : memory::desc({rows, cols}, type, {ld, 1});
}

struct Gemm {
  bool trans_a, trans_b;
  std::int64_t m, n, k, lda, ldb, ldc;
  DType ab, ct;
  float alpha, beta;
};

dnnl::matmul::primitive_desc make_pd(const Gemm& g) {
  const memory::desc a = operand(g.m, g.k, g.trans_a, g.lda, to_dnnl(g.ab));
  const memory::desc b = operand(g.k, g.n, g.trans_b, g.ldb, to_dnnl(g.ab));
  const memory::desc c = operand(g.m, g.n, false, g.ldc, to_dnnl(g.ct));
  dnnl::primitive_attr attr;
  if (g.alpha != 1.0f) attr.set_output_scales(0, {g.alpha});
  if (g.beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(g.beta);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, engine());
}

// The implementation oneDNN picks for a mid-sized product in `t` (C f32), or empty when it has
// none or only a reference one (slower than widening to f32 and oneDNN's sgemm).
std::string probe(DType t) {
  try {
    const auto pd = make_pd({false, false, 128, 128, 128, 128, 128, 128, t, DType::f32, 1.0f, 0.0f});
    std::string impl = pd.impl_info_str();
    return impl.rfind("ref", 0) == 0 ? std::string() : impl;
  } catch (const dnnl::error&) {
    return {};
  }
}

const std::string& impl_for(DType t) {
  static const std::string bf16 = probe(DType::bf16), f16 = probe(DType::f16);
  return t == DType::bf16 ? bf16 : f16;
}

using Key = std::array<std::int64_t, 12>;

Key key_of(const Gemm& g) {
  return {g.trans_a,
          g.trans_b,
          g.m,
          g.n,
          g.k,
          g.lda,
          g.ldb,
          g.ldc,
          static_cast<std::int64_t>(g.ab),
          static_cast<std::int64_t>(g.ct),
          std::bit_cast<std::uint32_t>(g.alpha),
          std::bit_cast<std::uint32_t>(g.beta)};
}

const dnnl::matmul& primitive_for(const Gemm& g) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<dnnl::matmul>> cache;
  const std::lock_guard lock(mutex);
  auto& slot = cache[key_of(g)];
  if (!slot) {
    try {
      slot = std::make_unique<dnnl::matmul>(make_pd(g));
    } catch (const dnnl::error& e) {
      cache.erase(key_of(g));
      CUDL_THROW("gemm: oneDNN could not create a {} matmul (m={}, n={}, k={}, trans_a={}, trans_b={}, c {}): {}",
                 dtype_name(g.ab), g.m, g.n, g.k, g.trans_a, g.trans_b, dtype_name(g.ct), e.what());
    }
  }
  return *slot;
}

}  // namespace

bool onednn_half_gemm(CpuGemm gemm, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                      float alpha, DType ab, const void* a, std::int64_t lda, const void* b, std::int64_t ldb,
                      float beta, DType ct, void* c, std::int64_t ldc) {
  if (!is_half(ab) || gemm == CpuGemm::openblas || impl_for(ab).empty()) return false;
  const Gemm g{trans_a, trans_b, m, n, k, lda, ldb, ldc, ab, ct, alpha, beta};
  const SerialTeam team(m * n * k <= kSerialGemmMacs);
  const dnnl::matmul& mm = primitive_for(g);
  thread_local dnnl::stream stream(engine());
  try {
    const memory ma(operand(m, k, trans_a, lda, to_dnnl(ab)), engine(), const_cast<void*>(a));
    const memory mb(operand(k, n, trans_b, ldb, to_dnnl(ab)), engine(), const_cast<void*>(b));
    const memory mc(operand(m, n, false, ldc, to_dnnl(ct)), engine(), c);
    mm.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    stream.wait();
  } catch (const dnnl::error& e) {
    CUDL_THROW("gemm: oneDNN {} matmul failed (m={}, n={}, k={}): {}", dtype_name(ab), m, n, k, e.what());
  }
  return true;
}

std::string onednn_matmul_impl(DType t, CpuGemm gemm) {
  return is_half(t) && gemm != CpuGemm::openblas ? impl_for(t) : std::string();
}

#else  // no oneDNN: every half GEMM is widened to f32

bool onednn_half_gemm(CpuGemm, bool, bool, std::int64_t, std::int64_t, std::int64_t, float, DType, const void*,
                      std::int64_t, const void*, std::int64_t, float, DType, void*, std::int64_t) {
  return false;
}

std::string onednn_matmul_impl(DType, CpuGemm) { return {}; }

#endif

bool onednn_half_gemm(CpuGemm gemm, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                      float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c) {
  return onednn_half_gemm(gemm, trans_a, trans_b, m, n, k, alpha, a.dtype(), a.raw(), a.dim(1), b.raw(), b.dim(1), beta,
                          c.dtype(), c.raw(), n);
}

}  // namespace cudl::cpu
