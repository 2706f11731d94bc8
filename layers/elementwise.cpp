#include "cudl/layers/elementwise.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <span>

namespace cudl {

std::string ActivationLayer::type() const {
  switch (kind_) {
    case Activation::relu:
      return "ReLU";
    case Activation::leaky_relu:
      return "LeakyReLU";
    case Activation::sigmoid:
      return "Sigmoid";
    case Activation::tanh:
      return "Tanh";
    case Activation::relu6:
      return "ReLU6";
  }
  return "Activation";
}

std::string ActivationLayer::describe() const {
  return kind_ == Activation::leaky_relu ? fmt::format("LeakyReLU(negative_slope={})", alpha_) : type() + "()";
}

Tensor ActivationLayer::forward(Context& ctx, const Tensor& x, bool train) {
  Tensor y = Tensor::empty_like(x, ctx);
  ctx.backend().activation_forward(ctx, kind_, alpha_, x, y);
  // ReLU-like functions differentiate from x, sigmoid/tanh from y: keep only what backward reads.
  const bool needs_x = activation_grad_reads_x(kind_);
  x_ = train && needs_x ? x : Tensor();
  y_ = train && !needs_x ? y : Tensor();
  return y;
}

Tensor ActivationLayer::backward(Context& ctx, const Tensor& dy) {
  const Tensor& saved = x_.defined() ? x_ : y_;
  CUDL_CHECK(saved.defined(), "{}::backward: no saved activation (forward was not run with train=true)", type());
  Tensor dx = Tensor::empty_like(dy, ctx);
  // The backend reads x for ReLU-like functions and y for the others; pass the saved one as both.
  ctx.backend().activation_backward(ctx, kind_, alpha_, saved, saved, dy, dx);
  x_ = y_ = Tensor();
  return dx;
}

namespace {
Pool2dParams pool_params(int kernel_size, int stride, int padding) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = kernel_size;
  p.stride_h = p.stride_w = stride > 0 ? stride : kernel_size;  // PyTorch: stride defaults to the kernel
  p.pad_h = p.pad_w = padding;
  return p;
}
}  // namespace

Pool2dLayer::Pool2dLayer(int kernel_size, int stride, int padding)
    : params_(pool_params(kernel_size, stride, padding)) {}

std::string Pool2dLayer::describe() const {
  return fmt::format("{}(kernel_size={}, stride={}{})", type(), params_.kernel_h, params_.stride_h,
                     params_.pad_h ? fmt::format(", padding={}", params_.pad_h) : "");
}

Tensor MaxPool2d::forward(Context& ctx, const Tensor& x, bool train) {
  // y and argmax stored as x is: a channels_last x pools with no reorder.
  Shape out = output_shape(x.shape());
  Tensor y = Tensor::empty(out, ctx, x.dtype(), x.format());
  Tensor argmax = Tensor::empty(out, ctx, DType::i32, x.format());
  ctx.backend().maxpool2d_forward(ctx, x, params_, y, argmax);
  input_shape_ = x.shape();
  input_format_ = x.format();
  argmax_ = train ? argmax : Tensor();
  return y;
}

Tensor MaxPool2d::backward(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(argmax_.defined(), "MaxPool2d::backward: no saved argmax (forward was not run with train=true)");
  Tensor dx = Tensor::empty(input_shape_, ctx, dy.dtype(), input_format_);
  ctx.backend().maxpool2d_backward(ctx, dy, argmax_, params_, dx);
  argmax_ = Tensor();
  return dx;
}

Tensor AvgPool2d::forward(Context& ctx, const Tensor& x, bool /*train*/) {
  Tensor y = Tensor::empty(output_shape(x.shape()), ctx, x.dtype(), x.format());
  ctx.backend().avgpool2d_forward(ctx, x, params_, y);
  input_shape_ = x.shape();
  input_format_ = x.format();
  return y;
}

Tensor AvgPool2d::backward(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(input_shape_.rank() == 4, "AvgPool2d::backward: forward was not run");
  Tensor dx = Tensor::empty(input_shape_, ctx, dy.dtype(), input_format_);
  ctx.backend().avgpool2d_backward(ctx, dy, params_, dx);
  return dx;
}

std::string Dropout::describe() const { return fmt::format("Dropout(p={})", p_); }

void Dropout::initialize(Context& /*ctx*/, std::uint64_t seed) {
  seed_ = seed;
  set_counter(0);
}

Tensor Dropout::forward(Context& ctx, const Tensor& x, bool train) {
  if (!train || p_ == 0.0f) {
    mask_ = Tensor();
    return x;
  }
  Tensor y = Tensor::empty_like(x, ctx);
  mask_ = Tensor::empty_like(x, ctx);
  // On a data-parallel rank, this batch is some rows of a global batch: draw those rows' numbers
  // and advance past the whole global batch, as one process would.
  const std::int64_t per_row = x.rank() > 0 && x.dim(0) > 0 ? x.numel() / x.dim(0) : 0;
  const auto first = static_cast<std::uint64_t>(rows_.global > 0 ? rows_.begin * per_row : 0);
  const auto advance = static_cast<std::uint64_t>(rows_.global > 0 ? rows_.global * per_row : x.numel());
  if (!counter_on_device_ || device_counter_.device() != ctx.device()) {
    const std::int32_t words[2] = {static_cast<std::int32_t>(static_cast<std::uint32_t>(counter_)),
                                   static_cast<std::int32_t>(static_cast<std::uint32_t>(counter_ >> 32))};
    device_counter_ = Tensor::from_host(std::span<const std::int32_t>(words), Shape{2}, ctx);
    counter_on_device_ = true;
  }
  // Masks from Philox(seed, counter + first + i); the op then advances the device counter.
  ctx.backend().dropout_forward(ctx, x, p_, seed_, device_counter_, first, advance, y, mask_);
  counter_ += advance;
  return y;
}

Tensor Dropout::backward(Context& ctx, const Tensor& dy) {
  if (!mask_.defined()) return dy;  // p == 0: identity
  Tensor dx = Tensor::empty_like(mask_, ctx, dy.dtype());
  ctx.backend().mul(ctx, dy, mask_, dx);
  mask_ = Tensor();
  return dx;
}

Shape Flatten::output_shape(const Shape& input) const {
  CUDL_CHECK(input.rank() >= 2, "Flatten: input {} must have a batch dimension and at least one more", input);
  return Shape{input[0], input.numel() / std::max<std::int64_t>(input[0], 1)};
}

// Flattening reads the logical (NCHW) order, so a channels_last input is laid out as NCHW first,
// and the gradient goes back in the input's format.
Tensor Flatten::forward(Context& ctx, const Tensor& x, bool /*train*/) {
  input_shape_ = x.shape();
  input_format_ = x.format();
  return x.contiguous(ctx).reshape(output_shape(x.shape()));
}

Tensor Flatten::backward(Context& ctx, const Tensor& dy) {
  return dy.reshape(input_shape_).to_format(ctx, input_format_);
}

}  // namespace cudl
