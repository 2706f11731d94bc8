// See onednn_linear.hpp. One primitive per (N, in, out, dtype, bias or not), created on first use
// and cached: a network calls it with a few fixed shapes, and creating one costs far more than
// running a small one.
#include "cudl/kernels/cpu/onednn_linear.hpp"

#if CUDL_HAVE_ONEDNN
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>

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

// Below this many rows the product is a matrix-vector one, and the unfused ops are faster: the
// matmul primitive packs the transposed weights for its brgemm kernel on every call, while sgemm
// streams them once. VGG19's Linear(25088, 4096) + ReLU on the loaded 2-core VM (inference, ms,
// fused vs unfused, interleaved): batch 1 72-92 vs 30-64, batch 2 20-24 vs 15, batch 4 23-45 vs
// 30, batch 8 50-75 vs 152-156.
constexpr std::int64_t kMinFusedRows = 8;

struct Shapes {
  memory::desc x, w, bias, y;
};

// x [N, in] and y [N, out] row-major; the weights operand is wᵀ [in, out], read from w [out, in]
// through swapped strides (no copy); the bias a [1, out] row broadcast over the batch.
Shapes shapes_of(std::int64_t n, std::int64_t in, std::int64_t out, DType t) {
  return {memory::desc({n, in}, to_dnnl(t), {in, 1}), memory::desc({in, out}, to_dnnl(t), {1, in}),
          memory::desc({1, out}, dt::f32, {out, 1}), memory::desc({n, out}, to_dnnl(t), {out, 1})};
}

dnnl::matmul::primitive_desc make_pd(std::int64_t n, std::int64_t in, std::int64_t out, DType t, bool bias) {
  const Shapes s = shapes_of(n, in, out, t);
  dnnl::post_ops ops;
  // alpha = 0: max(v, 0). NaN comes out 0, as the ReLU kernels' (checked by the fusion tests).
  ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  const dnnl::matmul::desc d = bias ? dnnl::matmul::desc(s.x, s.w, s.bias, s.y) : dnnl::matmul::desc(s.x, s.w, s.y);
  return dnnl::matmul::primitive_desc(d, attr, engine());
}

// Whether oneDNN has a real kernel for `t` here: its reference matmul is slower than the unfused
// ops (which widen halves to f32 where oneDNN has none). Probed once per dtype at a mid size.
bool native(DType t) {
  const auto probe = [](DType d) {
    try {
      const std::string impl = make_pd(128, 128, 128, d, true).impl_info_str();
      return impl.rfind("ref", 0) != 0;
    } catch (const dnnl::error&) {
      return false;
    }
  };
  static const bool f32 = probe(DType::f32), bf16 = probe(DType::bf16), f16 = probe(DType::f16);
  return t == DType::bf16 ? bf16 : t == DType::f16 ? f16 : f32;
}

const dnnl::matmul& primitive_for(std::int64_t n, std::int64_t in, std::int64_t out, DType t, bool bias) {
  using Key = std::array<std::int64_t, 5>;
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<dnnl::matmul>> cache;
  const Key key{n, in, out, static_cast<std::int64_t>(t), bias};
  const std::lock_guard lock(mutex);
  auto& slot = cache[key];
  if (!slot) {
    try {
      slot = std::make_unique<dnnl::matmul>(make_pd(n, in, out, t, bias));
    } catch (const dnnl::error& e) {
      cache.erase(key);
      CUDL_THROW("linear_bias_relu_forward: oneDNN could not create a {} matmul (x=[{},{}], w=[{},{}], bias={}): {}",
                 dtype_name(t), n, in, out, in, bias, e.what());
    }
  }
  return *slot;
}

}  // namespace

bool onednn_linear_bias_relu(CpuGemm gemm, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  const DType t = x.dtype();
  const std::int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  if (gemm == CpuGemm::openblas || n < kMinFusedRows || !native(t)) return false;
  const SerialTeam team(n * in * out <= kSerialGemmMacs);
  const dnnl::matmul& mm = primitive_for(n, in, out, t, bias.defined());
  thread_local dnnl::stream stream(engine());
  try {
    const Shapes s = shapes_of(n, in, out, t);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(s.x, engine(), const_cast<void*>(x.raw()))},
                                         {DNNL_ARG_WEIGHTS, memory(s.w, engine(), const_cast<void*>(w.raw()))},
                                         {DNNL_ARG_DST, memory(s.y, engine(), y.raw())}};
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory(s.bias, engine(), const_cast<void*>(bias.raw())));
    mm.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    CUDL_THROW("linear_bias_relu_forward: oneDNN {} matmul failed (x={}, w={}): {}", dtype_name(t), x.shape(),
               w.shape(), e.what());
  }
  return true;
}

#else  // no oneDNN: the caller composes the unfused ops

bool onednn_linear_bias_relu(CpuGemm, const Tensor&, const Tensor&, const Tensor&, Tensor&) { return false; }

#endif

}  // namespace cudl::cpu
