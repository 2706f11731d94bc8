#pragma once
// Training-time fusion of BatchNorm2d -> ReLU into one op pair, Backend::batchnorm_relu_forward_train
// and batchnorm_relu_backward: the ReLU's output is written once by the batch norm's apply pass, and
// its mask is applied inside the batch norm's backward, so neither direction makes a separate pass
// over the activation (ResNet has a ReLU after 17 of its 20 batch norms in ResNet-18). Inference
// fuses batch norm into the convolution before it instead (fusion_bn.hpp), so this pair is planned
// only when forward runs with train=true, Context::fuse_layers on (--fuse), and the batch norm is
// not frozen (a frozen one normalises with its running statistics even in training).
//
// Also Sequential's one entry to every kind of fused pair (this one, Conv2d + ReLU in fusion.hpp,
// Linear + ReLU in fusion_linear.hpp), so that the network names none of them.
#include "cudl/layers/normalization.hpp"
#include "cudl/models/network/fusion_linear.hpp"

namespace cudl {

// Whether `bn` followed by `next` may run fused in training, as far as the two layers go (the
// network checks the wiring, as for fusible_conv_relu): a BatchNorm2d that is not frozen, then a
// plain ReLU.
bool fusible_bn_relu(const Layer& bn, const Layer& next);

// Any fused pair: whether `first` then `next` fuse in a forward with this `train` (a batch norm only
// in training), the pair's forward (returns the ReLU's output), the first layer's backward from the
// gradient at the ReLU's output that relu_pair_backward returned, and the ReLU's own backward: the
// mask applied for a Conv2d or Linear; for a batch norm dy passes on as it is, its backward applies
// the mask. `saved` is the pair's state (a batch norm keeps its own).
bool fusible_relu_pair(const Layer& first, const Layer& next, bool train);
Tensor relu_pair_forward(Context& ctx, Layer& first, const Tensor& x, bool train, FusedConvRelu& saved);
Tensor relu_pair_first_backward(Context& ctx, Layer& first, FusedConvRelu& saved, const Tensor& dy);
Tensor relu_pair_relu_backward(Context& ctx, const Layer& first, FusedConvRelu& saved, const Tensor& dy);
// The fused op's name, for the profile's rows.
const char* relu_pair_op(const Layer& first);

}  // namespace cudl
