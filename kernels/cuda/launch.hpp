#pragma once
// Launchers of our own CUDA kernels, over raw pointers and sizes. This header and the .cu files
// include no fmt (its consteval format strings do not compile under nvcc): shape checks and
// messages live in the CudaBackend methods (kernels/cuda/*_ops.cpp), which call these.
#include <cstdint>

#include <cuda_runtime_api.h>

namespace cudl::cuda_detail {

// Throws cudl::Error naming the kernel if its launch failed (bad configuration, no device...).
// Defined in kernels/cuda/launch_check.cpp; every launcher calls it right after <<<...>>>.
void check_launch(const char* kernel_name);

// Grid size for n elements at `block` threads each, capped so grid-stride loops cover the rest.
inline unsigned grid_for(std::int64_t n, unsigned block = 256) {
  std::int64_t blocks = (n + block - 1) / block;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535LL * 16) blocks = 65535LL * 16;
  return static_cast<unsigned>(blocks);
}

}  // namespace cudl::cuda_detail
