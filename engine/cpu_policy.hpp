#pragma once
// How the CPU backend runs convolutions and GEMMs. A setting of each Context (Context::cpu_conv,
// Context::cpu_gemm) rather than a process-wide switch, so that one program can run the paths side
// by side (a benchmark, a test comparing them). The defaults are the fastest paths here;
// CUDL_CPU_CONV and CUDL_CPU_GEMM may change the default of the Contexts created after them, which
// is how a whole CLI run is benchmarked on another path.
#include <string_view>

namespace cudl {

// fastest: oneDNN, Winograd F(4x4,3x3) where it pays (its rounding is about 2.7x the direct
// kernels'). direct: oneDNN's direct kernels only. im2col: im2col + OpenBLAS, what a build
// without oneDNN always runs.
enum class CpuConv { fastest, direct, im2col };
// onednn: oneDNN's sgemm and matmul, threaded by the OpenMP pool every other CPU op uses.
// openblas: OpenBLAS, whose own thread pool fights that one. A build without oneDNN runs OpenBLAS
// whatever this says.
enum class CpuGemm { onednn, openblas };

struct CpuPolicy {
  CpuConv conv = CpuConv::fastest;
  CpuGemm gemm = CpuGemm::onednn;
};

std::string_view cpu_conv_name(CpuConv c);  // "fastest", "direct", "im2col"
std::string_view cpu_gemm_name(CpuGemm g);  // "onednn", "openblas"
// The names above; anything else is an Error naming `what` (a variable, an option) and the choices.
CpuConv parse_cpu_conv(std::string_view name, std::string_view what = "CPU convolution policy");
CpuGemm parse_cpu_gemm(std::string_view name, std::string_view what = "CPU GEMM policy");

// The policy a new Context starts with: CUDL_CPU_CONV and CUDL_CPU_GEMM, read on each call (unset
// or empty: the fastest paths). A value outside the choices throws naming the variable.
CpuPolicy cpu_policy_from_environment();

}  // namespace cudl
