#pragma once
// A one-input-channel forward convolution into a channels_last output (kernels/cpu/
// conv_one_channel.cpp), fused with the bias and a ReLU when asked.
#include "cudl/engine/backend.hpp"

namespace cudl::cpu {

// y = [relu](conv2d(x, w) [+ bias]) when x has one channel, the convolution is dense and y is
// channels_last (x, w, y one float dtype; bias [K] f32 or undefined); false, untouched, otherwise.
bool one_channel_conv_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p, bool relu,
                              Tensor& y);

}  // namespace cudl::cpu
