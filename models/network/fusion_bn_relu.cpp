#include "cudl/models/network/fusion_bn_relu.hpp"

namespace cudl {

bool fusible_bn_relu(const Layer& bn, const Layer& next) {
  const auto* b = dynamic_cast<const BatchNorm2d*>(&bn);
  const auto* a = dynamic_cast<const ActivationLayer*>(&next);
  return b != nullptr && !b->frozen() && a != nullptr && a->kind() == Activation::relu;
}

bool fusible_relu_pair(const Layer& first, const Layer& next, bool train) {
  return fusible_pair(first, next) || (train && fusible_bn_relu(first, next));
}

Tensor relu_pair_forward(Context& ctx, Layer& first, const Tensor& x, bool train, FusedConvRelu& saved) {
  auto* bn = dynamic_cast<BatchNorm2d*>(&first);
  if (bn == nullptr) return fused_pair_forward(ctx, first, x, train, saved);
  // Planned in training only (fusible_relu_pair); an inference forward never reaches this.
  CUDL_CHECK(train, "BatchNorm2d + ReLU fusion: a training-only pair was planned for an inference forward");
  return bn->forward_relu(ctx, x);
}

Tensor relu_pair_first_backward(Context& ctx, Layer& first, FusedConvRelu& saved, const Tensor& dy) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&first)) return bn->backward_relu(ctx, dy);
  return fused_pair_backward(ctx, first, saved, dy);
}

Tensor relu_pair_relu_backward(Context& ctx, const Layer& first, FusedConvRelu& saved, const Tensor& dy) {
  if (dynamic_cast<const BatchNorm2d*>(&first) != nullptr) return dy;  // the batch norm's backward masks it
  return fused_relu_backward(ctx, saved, dy);
}

const char* relu_pair_op(const Layer& first) {
  if (dynamic_cast<const BatchNorm2d*>(&first) != nullptr) return "batchnorm_relu_forward_train";
  if (dynamic_cast<const Linear*>(&first) != nullptr) return "linear_bias_relu_forward";
  return "conv2d_bias_relu_forward";
}

}  // namespace cudl
