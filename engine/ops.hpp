#pragma once
// Composite ops built only from Backend calls, so they run on every backend unchanged.
#include "cudl/engine/backend.hpp"

namespace cudl {

// ---- transposed convolution (PyTorch's ConvTranspose2d, groups=1, no bias) ----
// x [N, C_in, H, W], w [C_in, C_out, R, S] (PyTorch's layout for the transposed weight),
// y [N, C_out, Ho, Wo] with Ho = (H-1)*stride_h - 2*pad_h + dilation_h*(R-1) + output_padding_h + 1.
// It is the adjoint of conv2d with the same weight and params: the forward pass is conv2d's data
// gradient, its data gradient is conv2d's forward pass. output_padding must be below the stride
// (it only picks among the input sizes that conv2d maps onto H).
Shape conv_transpose2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p, int output_padding_h = 0,
                                    int output_padding_w = 0);
// y is preallocated; its shape fixes the output padding.
void conv_transpose2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y);
// dx [N, C_in, H, W] from dy [N, C_out, Ho, Wo].
void conv_transpose2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx);
// dw [C_in, C_out, R, S] (+)= the weight gradient.
void conv_transpose2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p,
                                      Tensor& dw, bool accumulate);

}  // namespace cudl
