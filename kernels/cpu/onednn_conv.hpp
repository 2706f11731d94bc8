#pragma once
// 2-D convolutions on the CPU through oneDNN (forward, backward-data, backward-filter), used by
// kernels/cpu/conv.cpp when cudl is built with oneDNN (CUDL_ONEDNN) and the context's CPU
// convolution policy (Context::cpu_conv) is not im2col. Primitives are created once per shape and cached, like the
// cuDNN path's algorithms.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/cpu_policy.hpp"

namespace cudl::cpu {

// True when this build has oneDNN and `conv` is not CpuConv::im2col.
bool onednn_conv_enabled(CpuConv conv);

// Each returns false, having done nothing, for a geometry oneDNN cannot express as given (an
// output shape whose bottom/right padding would be a whole stride or more negative) or a dtype it has no native kernel
// for on this CPU (probed once: see half_path_description); the caller then runs im2col, widening halves to f32.
// ctx.cpu_conv() picks Winograd or the direct kernels; the caller has checked onednn_conv_enabled. The arguments are
// checked by the backend front and are non-empty.
bool onednn_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y);
// y = relu(conv(x, w) + bias) in one primitive (ReLU as an eltwise post-op, the bias inside it;
// bias undefined: none; an f32 bias for half x and w). Halves as onednn_conv2d_forward: false where
// this CPU has no native kernel, and the caller composes the unfused ops.
bool onednn_conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                     const Conv2dParams& p, Tensor& y);
// y = [relu](conv(x, w) * scale + shift [+ residual]) in one primitive, scale and shift [K] f32
// per output channel (batch norm folded, any conv bias inside shift), the residual NCHW like y or
// undefined. f32 and dense weights only; false also when oneDNN has only a reference or gemm
// kernel for it, where the unfused ops are faster (the caller composes them).
bool onednn_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const float* scale, const float* shift,
                              const Conv2dParams& p, const Tensor& residual, bool relu, Tensor& y);
bool onednn_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx);
bool onednn_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                   bool accumulate);

// Registers [data, data + bytes) as constant until the returned hold is dropped: convolutions
// then reorder weights that lie in it into their primitive's layout once, and keep the copy
// (Backend::hold_constant). Null when oneDNN is not in use for `conv`.
std::shared_ptr<void> hold_constant_weights(CpuConv conv, const void* data, std::size_t bytes);

// "oneDNN 2.6.3 (ISA avx512_core_bf16); CPU convolutions: ..." under `conv`, or "not built in" - for
// `cudl info`.
std::string onednn_description(CpuConv conv);

// C = alpha op(A) op(B) + beta C with A and B half (one dtype) and C f32 or their dtype, row-major
// with explicit leading dimensions, through oneDNN's matmul: products accumulate in f32 and a half
// C is rounded once. Returns false, having done nothing, when this build or CPU has no native
// kernel for the dtype or `gemm` is CpuGemm::openblas (the caller widens to f32). m, n, k > 0.
bool onednn_half_gemm(CpuGemm gemm, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                      float alpha, DType ab, const void* a, std::int64_t lda, const void* b, std::int64_t ldb,
                      float beta, DType ct, void* c, std::int64_t ldc);
// The same for 2-D tensors (Backend::gemm's arguments).
bool onednn_half_gemm(CpuGemm gemm, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                      float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c);
// The implementation oneDNN's matmul picks for `t` here (e.g. "brg:avx512_core_amx"); empty when
// the GEMMs of `t` are widened to f32 (no kernel, or `gemm` is CpuGemm::openblas).
std::string onednn_matmul_impl(DType t, CpuGemm gemm);

// One line on how the CPU backend runs `t` (bf16 or f16) under `policy`, probed at run time, for
// `cudl info`:
// "bf16: convolutions oneDNN brg:avx512_core_amx; GEMM oneDNN matmul brg:avx512_core_amx; ..." or
// "f16: convolutions widened to f32 (oneDNN 2.6 has no f16 CPU convolution for ISA ...); ...".
std::string half_path_description(DType t, CpuPolicy policy);
// Whether convolutions of `t` (bf16 or f16) run on native oneDNN half kernels here under `conv`.
bool half_native(DType t, CpuConv conv);

}  // namespace cudl::cpu
