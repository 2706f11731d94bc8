// Inverted dropout and the elementwise product its backward uses. CPU twin: kernels/cpu/dropout.cpp.
// Templated on the element type (float_types.cuh; float inside): the mask is stored in x's dtype
// (keep_scale rounded once), y = x * keep_scale or 0 formed in float and rounded once. Both
// kernels use 16-byte accesses where the pointers allow.
#include "cudl/engine/philox.hpp"
#include "cudl/kernels/cuda/float_types.cuh"

namespace cudl::cuda_detail {

namespace {

// The uniforms of the elements at counters [c0, c0 + N): philox::grouped_uniform's stream (the
// CPU twin's), one Philox call per group of four counters, shared by the pack's elements in it.
template <int N>
__device__ __forceinline__ void pack_uniforms(std::uint64_t c0, std::uint64_t seed, float (&u)[N]) {
  philox::Uint4 r{};
  std::uint64_t group = ~std::uint64_t{0};  // no counter's group (counters are below 2^64)
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const std::uint64_t c = c0 + static_cast<std::uint64_t>(j);
    if ((c >> 2) != group) {
      group = c >> 2;
      r = philox::philox4x32_10(group, seed);
    }
    u[j] = philox::word_uniform(philox::word(r, static_cast<std::uint32_t>(c & 3u)));
  }
}

// N elements per access (N = 1: scalar), as launch_map's kernel, with two outputs.
// counter, when not null, is a u64 (two 32-bit words, low first) on the device added to offset:
// a replayed graph's launch keeps its arguments, so the offset that changes each step lives there.
template <int N, class T>
__global__ void dropout_kernel(std::int64_t n, const T* x, T* y, T* mask, float p, float keep_scale, std::uint64_t seed,
                               std::uint64_t offset, const std::uint32_t* counter) {
  if (counter) offset += counter[0] | static_cast<std::uint64_t>(counter[1]) << 32;
  using P = Pack<T, N>;
  const std::int64_t packs = N > 1 ? n / N : 0;
  for (std::int64_t k = global_thread(); k < packs; k += global_stride()) {
    const P xv = reinterpret_cast<const P*>(x)[k];
    P yv, mv;
    float u[N];
    pack_uniforms<N>(offset + static_cast<std::uint64_t>(k * N), seed, u);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float m = u[j] >= p ? keep_scale : 0.0f;
      mv.v[j] = narrow<T>(m);
      yv.v[j] = narrow<T>(widen(xv.v[j]) * m);
    }
    reinterpret_cast<P*>(mask)[k] = mv;
    reinterpret_cast<P*>(y)[k] = yv;
  }
  for (std::int64_t i = packs * N + global_thread(); i < n; i += global_stride()) {
    const float m = philox::grouped_uniform(offset + static_cast<std::uint64_t>(i), seed) >= p ? keep_scale : 0.0f;
    mask[i] = narrow<T>(m);
    y[i] = narrow<T>(widen(x[i]) * m);
  }
}

// counter += advance, after the dropout kernel that read it (same stream).
__global__ void counter_advance_kernel(std::uint32_t* counter, std::uint64_t advance) {
  const std::uint64_t next = (counter[0] | static_cast<std::uint64_t>(counter[1]) << 32) + advance;
  counter[0] = static_cast<std::uint32_t>(next);
  counter[1] = static_cast<std::uint32_t>(next >> 32);
}

struct Product {
  __device__ float operator()(std::int64_t, float a, float b) const { return a * b; }
};

}  // namespace

void launch_dropout(const void* x, void* y, void* mask, FloatType t, std::int64_t n, float p, float keep_scale,
                    std::uint64_t seed, std::uint64_t offset, std::uint32_t* counter, std::uint64_t advance,
                    cudaStream_t stream) {
  if (n > 0)
    dispatch_float(t, [&](auto tag) {
      using T = typename decltype(tag)::type;
      constexpr int N = kVec<T>;
      const auto* xt = static_cast<const T*>(x);
      auto* yt = static_cast<T*>(y);
      auto* mt = static_cast<T*>(mask);
      if (n >= N && aligned16(x) && aligned16(y) && aligned16(mask))
        launch_grid("dropout_kernel", dropout_kernel<N, T>, dim3(blocks_for(n / N, kBlock)), dim3(kBlock), stream, n,
                    xt, yt, mt, p, keep_scale, seed, offset, counter);
      else
        launch_grid("dropout_kernel", dropout_kernel<1, T>, dim3(blocks_for(n, kBlock)), dim3(kBlock), stream, n, xt,
                    yt, mt, p, keep_scale, seed, offset, counter);
    });
  // Ordered after the kernel that read the counter, on the same stream.
  if (counter)
    launch_grid("counter_advance_kernel", counter_advance_kernel, dim3(1), dim3(1), stream, counter, advance);
}

void launch_mul(const void* a, const void* b, void* out, FloatType t, std::int64_t n, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map("mul_kernel", Product{}, n, stream, static_cast<T*>(out), static_cast<const T*>(a),
               static_cast<const T*>(b));
  });
}

}  // namespace cudl::cuda_detail
