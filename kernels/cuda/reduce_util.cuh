#pragma once
// Block- and warp-level helpers shared by the .cu files (device code only; no fmt).
#include <cstdint>

namespace cudl::cuda_detail {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds at least 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(total);
}

// Grid-stride loop bounds.
__device__ __forceinline__ std::int64_t global_thread() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ std::int64_t global_stride() {
  return static_cast<std::int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace cudl::cuda_detail

namespace cudl::cuda_detail {

// out[0] = (Σ in[0..n)) / divisor, by one block (launch with <<<1, Block>>>). A template so a
// .cu file that includes this header without using it gets no unused-function warning.
template <unsigned Block>
__global__ void __launch_bounds__(Block) sum_to_scalar_kernel(const float* in, std::int64_t n, float divisor,
                                                              float* out) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += Block) acc += in[i];
  float total = block_sum(acc, scratch);
  if (threadIdx.x == 0) out[0] = total / divisor;
}

}  // namespace cudl::cuda_detail
