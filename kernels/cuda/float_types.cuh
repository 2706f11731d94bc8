#pragma once
// The float element types of the dtype-templated kernels (device code; included by the .cu files
// only): float, __nv_bfloat16 and __half, which hold the same bits as engine/dtype.hpp's f32,
// bf16 and f16. Every kernel loads with widen() (exact), computes and accumulates in float, and
// stores with narrow<T>() (rounded to nearest even, once). The dtype switch is in the launchers
// (dispatch_float), never in an inner loop.
//
// Also the memory-bound elementwise map (launch_map): one kernel shape for y = f(x...) over n
// elements, with 16-byte vector loads and stores when every pointer is 16-byte aligned (4 floats
// or 8 halves per access) and a scalar tail for the last n % 4 (or 8) elements.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "cudl/kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }

template <class To>
__device__ __forceinline__ To narrow(float v);
template <>
__device__ __forceinline__ float narrow<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half narrow<__half>(float v) {
  return __float2half_rn(v);
}

// A type as a value, for generic lambdas: dispatch_float(t, [&](auto tag) { using T = typename
// decltype(tag)::type; ... }).
template <class T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the element type of `t` (host code, in the launchers).
template <class F>
void dispatch_float(FloatType t, F&& f) {
  switch (t) {
    case FloatType::f32:
      f(TypeTag<float>{});
      return;
    case FloatType::bf16:
      f(TypeTag<__nv_bfloat16>{});
      return;
    case FloatType::f16:
      f(TypeTag<__half>{});
      return;
  }
}

// ---- 16-byte vector access ----

// Elements of T per 16-byte access.
template <class T>
inline constexpr int kVec = static_cast<int>(16 / sizeof(T));

// N elements of T loaded or stored as one access (N * sizeof(T) bytes, at most 16).
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

namespace map_detail {
template <class F, class P, std::size_t... I>
__device__ __forceinline__ float apply_pack(const F& f, std::int64_t i, const P* src, int j,
                                            std::index_sequence<I...>) {
  return f(i, widen(src[I].v[j])...);
}
}  // namespace map_detail

// out[i] = narrow(f(i, widen(in[i])...)) for i in [0, n): the first n / N * N elements N at a time
// (one vector load per input, one vector store), the rest one at a time. `out` may be one of the
// inputs (each element is read before it is written, by the same thread).
template <int N, class T, class F, class... In>
__global__ void map_kernel(std::int64_t n, F f, T* out, const In*... in) {
  static_assert((std::is_same_v<In, T> && ...), "every input has the output's type");
  using P = Pack<T, N>;
  const std::int64_t packs = N > 1 ? n / N : 0;
  for (std::int64_t k = global_thread(); k < packs; k += global_stride()) {
    const P src[sizeof...(In) > 0 ? sizeof...(In) : 1] = {reinterpret_cast<const P*>(in)[k]...};
    P r;
#pragma unroll
    for (int j = 0; j < N; ++j)
      r.v[j] = narrow<T>(map_detail::apply_pack(f, k * N + j, src, j, std::index_sequence_for<In...>{}));
    reinterpret_cast<P*>(out)[k] = r;
  }
  for (std::int64_t i = packs * N + global_thread(); i < n; i += global_stride())
    out[i] = narrow<T>(f(i, widen(in[i])...));
}

// Launches map_kernel over n elements: vectorised when every pointer is 16-byte aligned (a
// tensor's start always is; a view may not be), else one element per access.
template <class T, class F, class... In>
void launch_map(const char* name, F f, std::int64_t n, cudaStream_t stream, T* out, const In*... in) {
  if (n <= 0) return;
  constexpr int N = kVec<T>;
  if (n >= N && aligned16(out) && (aligned16(in) && ...)) {
    launch_grid(name, map_kernel<N, T, F, In...>, dim3(blocks_for(n / N, kBlock)), dim3(kBlock), stream, n, f, out,
                in...);
  } else {
    launch_grid(name, map_kernel<1, T, F, In...>, dim3(blocks_for(n, kBlock)), dim3(kBlock), stream, n, f, out, in...);
  }
}

}  // namespace cudl::cuda_detail
