#pragma once
// 2-D convolutions on the CPU through oneDNN (forward, backward-data, backward-filter), used by
// kernels/cpu/conv.cpp when cudl is built with oneDNN (CUDL_ONEDNN) and CUDL_CPU_CONV is not
// "im2col". Primitives are created once per shape and cached, like the cuDNN path's algorithms.
#include <cstddef>
#include <memory>
#include <string>

#include "cudl/engine/backend.hpp"

namespace cudl::cpu {

// True when this build has oneDNN and CUDL_CPU_CONV (read once) does not ask for "im2col".
bool onednn_conv_enabled();

// Each returns false, having done nothing, for a geometry oneDNN cannot express as given (an
// output shape that needs negative bottom/right padding); the caller then runs im2col. The
// arguments are checked by the backend front and are non-empty.
bool onednn_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y);
bool onednn_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx);
bool onednn_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                   bool accumulate);

// Registers [data, data + bytes) as constant until the returned hold is dropped: convolutions
// then reorder weights that lie in it into their primitive's layout once, and keep the copy
// (Backend::hold_constant). Null when oneDNN is not in use.
std::shared_ptr<void> hold_constant_weights(const void* data, std::size_t bytes);

// "oneDNN 2.6.3 (ISA avx512_core_bf16), CPU conv: onednn" or "not built in" - for `cudl info`.
std::string onednn_description();

}  // namespace cudl::cpu
