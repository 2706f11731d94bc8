// cpu_half_support (engine/device.hpp): which half-precision paths the CPU backend has here, from
// the oneDNN probes of kernels/cpu/onednn_conv.cpp.
#include "cudl/engine/device.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"

namespace cudl {

CpuHalfSupport cpu_half_support() {
  static const CpuHalfSupport support = [] {
    CpuHalfSupport s;
    s.bf16_native = cpu::half_native(DType::bf16);
    s.f16_native = cpu::half_native(DType::f16);
    s.bf16 = cpu::half_path_description(DType::bf16);
    s.f16 = cpu::half_path_description(DType::f16);
    return s;
  }();
  return support;
}

}  // namespace cudl
