#pragma once
#include <fmt/format.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cudl {

enum class DeviceType { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  // "cpu", "cuda", "cuda:N" or "auto" (the first CUDA device when one is present, else the CPU).
  static Device parse(std::string_view text);

  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;
};

// Number of CUDA devices the runtime can see; 0 when the build has no CUDA backend, when no
// driver is installed, or when no GPU is present. Never throws.
int cuda_device_count();
bool cuda_compiled();

}  // namespace cudl

template <>
struct fmt::formatter<cudl::Device> : fmt::formatter<std::string> {
  auto format(const cudl::Device& d, format_context& ctx) const {
    return fmt::formatter<std::string>::format(d.str(), ctx);
  }
};

namespace cudl {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  std::size_t total_memory = 0;
  std::size_t free_memory = 0;
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
};

// Every CUDA device the runtime sees (empty without CUDA or a GPU). Never throws. Reading each
// one's free memory makes it current in turn, which (CUDA 12 on) creates its primary context: for
// listings (`cudl info`, bench's machine record), not for code that runs in every rank of a job.
std::vector<CudaDeviceInfo> cuda_devices();

// One device's entry, its free memory read with it current (it is the caller's own device: its
// context exists already); no other device is touched. Empty when there is no such device.
// Never throws. What engine code asks about the device a context runs on.
std::optional<CudaDeviceInfo> cuda_device(int index);

// Versions the binary was built against (and, for the runtime libraries, loaded): "13.0",
// "9.19.0"... Empty strings in a CPU-only build.
struct BuildInfo {
  std::string cudl_version;
  std::string cuda_runtime, cuda_driver, cudnn, cublas;
  std::string blas;  // the CPU GEMM library
  std::vector<std::string> backends;
};
BuildInfo build_info();

// What the CPU backend does with half precision on this machine (kernels/cpu): whether bf16 and
// f16 convolutions and GEMMs run on native half kernels (AMX, avx512_bf16, avx512_fp16 through
// oneDNN) or widen to f32 (correct, not faster), each with a line saying which; under the CPU
// policy a new Context starts with (cpu_policy_from_environment, engine/cpu_policy.hpp).
struct CpuHalfSupport {
  bool bf16_native = false, f16_native = false;
  std::string bf16, f16;
};
CpuHalfSupport cpu_half_support();
inline bool cpu_has_native_f16() { return cpu_half_support().f16_native; }

}  // namespace cudl
