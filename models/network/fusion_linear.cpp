#include "cudl/models/network/fusion_linear.hpp"

#include "cudl/layers/autocast.hpp"

namespace cudl {

bool fusible_linear_relu(const Layer& linear, const Layer& next) {
  const auto* a = dynamic_cast<const ActivationLayer*>(&next);
  return dynamic_cast<const Linear*>(&linear) != nullptr && a != nullptr && a->kind() == Activation::relu;
}

Tensor fused_linear_relu_forward(Context& ctx, Linear& linear, const Tensor& x, bool train, FusedConvRelu& saved) {
  const Tensor xc = autocast::input(ctx, x);
  Tensor y = Tensor::empty(linear.output_shape(x.shape()), ctx, xc.dtype());
  const Tensor bias = linear.has_bias() ? linear.bias().value : Tensor();
  ctx.backend().linear_bias_relu_forward(ctx, xc, autocast::weight(ctx, linear.weight(), xc.dtype()), bias, y);
  // Inference keeps nothing alive, as the unfused layers.
  saved.x = train ? xc : Tensor();
  saved.y = train ? y : Tensor();
  saved.input_dtype = x.dtype();
  return y;
}

Tensor fused_linear_backward(Context& ctx, Linear& linear, FusedConvRelu& saved, const Tensor& dy) {
  CUDL_CHECK(saved.x.defined(),
             "Linear::backward (fused with its ReLU): no saved input (forward was not run with train=true)");
  const Tensor dyc = dy.cast(ctx, saved.x.dtype());
  if (!linear.frozen()) {
    // dW += dyᵀ x, accumulated in the f32 master gradient whatever the compute dtype.
    ctx.backend().gemm(ctx, true, false, 1.0f, dyc, saved.x, 1.0f, linear.weight().grad);
    if (linear.has_bias()) ctx.backend().bias_grad(ctx, dyc, linear.bias().grad, true);
  }
  Tensor dx;
  if (linear.input_grad()) {
    dx = Tensor::empty(saved.x.shape(), ctx, saved.x.dtype());
    ctx.backend().gemm(ctx, false, false, 1.0f, dyc, autocast::weight(ctx, linear.weight(), saved.x.dtype()), 0.0f,
                       dx);  // dy W
    dx = dx.cast(ctx, saved.input_dtype);
  }
  saved.x = Tensor();
  return dx;
}

bool fusible_pair(const Layer& first, const Layer& next) {
  return fusible_conv_relu(first, next) || fusible_linear_relu(first, next);
}

Tensor fused_pair_forward(Context& ctx, Layer& first, const Tensor& x, bool train, FusedConvRelu& saved) {
  if (auto* linear = dynamic_cast<Linear*>(&first)) return fused_linear_relu_forward(ctx, *linear, x, train, saved);
  return fused_conv_relu_forward(ctx, dynamic_cast<Conv2d&>(first), x, train, saved);
}

Tensor fused_pair_backward(Context& ctx, Layer& first, FusedConvRelu& saved, const Tensor& dy) {
  if (auto* linear = dynamic_cast<Linear*>(&first)) return fused_linear_backward(ctx, *linear, saved, dy);
  return fused_conv_backward(ctx, dynamic_cast<Conv2d&>(first), saved, dy);
}

}  // namespace cudl
