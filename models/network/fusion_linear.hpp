#pragma once
// Layer fusion for Sequential, the Linear half: a Linear whose only reader is a ReLU runs as one
// op, Backend::linear_bias_relu_forward (a oneDNN matmul with a ReLU post-op on the CPU, a
// cuBLASLt RELU_BIAS epilogue on CUDA), so its output is written once instead of three times
// (GEMM, bias, ReLU). Training works as for the convolution (models/network/fusion.hpp): ReLU's
// backward reads only the fused output, and the Linear's backward takes the masked gradient.
// Context::fuse_layers switches it (--fuse). Kept apart from fusion.cpp so that each kind of
// fused pair is its own small file.
#include "cudl/layers/linear.hpp"
#include "cudl/models/network/fusion.hpp"

namespace cudl {

// Whether `linear` followed by `next` may run fused, as far as the two layers go (the network
// checks the wiring, as for fusible_conv_relu): a Linear, then a plain ReLU.
bool fusible_linear_relu(const Layer& linear, const Layer& next);

// The pair keeps what a fused convolution keeps (FusedConvRelu: the input in its compute dtype and
// the ReLU's output, both only when training, and the input's dtype); its ReLU's backward is
// fused_relu_backward.
// linear then ReLU in one op, with Linear::forward's autocast rules; returns the ReLU's output.
Tensor fused_linear_relu_forward(Context& ctx, Linear& linear, const Tensor& x, bool train, FusedConvRelu& saved);
// The Linear's backward from the masked gradient, as Linear::backward: parameter gradients
// accumulated unless frozen, the input gradient when linear.input_grad(). Drops `saved`.
Tensor fused_linear_backward(Context& ctx, Linear& linear, FusedConvRelu& saved, const Tensor& dy);

// The network's dispatch over both kinds of fused pair (a Conv2d or a Linear, then its ReLU), so
// that Sequential names neither: whether `first` then `next` fuse, the pair's forward, and the
// backward of its first layer.
bool fusible_pair(const Layer& first, const Layer& next);
Tensor fused_pair_forward(Context& ctx, Layer& first, const Tensor& x, bool train, FusedConvRelu& saved);
Tensor fused_pair_backward(Context& ctx, Layer& first, FusedConvRelu& saved, const Tensor& dy);

}  // namespace cudl
