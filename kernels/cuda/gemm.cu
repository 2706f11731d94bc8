// The bias of dense and convolution layers: bias_add and bias_grad over dim 1 (the GEMMs themselves
// are cuBLAS's, kernels/cublas/gemm.cpp). CPU twin: kernels/cpu/gemm.cpp.
#include <algorithm>

#include "cudl/kernels/cuda/launch.cuh"
#include "cudl/kernels/cuda/reduce.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void bias_add_kernel(Planes s, float* y, const float* bias) {
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float b = bias[c];
    float* yp = y + plane * s.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) yp[p] += b;
  });
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
__global__ void __launch_bounds__(kBlock)
    bias_grad_partials_kernel(Planes s, const float* dy, double* partials, BiasGradChunks k) {
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
        acc += dy[(n * s.channels + c) * size + p];
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

}  // namespace

void launch_bias_add(float* y, const float* bias, const Planes& s, cudaStream_t stream) {
  launch_planes("bias_add_kernel", bias_add_kernel, s, stream, y, bias);
}

std::size_t bias_grad_scratch_bytes(const Planes& s) {
  return static_cast<std::size_t>(std::max<std::int64_t>(s.channels, 0) * bias_grad_chunks(s).chunks) * sizeof(double);
}

void launch_bias_grad(const float* dy, float* dbias, const Planes& s, bool accumulate, void* scratch,
                      cudaStream_t stream) {
  if (s.channels <= 0) return;
  const BiasGradChunks k = bias_grad_chunks(s);
  auto* partials = static_cast<double*>(scratch);
  const dim3 grid(static_cast<unsigned>(k.chunks), static_cast<unsigned>(std::min(s.channels, kMaxGridYZ)));
  launch_grid("bias_grad_partials_kernel", bias_grad_partials_kernel, grid, dim3(kBlock), stream, s, dy, partials, k);
  launch_linear("bias_grad_finish_kernel", bias_grad_finish_kernel, s.channels, stream, partials, k.chunks, dbias,
                accumulate);
}

}  // namespace cudl::cuda_detail
