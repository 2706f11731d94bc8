#pragma once
// Inference-time fusion of Conv2d -> BatchNorm2d (-> Add) (-> ReLU) into one op,
// Backend::conv2d_bn_forward: in inference batch norm is a per-channel y = x * scale + shift, which
// oneDNN applies (with the residual Add and the ReLU) to each output value before it is stored, so
// ResNet's 53 batch norms, 16 Adds and most ReLUs stop being separate passes over memory.
// Training never fuses these (batch norm then normalises with batch statistics); Sequential plans
// them only when forward runs with train=false and Context::fuse_layers is on (--fuse).
// Kept apart from fusion.hpp (Conv2d + ReLU pairs) so that each fusion's pattern stays one file.
#include <cstddef>
#include <vector>

#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/normalization.hpp"

namespace cudl {

// One fused chain, by layer index. The Add's other input (the residual) is produced before the
// Conv2d runs (an earlier layer, or the network's input), so the one op has everything it reads.
struct ConvBnChain {
  static constexpr int kNone = -2;   // no such member
  static constexpr int kInput = -1;  // the residual is the network's input
  int conv = 0, bn = 0;
  int add = kNone, relu = kNone;
  int residual = kNone;  // the producer of the Add's other input (kInput: the network's input)
  int add_slot = 0;      // which of the Add's inputs is the chain's (0 or 1)
  int tail() const { return relu != kNone ? relu : add != kNone ? add : bn; }
};

struct ConvBnPlan {
  std::vector<ConvBnChain> chains;
  std::vector<int> chain_of;  // per layer: the index of the chain it belongs to, or -1
};

// The chains in a network given per layer: the layer, its producers (-1: the network's input) and
// whether it is tapped. A Conv2d whose only reader is a BatchNorm2d reading only it; then an Add
// of two inputs whose other one is ready before the Conv2d; then a ReLU reading only the chain.
// Every member but the last has one reader and no tap (its own output is never materialised).
ConvBnPlan plan_conv_bn(const std::vector<const Layer*>& layers, const std::vector<std::vector<int>>& producers,
                        const std::vector<bool>& tapped);

// The chain's output: conv (with Conv2d::forward's autocast rules), bn with its running statistics,
// + residual when defined, ReLU when `relu`. A residual of another dtype than the convolution's
// output is added as Add would (both in f32), after the fused conv + bn.
Tensor conv_bn_forward(Context& ctx, Conv2d& conv, const BatchNorm2d& bn, const Tensor& x, const Tensor& residual,
                       bool relu);

}  // namespace cudl
