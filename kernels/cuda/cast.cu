// Casts between the float dtypes (f32, bf16, f16), rounding to nearest even, and the cast-and-add
// that folds a half-precision partial result into an f32 tensor. CPU twin: kernels/cpu/cast.cpp.
// engine/half.hpp's bf16/f16 hold the same bits as __nv_bfloat16/__half. 16-byte accesses on the
// wider side where both pointers are 16-byte aligned, a scalar tail.
#include "cudl/kernels/cuda/float_types.cuh"

namespace cudl::cuda_detail {

namespace {

// dst[i] = narrow<To>(widen(src[i])) (Add: dst[i] = dst[i] + widen(src[i]), To float), N at a time.
template <int N, bool Add, class From, class To>
__global__ void cast_kernel(std::int64_t n, const From* src, To* dst) {
  const std::int64_t packs = N > 1 ? n / N : 0;
  for (std::int64_t k = global_thread(); k < packs; k += global_stride()) {
    const Pack<From, N> s = reinterpret_cast<const Pack<From, N>*>(src)[k];
    Pack<To, N> d;
    if constexpr (Add) d = reinterpret_cast<const Pack<To, N>*>(dst)[k];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if constexpr (Add)
        d.v[j] = d.v[j] + widen(s.v[j]);
      else
        d.v[j] = narrow<To>(widen(s.v[j]));
    }
    reinterpret_cast<Pack<To, N>*>(dst)[k] = d;
  }
  for (std::int64_t i = packs * N + global_thread(); i < n; i += global_stride()) {
    if constexpr (Add)
      dst[i] = dst[i] + widen(src[i]);
    else
      dst[i] = narrow<To>(widen(src[i]));
  }
}

template <bool Add, class From, class To>
void launch_cast_kernel(const From* src, To* dst, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int N = kVec<From> < kVec<To> ? kVec<From> : kVec<To>;
  if (n >= N && aligned16(src) && aligned16(dst))
    launch_grid("cast_kernel", cast_kernel<N, Add, From, To>, dim3(blocks_for(n / N, kBlock)), dim3(kBlock), stream, n,
                src, dst);
  else
    launch_grid("cast_kernel", cast_kernel<1, Add, From, To>, dim3(blocks_for(n, kBlock)), dim3(kBlock), stream, n, src,
                dst);
}

}  // namespace

void launch_cast(const void* src, FloatType from, void* dst, FloatType to, std::int64_t n, cudaStream_t stream) {
  dispatch_float(from, [&](auto from_tag) {
    using From = typename decltype(from_tag)::type;
    dispatch_float(to, [&](auto to_tag) {
      using To = typename decltype(to_tag)::type;
      launch_cast_kernel<false>(static_cast<const From*>(src), static_cast<To*>(dst), n, stream);
    });
  });
}

void launch_cast_add(const void* src, FloatType from, float* dst, std::int64_t n, cudaStream_t stream) {
  dispatch_float(from, [&](auto tag) {
    using From = typename decltype(tag)::type;
    launch_cast_kernel<true>(static_cast<const From*>(src), dst, n, stream);
  });
}

}  // namespace cudl::cuda_detail
