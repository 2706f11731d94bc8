#pragma once
// Warp and block reductions shared by the .cu files (device code only; no fmt).
#include <cstdint>

#include "kernels/cuda/launch.cuh"

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

// out[0] = (Σ in[0..n)) / divisor, by one block (launch with <<<1, Block>>>). A template so a
// .cu file that includes this header without using it gets no unused-function warning.
template <unsigned Block>
__global__ void __launch_bounds__(Block)
    sum_to_scalar_kernel(const float* in, std::int64_t n, float divisor, float* out) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += Block) acc += in[i];
  float total = block_sum(acc, scratch);
  if (threadIdx.x == 0) out[0] = total / divisor;
}

inline constexpr unsigned kFinalBlock = 1024;

// out[0] = (Σ in[0..n)) / divisor, by one block.
inline void launch_sum_to_scalar(const float* in, std::int64_t n, float divisor, float* out, cudaStream_t stream) {
  launch_grid("sum_to_scalar_kernel", sum_to_scalar_kernel<kFinalBlock>, dim3(1), dim3(kFinalBlock), stream, in, n,
              divisor, out);
}

// Pass 1 of a deterministic two-pass sum: block b writes partials[b] = Σ f(i) over its
// grid-stride share of [0, n).
template <class F>
__global__ void __launch_bounds__(kBlock) partial_sums_kernel(std::int64_t n, F f, float* partials) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) acc += f(i);
  float total = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// out[0] = (Σ_{i<n} f(i)) / divisor: at most kLossPartials block sums, then one block adds them.
template <class F>
void reduce_to_scalar(F f, std::int64_t n, float divisor, float* partials, float* out, cudaStream_t stream) {
  const unsigned blocks =
      n > 0 ? (blocks_for(n, kBlock) < static_cast<unsigned>(kLossPartials) ? blocks_for(n, kBlock)
                                                                            : static_cast<unsigned>(kLossPartials))
            : 0u;
  if (blocks > 0)
    launch_grid("partial_sums_kernel", partial_sums_kernel<F>, dim3(blocks), dim3(kBlock), stream, n, f, partials);
  launch_sum_to_scalar(partials, blocks, divisor, out, stream);
}

}  // namespace cudl::cuda_detail
