// The bias of dense and convolution layers: bias_add and bias_grad over dim 1 (the GEMMs themselves
// are cuBLAS's, kernels/cublas/gemm.cpp). CPU twin: kernels/cpu/gemm.cpp.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void bias_add_kernel(std::int64_t n, float* y, const float* bias, std::int64_t channels,
                                std::int64_t inner) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) y[i] += bias[(i / inner) % channels];
}

// One block per channel, summed in double like the CPU; dbias[c] + sum is formed in double too.
__global__ void bias_grad_kernel(const float* dy, float* dbias, std::int64_t outer, std::int64_t channels,
                                 std::int64_t inner, bool accumulate) {
  const std::int64_t c = blockIdx.x;
  const std::int64_t count = outer * inner;
  double acc = 0.0;
  for (std::int64_t j = threadIdx.x; j < count; j += blockDim.x) {
    std::int64_t o = j / inner, i = j - o * inner;
    acc += dy[(o * channels + c) * inner + i];
  }
  const double total = block_reduce<SumOp>(acc);
  if (threadIdx.x == 0) dbias[c] = static_cast<float>(accumulate ? dbias[c] + total : total);
}

}  // namespace

void launch_bias_add(float* y, const float* bias, std::int64_t outer, std::int64_t channels, std::int64_t inner,
                     cudaStream_t stream) {
  launch_linear("bias_add_kernel", bias_add_kernel, outer * channels * inner, stream, y, bias, channels, inner);
}

void launch_bias_grad(const float* dy, float* dbias, std::int64_t outer, std::int64_t channels, std::int64_t inner,
                      bool accumulate, cudaStream_t stream) {
  if (channels <= 0) return;
  // channels is at most a few thousand for any layer; gridDim.x allows 2^31 - 1.
  launch_grid("bias_grad_kernel", bias_grad_kernel, dim3(static_cast<unsigned>(channels)), dim3(kBlock), stream, dy,
              dbias, outer, channels, inner, accumulate);
}

}  // namespace cudl::cuda_detail
