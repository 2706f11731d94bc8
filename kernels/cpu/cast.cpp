// Casts between the float dtypes (f32, bf16, f16), rounding to nearest even (engine/half.hpp).
// CUDA twin: kernels/cuda/cast.cu.
#include "cudl/engine/half.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

template <class From, class To>
void convert(const From* src, To* dst, std::int64_t n) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) dst[i] = store<To>(load(src[i]));
}

template <class From>
void convert_to(const From* src, Tensor& dst, std::int64_t n) {
  switch (dst.dtype()) {
    case DType::f32: return convert(src, dst.data<float>(), n);
    case DType::bf16: return convert(src, dst.data<bf16>(), n);
    case DType::f16: return convert(src, dst.data<f16>(), n);
    case DType::i32: break;
  }
  CUDL_THROW("cast: cannot write {} (shape {})", dtype_name(dst.dtype()), dst.shape());
}

}  // namespace

void CpuBackend::do_cast(Context&, const Tensor& src, Tensor& dst) {
  const std::int64_t n = src.numel();
  switch (src.dtype()) {
    case DType::f32: return convert_to(src.data<float>(), dst, n);
    case DType::bf16: return convert_to(src.data<bf16>(), dst, n);
    case DType::f16: return convert_to(src.data<f16>(), dst, n);
    case DType::i32: break;
  }
  CUDL_THROW("cast: cannot read {} (shape {})", dtype_name(src.dtype()), src.shape());
}

}  // namespace cudl
