// Device queries of a build without the CUDA backend (CUDL_CUDA=OFF or CUDA not found).
#include "cudl/engine/device.hpp"

namespace cudl {

int cuda_device_count() { return 0; }
bool cuda_compiled() { return false; }
std::vector<CudaDeviceInfo> cuda_devices() { return {}; }
std::optional<CudaDeviceInfo> cuda_device(int /*index*/) { return std::nullopt; }

BuildInfo build_info() {
  BuildInfo info;
  info.cudl_version = CUDL_VERSION;
  info.blas = CUDL_CPU_BLAS;
  info.backends = {"cpu"};
  return info;
}

}  // namespace cudl
