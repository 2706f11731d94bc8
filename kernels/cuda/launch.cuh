#pragma once
// How our kernels are launched (device code; included by the .cu files only). Every launch goes
// through launch_grid: it enqueues on the context's stream and checks the launch under the
// kernel's name, so a bad configuration throws a cudl::Error that names the kernel. The common
// shapes size their grid here, once:
//   launch_linear  one thread per item: kernel(n, args...) loops i over [0, n) with
//                  global_thread()/global_stride();
//   launch_rows    one warp per row: kernel(rows, args...) loops r over [0, rows) with
//                  global_warp()/warp_stride(), lanes over the row's columns;
//   launch_planes  one thread per element of [samples, channels, plane] (Planes, launch.hpp):
//                  kernel(planes, args...) visits its planes with for_each_plane and the offsets
//                  inside each with plane_thread()/plane_stride(). Per-channel and per-window
//                  kernels so get the channel and the plane from the grid, and a 32-bit offset,
//                  instead of dividing a 64-bit flat index for every element.
// All three launch nothing for an empty range. Kernels with other shapes (the one block that
// finishes a reduction, bias_grad's channel x chunk grid) pick their grid and call launch_grid.
#include <algorithm>
#include <cstdint>

#include "cudl/kernels/cuda/launch.hpp"

namespace cudl::cuda_detail {

inline constexpr unsigned kBlock = 256;  // threads per block of the linear and row launches
inline constexpr unsigned kWarpsPerBlock = kBlock / 32;
// Grid-stride loops cover any count, so grids stop growing here (about 1M blocks, far more than a
// GPU holds at once).
inline constexpr std::int64_t kMaxBlocks = 65535LL * 16;
// The y and z grid dimensions are at most this (a hardware limit); kernels loop past it.
inline constexpr std::int64_t kMaxGridYZ = 65535;

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

// ---- launch_planes: x is the offset inside a plane, y the channel, z the sample ----
// A block is bx x by threads: bx is the plane size rounded up to a power of two, at most kBlock,
// and the by = kBlock / bx rows take consecutive channels, so small planes ([N, C] with plane size
// 1, a 7x7 map) still fill whole warps with consecutive addresses.
inline void plane_launch_shape(const Planes& s, dim3* grid, dim3* block) {
  unsigned bx = 1;
  while (bx < static_cast<unsigned>(s.size) && bx < kBlock) bx <<= 1;
  const unsigned by = kBlock / bx;
  const auto clamp = [](std::int64_t v, std::int64_t hi) {
    return static_cast<unsigned>(std::clamp<std::int64_t>(v, 1, hi));
  };
  *block = dim3(bx, by);
  *grid = dim3(clamp((s.size + bx - 1) / bx, kMaxBlocks), clamp((s.channels + by - 1) / by, kMaxGridYZ),
               clamp(s.samples, kMaxGridYZ));
}

// One thread per element of s: kernel(s, args...).
template <class... Params, class... Args>
void launch_planes(const char* name, void (*kernel)(Planes, Params...), const Planes& s, cudaStream_t stream,
                   Args... args) {
  if (s.samples <= 0 || s.channels <= 0 || s.size <= 0) return;
  dim3 grid, block;
  plane_launch_shape(s, &grid, &block);
  launch_grid(name, kernel, grid, block, stream, s, args...);
}

// Calls body(plane, c) for each plane of this thread's share, plane = n * channels + c the index of
// [n, c]; the body then loops over its offsets with plane_thread()/plane_stride(). Unsigned offsets:
// size < 2^31, so offset + stride never wraps.
template <class Body>
__device__ __forceinline__ void for_each_plane(const Planes& s, Body body) {
  for (std::int64_t n = blockIdx.z; n < s.samples; n += gridDim.z)
    for (std::int64_t c = static_cast<std::int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; c < s.channels;
         c += static_cast<std::int64_t>(gridDim.y) * blockDim.y)
      body(n * s.channels + c, c);
}
__device__ __forceinline__ unsigned plane_thread() { return blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ unsigned plane_stride() { return gridDim.x * blockDim.x; }

}  // namespace cudl::cuda_detail
