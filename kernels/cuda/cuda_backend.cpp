#include "cudl/kernels/cuda/cuda_backend.hpp"

namespace cudl {

std::string_view CudaBackend::name() const { return "cuda"; }

Backend& cuda_backend() {
  static CudaBackend backend;
  return backend;
}

}  // namespace cudl
