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

namespace cudl::cuda_detail {

namespace {

// Per sample, src [rows, cols] -> dst [cols, rows] through a 32x33 shared tile (the extra column
// keeps the transposed reads off one bank): a block reads 32 rows of a tile coalesced, and writes
// them as 32 columns coalesced. Grid: x over column tiles, y over row tiles, z over samples (each
// looping past the grid's limits).
template <class T>
__global__ void transpose_kernel(const T* src, T* dst, std::int64_t samples, std::int64_t rows, std::int64_t cols) {
  __shared__ T tile[32][33];
  const std::int64_t row_tiles = (rows + 31) / 32, col_tiles = (cols + 31) / 32;
  for (std::int64_t n = blockIdx.z; n < samples; n += gridDim.z) {
    const T* s = src + n * rows * cols;
    T* d = dst + n * rows * cols;
    for (std::int64_t rt = blockIdx.y; rt < row_tiles; rt += gridDim.y) {
      for (std::int64_t ct = blockIdx.x; ct < col_tiles; ct += gridDim.x) {
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
          const std::int64_t r = rt * 32 + k, c = ct * 32 + threadIdx.x;
          if (r < rows && c < cols) tile[k][threadIdx.x] = s[r * cols + c];
        }
        __syncthreads();
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
          const std::int64_t c = ct * 32 + k, r = rt * 32 + threadIdx.x;
          if (r < rows && c < cols) d[c * rows + r] = tile[threadIdx.x][k];
        }
        __syncthreads();
      }
    }
  }
}

template <class T>
void launch_transpose_kernel(const T* src, T* dst, std::int64_t samples, std::int64_t rows, std::int64_t cols,
                             cudaStream_t stream) {
  if (samples <= 0 || rows <= 0 || cols <= 0) return;
  const std::int64_t row_tiles = (rows + 31) / 32, col_tiles = (cols + 31) / 32;
  const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>(col_tiles, kMaxBlocks)),
                  static_cast<unsigned>(std::min<std::int64_t>(row_tiles, kMaxGridYZ)),
                  static_cast<unsigned>(std::min<std::int64_t>(samples, kMaxGridYZ)));
  launch_grid("transpose_kernel", transpose_kernel<T>, grid, dim3(32, 8), stream, src, dst, samples, rows, cols);
}

}  // namespace

void launch_transpose(const void* src, void* dst, std::size_t element_bytes, std::int64_t samples, std::int64_t rows,
                      std::int64_t cols, cudaStream_t stream) {
  if (element_bytes == 2)
    launch_transpose_kernel(static_cast<const std::uint16_t*>(src), static_cast<std::uint16_t*>(dst), samples, rows,
                            cols, stream);
  else
    launch_transpose_kernel(static_cast<const std::uint32_t*>(src), static_cast<std::uint32_t*>(dst), samples, rows,
                            cols, stream);
}

}  // namespace cudl::cuda_detail
