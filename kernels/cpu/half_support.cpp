// cpu_half_support (engine/device.hpp): which half-precision paths the CPU backend has here, from
// the oneDNN probes of kernels/cpu/onednn_conv.cpp, under the policy a new Context starts with.
#include "cudl/engine/cpu_policy.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"

namespace cudl {

CpuHalfSupport cpu_half_support() {
  // The probes behind these are cached; the policy may differ from one call to the next.
  const CpuPolicy policy = cpu_policy_from_environment();
  CpuHalfSupport s;
  s.bf16_native = cpu::half_native(DType::bf16, policy.conv);
  s.f16_native = cpu::half_native(DType::f16, policy.conv);
  s.bf16 = cpu::half_path_description(DType::bf16, policy);
  s.f16 = cpu::half_path_description(DType::f16, policy);
  return s;
}

}  // namespace cudl
