// The CUB side of the bench's peer rows (kernels/cuda/peers.hpp). CUB's headers stay in this file
// and kernels/cuda/topk.cu.
#include <cstdint>
#include <cub/device/device_reduce.cuh>

#include "cudl/kernels/cuda/launch.hpp"

namespace cudl::cuda_detail {

std::size_t cub_sum_scratch_bytes(std::int64_t n) {
  std::size_t bytes = 0;
  CUDL_STATUS_CHECK(
      cub::DeviceReduce::Sum(nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr), n));
  return bytes;
}

void launch_cub_sum(const float* x, std::int64_t n, float* out, void* scratch, std::size_t scratch_bytes,
                    cudaStream_t stream) {
  CUDL_STATUS_CHECK(cub::DeviceReduce::Sum(scratch, scratch_bytes, x, out, n, stream));
}

}  // namespace cudl::cuda_detail
