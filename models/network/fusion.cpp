#include "cudl/models/network/fusion.hpp"

#include "cudl/layers/autocast.hpp"

namespace cudl {

bool fusible_conv_relu(const Layer& conv, const Layer& next) {
  const auto* c = dynamic_cast<const Conv2d*>(&conv);
  const auto* a = dynamic_cast<const ActivationLayer*>(&next);
  if (c == nullptr || a == nullptr || a->kind() != Activation::relu) return false;
  // Grouped convolutions run unfused: the fused op takes dense weights only (Backend checks it).
  return c->params().groups == 1;
}

Tensor fused_conv_relu_forward(Context& ctx, Conv2d& conv, const Tensor& x, bool train, FusedConvRelu& saved) {
  const Tensor xc = autocast::input(ctx, x);
  Tensor y = Tensor::empty(conv.output_shape(x.shape()), ctx, xc.dtype(), ctx.conv_output_format(xc.dtype()));
  const Tensor bias = conv.has_bias() ? conv.bias().value : Tensor();
  ctx.backend().conv2d_bias_relu_forward(ctx, xc, autocast::weight(ctx, conv.weight(), xc.dtype()), bias, conv.params(),
                                         y);
  // Inference keeps nothing alive, as the unfused layers.
  saved.x = train ? xc : Tensor();
  saved.y = train ? y : Tensor();
  saved.input_dtype = x.dtype();
  return y;
}

Tensor fused_relu_backward(Context& ctx, FusedConvRelu& saved, const Tensor& dy) {
  CUDL_CHECK(saved.y.defined(),
             "ReLU::backward (fused with its Conv2d or Linear): no saved output (forward was not run with "
             "train=true)");
  Tensor dx = Tensor::empty_like(dy, ctx);
  // The backend reads x for ReLU; y > 0 exactly where x > 0, so the output stands in for it.
  ctx.backend().activation_backward(ctx, Activation::relu, 0.0f, saved.y, saved.y, dy, dx);
  saved.y = Tensor();
  return dx;
}

Tensor fused_conv_backward(Context& ctx, Conv2d& conv, FusedConvRelu& saved, const Tensor& dy) {
  CUDL_CHECK(saved.x.defined(),
             "Conv2d::backward (fused with its ReLU): no saved input (forward was not run with "
             "train=true)");
  const Tensor dyc = dy.cast(ctx, saved.x.dtype());
  if (!conv.frozen()) {
    // The gradients accumulate in the f32 master gradient block whatever the compute dtype.
    ctx.backend().conv2d_backward_filter(ctx, saved.x, dyc, conv.params(), conv.weight().grad, true);
    if (conv.has_bias()) ctx.backend().bias_grad(ctx, dyc, conv.bias().grad, true);
  }
  Tensor dx;
  if (conv.input_grad()) {
    dx = Tensor::empty_like(saved.x, ctx);
    ctx.backend().conv2d_backward_data(ctx, dyc, autocast::weight(ctx, conv.weight(), saved.x.dtype()), conv.params(),
                                       dx);
    dx = dx.cast(ctx, saved.input_dtype);
  }
  saved.x = Tensor();
  return dx;
}

}  // namespace cudl
