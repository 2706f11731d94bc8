#pragma once
// Layer fusion for Sequential: a Conv2d whose only reader is a ReLU runs as one op,
// Backend::conv2d_bias_relu_forward, so its output is written once instead of three times
// (convolution, bias, ReLU). Training works too: ReLU's backward needs only its output, which the
// fused op produces (y > 0 exactly where the convolution's output was), and the convolution's
// backward then takes the masked gradient. Context::fuse_layers switches it (--fuse).
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"

namespace cudl {

// Whether `conv` followed by `next` may run fused, as far as the two layers go (the network
// checks the wiring: next reads only conv, nothing else reads conv, conv is not tapped): a Conv2d
// with an ordinary dense weight [K, C, R, S], then a plain ReLU (the activation the backends fuse).
bool fusible_conv_relu(const Layer& conv, const Layer& next);

// What a fused pair keeps for backward: the convolution's input in its compute dtype and the
// ReLU's output (both only when training), and the dtype the input came in.
struct FusedConvRelu {
  Tensor x, y;
  DType input_dtype = DType::f32;
};

// conv then ReLU in one op, with Conv2d::forward's autocast rules; returns the ReLU's output.
Tensor fused_conv_relu_forward(Context& ctx, Conv2d& conv, const Tensor& x, bool train, FusedConvRelu& saved);
// The ReLU's backward from the saved output: dy where y > 0, else 0.
Tensor fused_relu_backward(Context& ctx, FusedConvRelu& saved, const Tensor& dy);
// The convolution's backward from the masked gradient, as Conv2d::backward: parameter gradients
// accumulated unless conv is frozen, the input gradient when conv.input_grad(). Drops `saved`.
Tensor fused_conv_backward(Context& ctx, Conv2d& conv, FusedConvRelu& saved, const Tensor& dy);

}  // namespace cudl
