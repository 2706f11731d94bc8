#include "engine/cuda/cuda_runtime.hpp"
#include "kernels/cuda/launch.hpp"

namespace cudl::cuda_detail {

void check_launch(const char* kernel_name) { CUDL_CUDA_CHECK(cudaGetLastError(), "kernel {}", kernel_name); }

void check_status(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) [[unlikely]]
    throw_cuda(status, call, file, line, std::string());
}

}  // namespace cudl::cuda_detail
