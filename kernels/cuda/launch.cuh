#pragma once
// How our kernels are launched (device code; included by the .cu files only). Every launch goes
// through launch_grid: it enqueues on the context's stream and checks the launch under the
// kernel's name, so a bad configuration throws a cudl::Error that names the kernel. The two
// common shapes size their grid here, once:
//   launch_linear  one thread per item: kernel(n, args...) loops i over [0, n) with
//                  global_thread()/global_stride();
//   launch_rows    one warp per row: kernel(rows, args...) loops r over [0, rows) with
//                  global_warp()/warp_stride(), lanes over the row's columns.
// Both launch nothing for an empty range. Kernels with other shapes (a 3-D plane grid, the one
// block that finishes a reduction) pick their grid and call launch_grid themselves.
#include <cstdint>

#include "kernels/cuda/launch.hpp"

namespace cudl::cuda_detail {

inline constexpr unsigned kBlock = 256;  // threads per block of the linear and row launches
inline constexpr unsigned kWarpsPerBlock = kBlock / 32;
// Grid-stride loops cover any count, so grids stop growing here (about 1M blocks, far more than a
// GPU holds at once).
inline constexpr std::int64_t kMaxBlocks = 65535LL * 16;

// Blocks for `items` at `per_block` each: at least 1, at most kMaxBlocks.
inline unsigned blocks_for(std::int64_t items, std::int64_t per_block) {
  std::int64_t blocks = (items + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<unsigned>(blocks);
}

__device__ __forceinline__ std::int64_t global_thread() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ std::int64_t global_stride() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }
__device__ __forceinline__ std::int64_t global_warp() { return global_thread() >> 5; }
__device__ __forceinline__ std::int64_t warp_stride() { return global_stride() >> 5; }
__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x & 31); }

// Records bad data a kernel cannot throw on in the context's device fault word
// (cudl::device_fault_word); the next synchronising host read throws. The first fault stays.
__device__ __forceinline__ void raise_fault(int* word, DeviceFault fault) {
  atomicCAS(word, static_cast<int>(DeviceFault::none), static_cast<int>(fault));
}

// kernel<<<grid, block, 0, stream>>>(args...), then check_launch(name).
template <class... Params, class... Args>
void launch_grid(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                 Args... args) {
  kernel<<<grid, block, 0, stream>>>(args...);
  check_launch(name);
}

// One thread per item of [0, n): kernel(n, args...).
template <class... Params, class... Args>
void launch_linear(const char* name, void (*kernel)(std::int64_t, Params...), std::int64_t n, cudaStream_t stream,
                   Args... args) {
  if (n <= 0) return;
  launch_grid(name, kernel, dim3(blocks_for(n, kBlock)), dim3(kBlock), stream, n, args...);
}

// One warp per row of [0, rows): kernel(rows, args...).
template <class... Params, class... Args>
void launch_rows(const char* name, void (*kernel)(std::int64_t, Params...), std::int64_t rows, cudaStream_t stream,
                 Args... args) {
  if (rows <= 0) return;
  launch_grid(name, kernel, dim3(blocks_for(rows, kWarpsPerBlock)), dim3(kBlock), stream, rows, args...);
}

}  // namespace cudl::cuda_detail
