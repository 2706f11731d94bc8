#pragma once
// Linear + bias + ReLU on the CPU as one oneDNN matmul primitive (the bias inside it, ReLU as an
// eltwise post-op), used by kernels/cpu/linear_fused.cpp. Kept apart from onednn_matmul.cpp (the
// plain half GEMMs) because its primitives differ in what they are keyed by and what they compute.
#include "cudl/engine/cpu_policy.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl::cpu {

// y = relu(x wᵀ + bias): x [N, in], w [out, in], y [N, out] one dtype (f32, bf16 or f16), bias
// [out] f32 or undefined. Products accumulate in f32 and y is rounded once. Returns false, having
// done nothing, when this build has no oneDNN, `gemm` is CpuGemm::openblas, x has fewer than 8 rows
// (a matrix-vector product, faster unfused) or oneDNN has only its reference kernel for the dtype
// here (slower than the unfused ops); the caller then composes the unfused ops. The arguments are checked by the
// backend front and are non-empty (N, in, out > 0).
bool onednn_linear_bias_relu(CpuGemm gemm, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);

}  // namespace cudl::cpu
