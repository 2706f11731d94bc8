// cpu_half_support (engine/device.hpp): which half-precision paths the CPU backend has here.
#include "cudl/engine/device.hpp"

namespace cudl {

CpuHalfSupport cpu_half_support() {
  CpuHalfSupport s;
  s.bf16 = "widened to f32 (correct, not faster)";
  s.f16 = "widened to f32 (correct, not faster)";
  return s;
}

}  // namespace cudl
