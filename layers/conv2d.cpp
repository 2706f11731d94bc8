#include "cudl/layers/conv2d.hpp"

#include <fmt/format.h>

#include "cudl/engine/error.hpp"
#include "cudl/engine/ops.hpp"
#include "cudl/layers/autocast.hpp"
#include "cudl/layers/init.hpp"

namespace cudl {

namespace {
std::string conv_args(const Conv2dParams& p) {
  std::string s;
  if (p.stride_h != 1 || p.stride_w != 1) s += fmt::format(", stride={}", p.stride_h);
  if (p.pad_h != 0 || p.pad_w != 0) s += fmt::format(", padding={}", p.pad_h);
  if (p.dilation_h != 1 || p.dilation_w != 1) s += fmt::format(", dilation={}", p.dilation_h);
  if (p.groups != 1) s += fmt::format(", groups={}", p.groups);
  return s;
}
}  // namespace

Conv2d::Conv2d(std::int64_t in_channels, std::int64_t out_channels, int kernel_size, Conv2dParams params, bool bias,
               InitScheme init)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      params_(params),
      has_bias_(bias),
      init_(init) {
  CUDL_CHECK(params.groups >= 1 && in_channels % params.groups == 0 && out_channels % params.groups == 0,
             "Conv2d({}, {}, kernel_size={}): groups={} must be at least 1 and divide both in_channels ({}) and "
             "out_channels ({})",
             in_channels, out_channels, kernel_size, params.groups, in_channels, out_channels);
  weight_ = {"weight", Shape{out_channels, in_channels / params.groups, kernel_size, kernel_size}, {}, {}, true, {}};
  bias_ = {"bias", Shape{out_channels}, {}, {}, true, {}};
}

std::string Conv2d::describe() const {
  return fmt::format("Conv2d({}, {}, kernel_size={}{}{})", in_channels_, out_channels_, kernel_size_,
                     conv_args(params_), has_bias_ ? "" : ", bias=False");
}

Shape Conv2d::output_shape(const Shape& input) const { return conv2d_output_shape(input, weight_.shape, params_); }

std::vector<Parameter*> Conv2d::parameters() {
  if (has_bias_) return {&weight_, &bias_};
  return {&weight_};
}

void Conv2d::initialize(Context& ctx, std::uint64_t seed) {
  // PyTorch's fans read the weight's dims: fan_in = C/G * R * S (dim 1), fan_out = K * R * S (dim 0).
  const std::int64_t fan_in = in_channels_ / params_.groups * kernel_size_ * kernel_size_;
  const std::int64_t fan_out = out_channels_ * kernel_size_ * kernel_size_;
  if (init_ == InitScheme::vgg) {
    init::kaiming_normal_fan_out(ctx, weight_.value, fan_out, init::derive_seed(seed, 0));
    if (has_bias_) ctx.backend().fill(ctx, bias_.value, 0.0f);
  } else {
    init::pytorch_uniform(ctx, weight_.value, fan_in, init::derive_seed(seed, 0));
    if (has_bias_) init::pytorch_uniform(ctx, bias_.value, fan_in, init::derive_seed(seed, 1));
  }
}

Tensor Conv2d::forward(Context& ctx, const Tensor& x, bool train) {
  const Tensor xc = autocast::input(ctx, x);
  Tensor y = Tensor::empty(output_shape(x.shape()), ctx, xc.dtype(), ctx.conv_output_format(xc.dtype()));
  ctx.backend().conv2d_forward(ctx, xc, autocast::weight(ctx, weight_, xc.dtype()), params_, y);
  if (has_bias_) ctx.backend().bias_add(ctx, y, bias_.value);
  // Inference keeps nothing alive, so activations are released as soon as the next layer is done.
  x_ = train ? xc : Tensor();
  input_dtype_ = x.dtype();
  return y;
}

Tensor Conv2d::backward(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(x_.defined(), "Conv2d::backward: no saved input (forward was not run with train=true)");
  const Tensor dyc = dy.cast(ctx, x_.dtype());
  if (!frozen_) {
    // The gradients accumulate in the f32 master gradient block whatever the compute dtype.
    ctx.backend().conv2d_backward_filter(ctx, x_, dyc, params_, weight_.grad, true);
    if (has_bias_) ctx.backend().bias_grad(ctx, dyc, bias_.grad, true);
  }
  Tensor dx;
  if (input_grad_) {
    dx = Tensor::empty_like(x_, ctx);
    ctx.backend().conv2d_backward_data(ctx, dyc, autocast::weight(ctx, weight_, x_.dtype()), params_, dx);
    dx = dx.cast(ctx, input_dtype_);
  }
  x_ = Tensor();
  return dx;
}

ConvTranspose2d::ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels, int kernel_size,
                                 Conv2dParams params, int output_padding, bool bias)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      params_(params),
      output_padding_(output_padding),
      has_bias_(bias) {
  CUDL_CHECK(params.groups == 1, "ConvTranspose2d({}, {}, kernel_size={}): groups={} is not supported, only groups=1",
             in_channels, out_channels, kernel_size, params.groups);
  weight_ = {"weight", Shape{in_channels, out_channels, kernel_size, kernel_size}, {}, {}, true, {}};
  bias_ = {"bias", Shape{out_channels}, {}, {}, true, {}};
}

std::string ConvTranspose2d::describe() const {
  return fmt::format("ConvTranspose2d({}, {}, kernel_size={}{}{}{})", in_channels_, out_channels_, kernel_size_,
                     conv_args(params_), output_padding_ ? fmt::format(", output_padding={}", output_padding_) : "",
                     has_bias_ ? "" : ", bias=False");
}

Shape ConvTranspose2d::output_shape(const Shape& input) const {
  return conv_transpose2d_output_shape(input, weight_.shape, params_, output_padding_, output_padding_);
}

std::vector<Parameter*> ConvTranspose2d::parameters() {
  if (has_bias_) return {&weight_, &bias_};
  return {&weight_};
}

void ConvTranspose2d::initialize(Context& ctx, std::uint64_t seed) {
  // PyTorch computes the transposed weight's fan_in from its dim 1 (out_channels) * kernel area.
  const std::int64_t fan_in = out_channels_ * kernel_size_ * kernel_size_;
  init::pytorch_uniform(ctx, weight_.value, fan_in, init::derive_seed(seed, 0));
  if (has_bias_) init::pytorch_uniform(ctx, bias_.value, fan_in, init::derive_seed(seed, 1));
}

Tensor ConvTranspose2d::forward(Context& ctx, const Tensor& x, bool train) {
  const Tensor xc = autocast::input(ctx, x);
  Tensor y = Tensor::empty(output_shape(x.shape()), ctx, xc.dtype(), ctx.conv_output_format(xc.dtype()));
  conv_transpose2d_forward(ctx, xc, autocast::weight(ctx, weight_, xc.dtype()), params_, y);
  if (has_bias_) ctx.backend().bias_add(ctx, y, bias_.value);
  x_ = train ? xc : Tensor();
  input_dtype_ = x.dtype();
  return y;
}

Tensor ConvTranspose2d::backward(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(x_.defined(), "ConvTranspose2d::backward: no saved input (forward was not run with train=true)");
  const Tensor dyc = dy.cast(ctx, x_.dtype());
  if (!frozen_) {
    conv_transpose2d_backward_filter(ctx, x_, dyc, params_, weight_.grad, true);
    if (has_bias_) ctx.backend().bias_grad(ctx, dyc, bias_.grad, true);
  }
  Tensor dx;
  if (input_grad_) {
    dx = Tensor::empty_like(x_, ctx);
    conv_transpose2d_backward_data(ctx, dyc, autocast::weight(ctx, weight_, x_.dtype()), params_, dx);
    dx = dx.cast(ctx, input_dtype_);
  }
  x_ = Tensor();
  return dx;
}

}  // namespace cudl
