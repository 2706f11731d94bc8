#include "engine/cuda/cuda_runtime.hpp"
#include "kernels/cuda/launch.hpp"

namespace cudl::cuda_detail {

void check_launch(const char* kernel_name) { CUDL_CUDA_CHECK(cudaGetLastError(), "kernel {}", kernel_name); }

}  // namespace cudl::cuda_detail
