// Elementwise basics (fill, axpy, scale, clamp) and seeded random fills. CPU twin:
// kernels/cpu/elementwise.cpp (copy is a cudaMemcpyAsync in elementwise.cpp). fill, axpy and scale
// take any float dtype (float_types.cuh: float inside, one rounding per stored value) with 16-byte
// accesses through launch_map; clamp and the random fills are f32 only.
#include "cudl/engine/philox.hpp"
#include "cudl/kernels/cuda/float_types.cuh"

namespace cudl::cuda_detail {

namespace {

struct Fill {
  float value;
  __device__ float operator()(std::int64_t) const { return value; }
};

// y + alpha * x with __fmul_rn/__fadd_rn: the product is rounded before the sum, as on the CPU (nvcc
// would fuse them).
struct Axpy {
  float alpha;
  __device__ float operator()(std::int64_t, float x, float y) const { return __fadd_rn(y, __fmul_rn(alpha, x)); }
};

struct Scale {
  float alpha;
  __device__ float operator()(std::int64_t, float x) const { return x * alpha; }
};

// Comparisons rather than fminf/fmaxf, which would turn a NaN into a bound; the CPU does the same.
__global__ void clamp_kernel(std::int64_t n, float* x, float low, float high) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const float v = x[i];
    x[i] = v < low ? low : (v > high ? high : v);
  }
}

// __fmul_rn/__fadd_rn keep nvcc from contracting into an FMA, so the values are bit-identical to
// the CPU's `low + width * u`.
__global__ void fill_uniform_kernel(std::int64_t n, float* x, float low, float high, std::uint64_t seed,
                                    std::uint64_t offset) {
  const float width = high - low;
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const float u = philox::uniform(offset + static_cast<std::uint64_t>(i), seed);
    const float v = __fadd_rn(low, __fmul_rn(width, u));
    x[i] = (v < high || low == high) ? v : low;  // keep the interval half-open
  }
}

__global__ void fill_normal_kernel(std::int64_t n, float* x, float mean, float stddev, std::uint64_t seed,
                                   std::uint64_t offset) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride())
    x[i] = __fadd_rn(mean, __fmul_rn(stddev, philox::normal(offset + static_cast<std::uint64_t>(i), seed)));
}

}  // namespace

void launch_fill(void* x, FloatType t, std::int64_t n, float value, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map("fill_kernel", Fill{value}, n, stream, static_cast<T*>(x));
  });
}

void launch_axpy(float alpha, const void* x, void* y, FloatType t, std::int64_t n, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map("axpy_kernel", Axpy{alpha}, n, stream, static_cast<T*>(y), static_cast<const T*>(x),
               static_cast<const T*>(y));
  });
}

void launch_scale(void* x, FloatType t, float alpha, std::int64_t n, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map("scale_kernel", Scale{alpha}, n, stream, static_cast<T*>(x), static_cast<const T*>(x));
  });
}

void launch_clamp(float* x, std::int64_t n, float low, float high, cudaStream_t stream) {
  launch_linear("clamp_kernel", clamp_kernel, n, stream, x, low, high);
}

void launch_fill_uniform(float* x, std::int64_t n, float low, float high, std::uint64_t seed, std::uint64_t offset,
                         cudaStream_t stream) {
  launch_linear("fill_uniform_kernel", fill_uniform_kernel, n, stream, x, low, high, seed, offset);
}

void launch_fill_normal(float* x, std::int64_t n, float mean, float stddev, std::uint64_t seed, std::uint64_t offset,
                        cudaStream_t stream) {
  launch_linear("fill_normal_kernel", fill_normal_kernel, n, stream, x, mean, stddev, seed, offset);
}

}  // namespace cudl::cuda_detail
