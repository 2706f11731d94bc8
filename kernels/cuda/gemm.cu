// The bias of dense and convolution layers: bias_add and bias_grad over dim 1 (NCHW-like, or a
// channels_last y and dy) (the GEMMs themselves are cuBLAS's, kernels/cublas/gemm.cpp). CPU twin:
// kernels/cpu/gemm.cpp. y and dy are any float dtype (float_types.cuh: widened to float, y rounded
// once), bias and dbias f32. Also the one kernel the half-precision Gram backward needs
// (kernels/cublas/gram.cpp).
#include <algorithm>

#include "cudl/kernels/cuda/float_types.cuh"
#include "cudl/kernels/cuda/reduce.cuh"

namespace cudl::cuda_detail {

namespace {

// s.size counts packs of N elements (the launcher divides the plane size by N).
template <int N, class T>
__global__ void bias_add_kernel(Planes s, T* y, const float* bias) {
  using P = Pack<T, N>;
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float b = bias[c];
    P* yp = reinterpret_cast<P*>(y) + plane * s.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      P v = yp[p];
#pragma unroll
      for (int j = 0; j < N; ++j) v.v[j] = narrow<T>(widen(v.v[j]) + b);
      yp[p] = v;
    }
  });
}

// A channels_last y seen as [rows, channels] (rows = N*H*W), in packs of N consecutive channels:
// `packs_per_row` packs a row, pack i starting at channel (i % packs_per_row) * N.
template <int N, class T>
__global__ void bias_add_channels_last_kernel(std::int64_t packs, T* y, const float* bias, std::int64_t packs_per_row) {
  using P = Pack<T, N>;
  P* yp = reinterpret_cast<P*>(y);
  for (std::int64_t i = global_thread(); i < packs; i += global_stride()) {
    const float* b = bias + (i % packs_per_row) * N;
    P v = yp[i];
#pragma unroll
    for (int j = 0; j < N; ++j) v.v[j] = narrow<T>(widen(v.v[j]) + b[j]);
    yp[i] = v;
  }
}

// s[n, i, j] = dg[n, i, j] + dg[n, j, i], summed in float and rounded once to T.
template <class T>
__global__ void gram_symmetrize_kernel(std::int64_t total, const float* dg, T* s, std::int64_t c) {
  const std::int64_t cc = c * c;
  for (std::int64_t idx = global_thread(); idx < total; idx += global_stride()) {
    const std::int64_t n = idx / cc, r = idx - n * cc;
    const std::int64_t i = r / c, j = r - i * c;
    s[idx] = narrow<T>(dg[idx] + dg[n * cc + j * c + i]);
  }
}

// bias_grad's pass-1 geometry: each channel's samples * size elements, in flat order
// j = n * size + p, are cut into `chunks` chunks of chunk_len (the last may be shorter).
struct BiasGradChunks {
  std::int64_t chunks = 1, chunk_len = 0;
};

// About 16 blocks per SM of a large GPU, but at least ~1024 elements (4 per thread) per block.
constexpr std::int64_t kBiasGradBlocks = 2048;
constexpr std::int64_t kBiasGradMinChunk = 4 * kBlock;

BiasGradChunks bias_grad_chunks(const Planes& s) {
  const std::int64_t count = s.samples * s.size;
  BiasGradChunks k;
  k.chunks = std::clamp<std::int64_t>((kBiasGradBlocks + s.channels - 1) / std::max<std::int64_t>(s.channels, 1), 1,
                                      std::max<std::int64_t>(count / kBiasGradMinChunk, 1));
  k.chunk_len = (count + k.chunks - 1) / k.chunks;
  return k;
}

// Pass 1, block (k, c): partials[c * chunks + k] = Σ of chunk k of channel c, in double. A thread
// steps blockDim.x elements at a time and carries its (sample, offset) position along instead of
// dividing the flat index again.
template <class T>
__global__ void __launch_bounds__(kBlock)
    bias_grad_partials_kernel(Planes s, const T* dy, double* partials, BiasGradChunks k) {
  const std::int64_t count = s.samples * s.size;
  const auto size = static_cast<unsigned>(s.size);
  // size == 0 (no pixels) leaves every chunk empty; the guard keeps the division defined.
  const unsigned step_samples = size > 0 ? blockDim.x / size : 0, step_offset = size > 0 ? blockDim.x % size : 0;
  for (std::int64_t c = blockIdx.y; c < s.channels; c += gridDim.y) {
    const std::int64_t begin = blockIdx.x * k.chunk_len;
    const std::int64_t end = begin + k.chunk_len < count ? begin + k.chunk_len : count;
    double acc = 0.0;
    std::int64_t j = begin + threadIdx.x;
    if (j < end) {
      std::int64_t n = j / size;
      unsigned p = static_cast<unsigned>(j - n * size);
      for (; j < end; j += blockDim.x) {
        acc += widen(dy[(n * s.channels + c) * size + p]);
        n += step_samples;
        p += step_offset;
        if (p >= size) {
          p -= size;
          ++n;
        }
      }
    }
    acc = block_reduce<SumOp>(acc);
    if (threadIdx.x == 0) partials[c * k.chunks + blockIdx.x] = acc;
  }
}

// Pass 2, one thread per channel: the chunks in order, then dbias[c] (+)= in double, as on the CPU.
__global__ void bias_grad_finish_kernel(std::int64_t channels, const double* partials, std::int64_t chunks,
                                        float* dbias, bool accumulate) {
  for (std::int64_t c = global_thread(); c < channels; c += global_stride()) {
    double sum = 0.0;
    for (std::int64_t k = 0; k < chunks; ++k) sum += partials[c * chunks + k];
    dbias[c] = static_cast<float>(accumulate ? dbias[c] + sum : sum);
  }
}

// The channels_last bias_grad's geometry: dy seen as [rows, channels] (rows = N*H*W), the rows cut
// into `chunks` runs of chunk_rows (the last may be shorter, none is empty); a block of `block`
// threads (a multiple of 32, at most kBlock) sums one run, its threads on consecutive channels so
// that a warp reads one row's channels together. About 16K warps in all keep the loads in flight.
struct ChannelsLastChunks {
  std::int64_t chunks = 1, chunk_rows = 0;
  int block = 32;
};

ChannelsLastChunks channels_last_chunks(std::int64_t rows, std::int64_t channels) {
  ChannelsLastChunks k;
  k.block = static_cast<int>(std::clamp<std::int64_t>((channels + 31) / 32 * 32, 32, kBlock));
  if (rows <= 0) return k;  // one empty run: the sums are zero
  k.chunks = std::clamp<std::int64_t>(16384 / (k.block / 32), 1, std::min<std::int64_t>(rows, 4096));
  k.chunk_rows = (rows + k.chunks - 1) / k.chunks;
  k.chunks = (rows + k.chunk_rows - 1) / k.chunk_rows;
  return k;
}

// Pass 1, block k: partials[c * chunks + k] = Σ of dy[r, c] over run k's rows, in double.
template <class T>
__global__ void __launch_bounds__(kBlock)
    bias_grad_channels_last_kernel(const T* dy, std::int64_t rows, std::int64_t channels, std::int64_t chunk_rows,
                                   double* partials, std::int64_t chunks) {
  const std::int64_t begin = blockIdx.x * chunk_rows;
  const std::int64_t end = begin + chunk_rows < rows ? begin + chunk_rows : rows;
  for (std::int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
    double acc = 0.0;
    for (std::int64_t r = begin; r < end; ++r) acc += widen(dy[r * channels + c]);
    partials[c * chunks + blockIdx.x] = acc;
  }
}

}  // namespace

// 16-byte accesses when every plane holds whole packs and y is aligned (then so is each plane).
void launch_bias_add(void* y, FloatType t, const float* bias, const Planes& s, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = kVec<T>;
    if (s.size % N == 0 && aligned16(y)) {
      Planes packs = s;
      packs.size = s.size / N;
      launch_planes("bias_add_kernel", bias_add_kernel<N, T>, packs, stream, static_cast<T*>(y), bias);
    } else {
      launch_planes("bias_add_kernel", bias_add_kernel<1, T>, s, stream, static_cast<T*>(y), bias);
    }
  });
}

// 16-byte accesses when a row holds whole packs and y is aligned (then so is every row).
void launch_bias_add_channels_last(void* y, FloatType t, const float* bias, std::int64_t rows, std::int64_t channels,
                                   cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int N = kVec<T>;
    if (channels % N == 0 && aligned16(y))
      launch_linear("bias_add_channels_last_kernel", bias_add_channels_last_kernel<N, T>, rows * (channels / N), stream,
                    static_cast<T*>(y), bias, channels / N);
    else
      launch_linear("bias_add_channels_last_kernel", bias_add_channels_last_kernel<1, T>, rows * channels, stream,
                    static_cast<T*>(y), bias, channels);
  });
}

void launch_gram_symmetrize(const float* dg, void* s, FloatType t, std::int64_t samples, std::int64_t channels,
                            cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_linear("gram_symmetrize_kernel", gram_symmetrize_kernel<T>, samples * channels * channels, stream, dg,
                  static_cast<T*>(s), channels);
  });
}

std::size_t bias_grad_scratch_bytes(const Planes& s) {
  return static_cast<std::size_t>(std::max<std::int64_t>(s.channels, 0) * bias_grad_chunks(s).chunks) * sizeof(double);
}

void launch_bias_grad(const void* dy, FloatType t, float* dbias, const Planes& s, bool accumulate, void* scratch,
                      cudaStream_t stream) {
  if (s.channels <= 0) return;
  const BiasGradChunks k = bias_grad_chunks(s);
  auto* partials = static_cast<double*>(scratch);
  const dim3 grid(static_cast<unsigned>(k.chunks), static_cast<unsigned>(std::min(s.channels, kMaxGridYZ)));
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_grid("bias_grad_partials_kernel", bias_grad_partials_kernel<T>, grid, dim3(kBlock), stream, s,
                static_cast<const T*>(dy), partials, k);
  });
  launch_linear("bias_grad_finish_kernel", bias_grad_finish_kernel, s.channels, stream, partials, k.chunks, dbias,
                accumulate);
}

std::size_t bias_grad_channels_last_scratch_bytes(std::int64_t rows, std::int64_t channels) {
  return static_cast<std::size_t>(std::max<std::int64_t>(channels, 0) * channels_last_chunks(rows, channels).chunks) *
         sizeof(double);
}

// Pass 2 is bias_grad_finish_kernel, as for NCHW: the partials are laid out alike.
void launch_bias_grad_channels_last(const void* dy, FloatType t, float* dbias, std::int64_t rows, std::int64_t channels,
                                    bool accumulate, void* scratch, cudaStream_t stream) {
  if (channels <= 0) return;
  const ChannelsLastChunks k = channels_last_chunks(rows, channels);
  auto* partials = static_cast<double*>(scratch);
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_grid("bias_grad_channels_last_kernel", bias_grad_channels_last_kernel<T>,
                dim3(static_cast<unsigned>(k.chunks)), dim3(static_cast<unsigned>(k.block)), stream,
                static_cast<const T*>(dy), rows, channels, k.chunk_rows, partials, k.chunks);
  });
  launch_linear("bias_grad_finish_kernel", bias_grad_finish_kernel, channels, stream, partials, k.chunks, dbias,
                accumulate);
}

}  // namespace cudl::cuda_detail
