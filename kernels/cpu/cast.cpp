// Casts between the float dtypes (f32, bf16, f16), rounding to nearest even (engine/half.hpp).
// CUDA twin: kernels/cuda/cast.cu.
#include <algorithm>

#include "cudl/engine/half.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

// Widening and bf16 rounding are integer shifts and adds that the AVX-512 copy does 16 at a time
// (simd_clones.hpp); the same bits as one at a time.
template <class From, class To>
CUDL_CPU_CLONES void convert_chunk(const From* src, To* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = store<To>(load(src[i]));
}

template <class From, class To>
void convert(const From* src, To* dst, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; i += cpu::kSimdChunk)
    convert_chunk(src + i, dst + i, std::min(cpu::kSimdChunk, n - i));
}

template <class From>
void convert_to(const From* src, Tensor& dst, std::int64_t n) {
  switch (dst.dtype()) {
    case DType::f32:
      return convert(src, dst.data<float>(), n);
    case DType::bf16:
      return convert(src, dst.data<bf16>(), n);
    case DType::f16:
      return convert(src, dst.data<f16>(), n);
    case DType::i32:
      break;
  }
  CUDL_THROW("cast: cannot write {} (shape {})", dtype_name(dst.dtype()), dst.shape());
}

}  // namespace

void CpuBackend::do_cast(Context&, const Tensor& src, Tensor& dst) {
  const std::int64_t n = src.numel();
  switch (src.dtype()) {
    case DType::f32:
      return convert_to(src.data<float>(), dst, n);
    case DType::bf16:
      return convert_to(src.data<bf16>(), dst, n);
    case DType::f16:
      return convert_to(src.data<f16>(), dst, n);
    case DType::i32:
      break;
  }
  CUDL_THROW("cast: cannot read {} (shape {})", dtype_name(src.dtype()), src.shape());
}

void cpu::widen(const Tensor& src, float* dst) {
  dispatch_float(src.dtype(), "widen", [&](auto tag) { widen(src.data<decltype(tag)>(), dst, src.numel()); });
}

void cpu::narrow(const float* src, Tensor& dst) {
  dispatch_float(dst.dtype(), "narrow", [&](auto tag) { narrow(src, dst.data<decltype(tag)>(), dst.numel()); });
}

cpu::F32Copy::F32Copy(Context& ctx, const Tensor& t, bool copy_values)
    : buffer_(ctx, static_cast<std::size_t>(t.numel()) * sizeof(float)),
      tensor_(Tensor::borrow(buffer_.data(), t.shape(), DType::f32, t.device())) {
  if (copy_values && t.numel() > 0) widen(t, tensor_.data<float>());
}

}  // namespace cudl
