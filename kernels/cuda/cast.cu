// Casts between the float dtypes (f32, bf16, f16), rounding to nearest even. CPU twin:
// kernels/cpu/cast.cpp. engine/half.hpp's bf16/f16 hold the same bits as __nv_bfloat16/__half.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cudl/kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }

template <class To>
__device__ __forceinline__ To narrow(float v);
template <>
__device__ __forceinline__ float narrow<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half narrow<__half>(float v) { return __float2half_rn(v); }

template <class From, class To>
__global__ void cast_kernel(std::int64_t n, const From* src, To* dst) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) dst[i] = narrow<To>(widen(src[i]));
}

template <class From>
void cast_from(const From* src, FloatType to, void* dst, std::int64_t n, cudaStream_t stream) {
  switch (to) {
    case FloatType::f32:
      return launch_linear("cast_kernel", cast_kernel<From, float>, n, stream, src, static_cast<float*>(dst));
    case FloatType::bf16:
      return launch_linear("cast_kernel", cast_kernel<From, __nv_bfloat16>, n, stream, src,
                           static_cast<__nv_bfloat16*>(dst));
    case FloatType::f16:
      return launch_linear("cast_kernel", cast_kernel<From, __half>, n, stream, src, static_cast<__half*>(dst));
  }
}

}  // namespace

void launch_cast(const void* src, FloatType from, void* dst, FloatType to, std::int64_t n, cudaStream_t stream) {
  switch (from) {
    case FloatType::f32: return cast_from(static_cast<const float*>(src), to, dst, n, stream);
    case FloatType::bf16: return cast_from(static_cast<const __nv_bfloat16*>(src), to, dst, n, stream);
    case FloatType::f16: return cast_from(static_cast<const __half*>(src), to, dst, n, stream);
  }
}

}  // namespace cudl::cuda_detail
