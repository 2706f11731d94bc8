#include "cudl/engine/cuda/cuda_runtime.hpp"
#include "cudl/kernels/cuda/launch.hpp"

namespace cudl::cuda_detail {

// cudaGetLastError also returns the sticky error of an earlier kernel that faulted while running,
// so without CUDL_SYNC_CHECK=1 a fault may be reported at a later launch than its own; with it,
// every launch is followed by a device sync that names this kernel.
void check_launch(const char* kernel_name) {
  CUDL_CUDA_CHECK(cudaGetLastError(), "kernel {}", kernel_name);
  sync_check(kernel_name, __FILE__, __LINE__);
}

// Runtime calls made inside .cu files, through CUDL_STATUS_CHECK (with the same CUDL_SYNC_CHECK
// treatment as a launch).
void check_status(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) [[unlikely]]
    throw_cuda(status, call, file, line, std::string());
  sync_check(call, file, line);
}

}  // namespace cudl::cuda_detail
