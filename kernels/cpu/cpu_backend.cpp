#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

std::string_view CpuBackend::name() const { return "cpu"; }

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace cudl
