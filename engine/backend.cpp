// The checked front of the op interface: every public Backend method checks its arguments here,
// once, under the op's one name, and then calls the backend's do_<op>. What a backend may assume
// on entry to do_<op>: every tensor is defined, on ctx's device, of the documented dtype and
// shape, and every parameter is in range. Checks that need the data itself (the CPU's label scan)
// or a backend's own limits (cuBLAS/cuDNN int sizes) stay in the backends.
#include "cudl/engine/backend.hpp"

#include <cmath>
#include <initializer_list>

#include "cudl/engine/channel_dims.hpp"
#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/format_route.hpp"

namespace cudl {

void NchwRoute::finish() {
  for (auto& [stand_in, output] : outputs_) ctx_.backend().copy(ctx_, stand_in, *output);
  outputs_.clear();
}

std::string_view activation_name(Activation a) {
  switch (a) {
    case Activation::relu:
      return "relu";
    case Activation::leaky_relu:
      return "leaky_relu";
    case Activation::sigmoid:
      return "sigmoid";
    case Activation::tanh:
      return "tanh";
    case Activation::relu6:
      return "relu6";
  }
  return "?";
}

namespace {
// floor(span / stride) + 1 windows, PyTorch's formula; none when the window is wider than the
// padded input. (C++ division truncates toward zero, so a span of -1 would otherwise give one
// window that reads past the input.)
std::int64_t windows(std::int64_t span, int stride) { return span < 0 ? 0 : span / stride + 1; }
}  // namespace

std::int64_t conv_out_size(std::int64_t in, int kernel, int pad, int stride, int dilation) {
  return windows(in + 2 * pad - static_cast<std::int64_t>(dilation) * (kernel - 1) - 1, stride);
}

std::int64_t pool_out_size(std::int64_t in, int kernel, int pad, int stride) {
  return windows(in + 2 * pad - kernel, stride);
}

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p) {
  CUDL_CHECK(x.rank() == 4 && w.rank() == 4, "conv2d: x={} and w={} must both be 4-D (NCHW and KCRS)", x, w);
  CUDL_CHECK(p.groups >= 1, "conv2d: groups must be at least 1, got {} (x={}, w={})", p.groups, x, w);
  if (p.groups == 1) {
    CUDL_CHECK(x[1] == w[1], "conv2d: x={} has {} channels but w={} expects {}", x, x[1], w, w[1]);
  } else {
    CUDL_CHECK(w[0] % p.groups == 0, "conv2d: w={} has {} output channels, not divisible by groups={}", w, w[0],
               p.groups);
    CUDL_CHECK(x[1] == w[1] * p.groups,
               "conv2d: x={} has {} channels but w={} with groups={} expects {} ({} per group)", x, x[1], w, p.groups,
               w[1] * p.groups, w[1]);
  }
  CUDL_CHECK(p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 && p.dilation_w > 0 && p.pad_h >= 0 && p.pad_w >= 0,
             "conv2d: stride and dilation must be positive and padding non-negative (x={}, w={})", x, w);
  auto oh = conv_out_size(x[2], static_cast<int>(w[2]), p.pad_h, p.stride_h, p.dilation_h);
  auto ow = conv_out_size(x[3], static_cast<int>(w[3]), p.pad_w, p.stride_w, p.dilation_w);
  CUDL_CHECK(oh > 0 && ow > 0, "conv2d: kernel of w={} does not fit input x={} with padding {}x{}", w, x, p.pad_h,
             p.pad_w);
  return Shape{x[0], w[0], oh, ow};
}

Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p) {
  CUDL_CHECK(x.rank() == 4, "pool2d: x={} must be 4-D (NCHW)", x);
  CUDL_CHECK(p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0,
             "pool2d: kernel and stride must be positive (x={})", x);
  CUDL_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w,
             "pool2d: padding must be at most half the kernel (x={}, kernel {}x{}, pad {}x{})", x, p.kernel_h,
             p.kernel_w, p.pad_h, p.pad_w);
  auto oh = pool_out_size(x[2], p.kernel_h, p.pad_h, p.stride_h);
  auto ow = pool_out_size(x[3], p.kernel_w, p.pad_w, p.stride_w);
  CUDL_CHECK(oh > 0 && ow > 0, "pool2d: kernel {}x{} does not fit input x={}", p.kernel_h, p.kernel_w, x);
  return Shape{x[0], x[1], oh, ow};
}

// A backend runs ops for contexts of its own device only: the CPU backend handed a CUDA context
// would otherwise read device pointers on the host.
void Backend::bound_to(const Context& ctx, std::string_view op) const {
  CUDL_CHECK(&ctx.backend() == this, "{}: called on the {} backend with a context for {} (use ctx.backend())", op,
             name(), ctx.device());
}

bool Backend::routes_to_nchw(std::string_view op, std::initializer_list<const Tensor*> images, bool any_mix) const {
  if (!any_channels_last(images)) return false;
  return !do_takes_channels_last(op) || (!any_mix && mixed_formats(images));
}

namespace {

// Defined, on the device the op runs on, of the expected dtype.
void placed(const Context& ctx, std::string_view op, std::string_view name, const Tensor& t, DType dtype = DType::f32) {
  check::defined(op, name, t);
  check::on_device(op, name, t, ctx.device());
  check::dtype_is(op, name, t, dtype);
}

// Defined, on the op's device, holding real numbers of any precision (f32, bf16 or f16).
void placed_float(const Context& ctx, std::string_view op, std::string_view name, const Tensor& t) {
  check::defined(op, name, t);
  check::on_device(op, name, t, ctx.device());
  CUDL_CHECK(is_floating(t.dtype()), "{}: {} must be f32, bf16 or f16, got {} (shape {})", op, name,
             dtype_name(t.dtype()), t.shape());
}

// Defined, on the op's device, of the same dtype as `like` (the op's leading float tensor).
void placed_as(const Context& ctx, std::string_view op, std::string_view name, const Tensor& t,
               std::string_view like_name, const Tensor& like) {
  check::defined(op, name, t);
  check::on_device(op, name, t, ctx.device());
  CUDL_CHECK(t.dtype() == like.dtype(), "{}: {} is {} but {} is {}; they must match (shape {})", op, name,
             dtype_name(t.dtype()), like_name, dtype_name(like.dtype()), t.shape());
}

// An output that accumulates in f32 or is stored in its input's precision.
void placed_f32_or_as(const Context& ctx, std::string_view op, std::string_view name, const Tensor& t,
                      std::string_view like_name, const Tensor& like) {
  check::defined(op, name, t);
  check::on_device(op, name, t, ctx.device());
  CUDL_CHECK(t.dtype() == DType::f32 || t.dtype() == like.dtype(), "{}: {} is {}; it must be f32 or {}'s {} (shape {})",
             op, name, dtype_name(t.dtype()), like_name, dtype_name(like.dtype()), t.shape());
}

// A one-element f32 tensor (losses, sums, L-BFGS's device scalars).
void scalar(const Context& ctx, std::string_view op, std::string_view name, const Tensor& t) {
  placed(ctx, op, name, t);
  check::numel_is(op, name, t, 1);
}

// [N, K] rows of the softmax family.
void rows(const Context& ctx, std::string_view op, std::string_view name, const Tensor& t) {
  placed(ctx, op, name, t);
  check::rank_is(op, name, t, 2);
}

void labels_for(const Context& ctx, std::string_view op, const Tensor& labels, std::int64_t n) {
  placed(ctx, op, "labels", labels, DType::i32);
  check::shape_is(op, "labels", labels, Shape{n});
}

// Conv parameters, for the backward directions whose output shape is not computed from them.
void conv_params(std::string_view op, const Tensor& x, const Tensor& w, const Conv2dParams& p) {
  CUDL_CHECK(p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 && p.dilation_w > 0 && p.pad_h >= 0 && p.pad_w >= 0,
             "{}: stride and dilation must be positive and padding non-negative (x={}, w={})", op, x.shape(),
             w.shape());
  CUDL_CHECK(p.groups >= 1, "{}: groups must be at least 1, got {} (x={}, w={})", op, p.groups, x.shape(), w.shape());
}

// A forward convolution (plain or fused): x, w and y on ctx's device in x's float type, valid
// parameters, and y shaped as the convolution's output.
void conv_forward_args(const Context& ctx, std::string_view op, const Tensor& x, const Tensor& w, const Conv2dParams& p,
                       const Tensor& y) {
  placed_float(ctx, op, "x", x);
  placed_as(ctx, op, "w", w, "x", x);
  placed_as(ctx, op, "y", y, "x", x);
  conv_params(op, x, w, p);
  check::shape_is(op, "y", y, conv2d_output_shape(x.shape(), w.shape(), p));
}

// A backward convolution: the image-shaped tensor (dx or x) and the filter-shaped one (w or dw)
// must convolve to dy's shape.
void conv_backward_args(const Context& ctx, std::string_view op, std::string_view image_name, const Tensor& image,
                        std::string_view filter_name, const Tensor& filter, const Tensor& dy, const Conv2dParams& p) {
  placed_float(ctx, op, "dy", dy);
  placed_float(ctx, op, image_name, image);
  placed_float(ctx, op, filter_name, filter);
  check::rank_is(op, image_name, image, 4);
  check::rank_is(op, filter_name, filter, 4);
  conv_params(op, image, filter, p);
  CUDL_CHECK(image.dim(1) == filter.dim(1) * p.groups, "{}: {}={} has {} channels but {}={} expects {}{}", op,
             image_name, image.shape(), image.dim(1), filter_name, filter.shape(), filter.dim(1) * p.groups,
             p.groups == 1 ? std::string() : fmt::format(" (groups={})", p.groups));
  CUDL_CHECK(filter.dim(0) % p.groups == 0, "{}: {}={} has {} output channels, not divisible by groups={}", op,
             filter_name, filter.shape(), filter.dim(0), p.groups);
  const Shape expected = conv2d_output_shape(image.shape(), filter.shape(), p);
  CUDL_CHECK(dy.shape() == expected, "{}: dy has shape {}, expected {} for {}={} and {}={}", op, dy.shape(), expected,
             image_name, image.shape(), filter_name, filter.shape());
}

// The gradient's input shape must pool to dy's shape.
void pool_backward_shapes(std::string_view op, const Tensor& dy, const Tensor& dx, const Pool2dParams& p) {
  check::rank_is(op, "dx", dx, 4);
  const Shape expected = pool2d_output_shape(dx.shape(), p);
  CUDL_CHECK(dy.shape() == expected,
             "{}: dy has shape {}, expected {} for dx={} (kernel {}x{}, stride {}x{}, pad {}x{})", op, dy.shape(),
             expected, dx.shape(), p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w);
}

// A regression loss's two same-shaped inputs, not empty (a mean over nothing is undefined).
void loss_pair(const Context& ctx, std::string_view op, const Tensor& a, const Tensor& b) {
  placed_float(ctx, op, "a", a);
  placed_as(ctx, op, "b", b, "a", a);
  check::same_shape(op, "a", a, "b", b);
  CUDL_CHECK(a.numel() > 0, "{}: inputs are empty (a={})", op, a.shape());
}

void loss_forward_args(const Context& ctx, std::string_view op, const Tensor& a, const Tensor& b, const Tensor& loss) {
  loss_pair(ctx, op, a, b);
  scalar(ctx, op, "loss", loss);
}

void loss_backward_args(const Context& ctx, std::string_view op, const Tensor& a, const Tensor& b, const Tensor& da) {
  loss_pair(ctx, op, a, b);
  placed_as(ctx, op, "da", da, "a", a);
  check::same_shape(op, "a", a, "da", da);
}

void softmax_forward_args(const Context& ctx, std::string_view op, const Tensor& x, const Tensor& y) {
  rows(ctx, op, "x", x);
  placed(ctx, op, "y", y);
  check::same_shape(op, "x", x, "y", y);
}

void softmax_backward_args(const Context& ctx, std::string_view op, const Tensor& y, const Tensor& dy,
                           const Tensor& dx) {
  rows(ctx, op, "y", y);
  placed(ctx, op, "dy", dy);
  placed(ctx, op, "dx", dx);
  check::same_shape(op, "y", y, "dy", dy);
  check::same_shape(op, "y", y, "dx", dx);
}

// A per-channel vector (gamma, beta, running/saved statistics, affine scale and shift) is [C].
void per_channel(std::string_view op, std::string_view name, const Tensor& t, std::string_view x_name,
                 const Tensor& x) {
  CUDL_CHECK(t.shape() == Shape{x.dim(1)}, "{}: {} has shape {}, expected [{}] (one per channel of {}={})", op, name,
             t.shape(), x.dim(1), x_name, x.shape());
}

// An argument of a batchnorm op besides x: shaped like x or one value per channel of x.
enum class Role { like_x, per_channel };
struct Arg {
  std::string_view name;
  const Tensor& tensor;
  Role role;
};

// Every tensor placed, x of rank >= 2, each per-channel argument [C] and each like-x one x's shape.
ChannelDims batchnorm_args(const Context& ctx, std::string_view op, const Tensor& x, std::initializer_list<Arg> args) {
  placed_float(ctx, op, "x", x);
  for (const Arg& a : args) {
    if (a.role == Role::like_x)
      placed_as(ctx, op, a.name, a.tensor, "x", x);
    else
      placed(ctx, op, a.name, a.tensor);
  }
  const ChannelDims d = channel_dims(op, "x", x);
  for (const Arg& a : args) {
    if (a.role == Role::per_channel)
      per_channel(op, a.name, a.tensor, "x", x);
    else
      check::same_shape(op, "x", x, a.name, a.tensor);
  }
  return d;
}

void batchnorm_eps(std::string_view op, float eps) {
  CUDL_CHECK(std::isfinite(eps) && eps >= 0.0f, "{}: eps={} must be finite and >= 0", op, eps);
}

// The checks of a training batch norm, with or without the fused ReLU: whether there is work.
bool batchnorm_train_args(const Context& ctx, std::string_view op, const Tensor& x, const Tensor& gamma,
                          const Tensor& beta, float eps, float momentum, const Tensor& running_mean,
                          const Tensor& running_var, const Tensor& y, const Tensor& save_mean,
                          const Tensor& save_invstd) {
  const ChannelDims d = batchnorm_args(ctx, op, x,
                                       {{"gamma", gamma, Role::per_channel},
                                        {"beta", beta, Role::per_channel},
                                        {"running_mean", running_mean, Role::per_channel},
                                        {"running_var", running_var, Role::per_channel},
                                        {"y", y, Role::like_x},
                                        {"save_mean", save_mean, Role::per_channel},
                                        {"save_invstd", save_invstd, Role::per_channel}});
  batchnorm_eps(op, eps);
  CUDL_CHECK(momentum >= 0.0f && momentum <= 1.0f, "{}: momentum={} must be in [0, 1]", op, momentum);
  if (d.channels == 0) return false;
  // The unbiased running variance divides by count - 1 (PyTorch refuses the same case: "Expected
  // more than 1 value per channel when training").
  CUDL_CHECK(d.per_channel() > 1, "{}: x={} has {} value(s) per channel; training needs more than 1", op, x.shape(),
             d.per_channel());
  return true;
}

}  // namespace

// ---- dense linear algebra ----

void Backend::gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
                   Tensor& c) {
  constexpr std::string_view op = "gemm";
  bound_to(ctx, op);
  placed_float(ctx, op, "a", a);
  placed_as(ctx, op, "b", b, "a", a);
  placed_f32_or_as(ctx, op, "c", c, "a", a);
  check::rank_is(op, "a", a, 2);
  check::rank_is(op, "b", b, 2);
  check::rank_is(op, "c", c, 2);
  const std::int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const std::int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const std::int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const std::int64_t n = trans_b ? b.dim(0) : b.dim(1);
  CUDL_CHECK(k == kb,
             "gemm: inner dimensions differ: op(a) is [{},{}] (a={}, trans_a={}) but op(b) is [{},{}] (b={}, "
             "trans_b={})",
             m, k, a.shape(), trans_a, kb, n, b.shape(), trans_b);
  CUDL_CHECK(c.dim(0) == m && c.dim(1) == n, "gemm: c={} but op(a)*op(b) is [{},{}] (a={}, b={})", c.shape(), m, n,
             a.shape(), b.shape());
  do_gemm(ctx, trans_a, trans_b, alpha, a, b, beta, c);
}

void Backend::bias_add(Context& ctx, Tensor& y, const Tensor& bias) {
  constexpr std::string_view op = "bias_add";
  bound_to(ctx, op);
  placed_float(ctx, op, "y", y);
  placed(ctx, op, "bias", bias);
  CUDL_CHECK(y.rank() >= 2, "bias_add: y={} must have a channel dim (rank >= 2)", y.shape());
  CUDL_CHECK(bias.shape() == Shape{y.dim(1)}, "bias_add: bias={} but y={} has {} channels", bias.shape(), y.shape(),
             y.dim(1));
  run_routed(ctx, routes_to_nchw(op, {&y}), [&](auto& r) { do_bias_add(ctx, r.out(y, true), bias); });
}

void Backend::bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate) {
  constexpr std::string_view op = "bias_grad";
  bound_to(ctx, op);
  placed_float(ctx, op, "dy", dy);
  placed(ctx, op, "dbias", dbias);
  CUDL_CHECK(dy.rank() >= 2, "bias_grad: dy={} must have a channel dim (rank >= 2)", dy.shape());
  CUDL_CHECK(dbias.shape() == Shape{dy.dim(1)}, "bias_grad: dbias={} but dy={} has {} channels", dbias.shape(),
             dy.shape(), dy.dim(1));
  run_routed(ctx, routes_to_nchw(op, {&dy}), [&](auto& r) { do_bias_grad(ctx, r.in(dy), dbias, accumulate); });
}

// ---- convolution ----

ConstantHold Backend::hold_constant(Context& ctx, const Tensor& t) {
  constexpr std::string_view op = "hold_constant";
  bound_to(ctx, op);
  placed_float(ctx, op, "t", t);
  if (t.numel() == 0) return nullptr;
  return do_hold_constant(ctx, t);
}

void Backend::conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  constexpr std::string_view op = "conv2d_forward";
  bound_to(ctx, op);
  conv_forward_args(ctx, op, x, w, p, y);
  run_routed(ctx, routes_to_nchw(op, {&x, &y}, true),
             [&](auto& r) { do_conv2d_forward(ctx, r.in(x), w, p, r.out(y)); });
}

void Backend::conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) {
  constexpr std::string_view op = "conv2d_backward_data";
  bound_to(ctx, op);
  conv_backward_args(ctx, op, "dx", dx, "w", w, dy, p);
  placed_as(ctx, op, "w", w, "dy", dy);
  placed_as(ctx, op, "dx", dx, "dy", dy);
  run_routed(ctx, routes_to_nchw(op, {&dy, &dx}, true),
             [&](auto& r) { do_conv2d_backward_data(ctx, r.in(dy), w, p, r.out(dx)); });
}

void Backend::conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                     bool accumulate) {
  constexpr std::string_view op = "conv2d_backward_filter";
  bound_to(ctx, op);
  conv_backward_args(ctx, op, "x", x, "dw", dw, dy, p);
  placed_as(ctx, op, "dy", dy, "x", x);
  placed_f32_or_as(ctx, op, "dw", dw, "x", x);
  CUDL_CHECK(!dw.channels_last(), "{}: dw={} must be contiguous (KCRS)", op, dw.shape());
  run_routed(ctx, routes_to_nchw(op, {&x, &dy}, true),
             [&](auto& r) { do_conv2d_backward_filter(ctx, r.in(x), r.in(dy), p, dw, accumulate); });
}

void Backend::conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                       const Conv2dParams& p, Tensor& y) {
  constexpr std::string_view op = "conv2d_bias_relu_forward";
  bound_to(ctx, op);
  conv_forward_args(ctx, op, x, w, p, y);
  // The fused kernels (oneDNN's post-op primitive, cuDNN's conv-bias-activation) are set up for
  // dense weights only; a network keeps grouped convolutions unfused (models/network/fusion.cpp).
  CUDL_CHECK(p.groups == 1, "{}: groups={} (x={}, w={}): the fused op takes dense convolutions only", op, p.groups,
             x.shape(), w.shape());
  if (bias.defined()) {  // f32 whatever the data's dtype, as bias_add's
    placed(ctx, op, "bias", bias);
    CUDL_CHECK(bias.shape() == Shape{y.dim(1)}, "{}: bias={} but y={} has {} channels", op, bias.shape(), y.shape(),
               y.dim(1));
  }
  run_routed(ctx, routes_to_nchw(op, {&x, &y}, true),
             [&](auto& r) { do_conv2d_bias_relu_forward(ctx, r.in(x), w, bias, p, r.out(y)); });
}

void Backend::conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                const BatchNormEval& bn, const Conv2dParams& p, const Tensor& residual, bool relu,
                                Tensor& y) {
  constexpr std::string_view op = "conv2d_bn_forward";
  bound_to(ctx, op);
  conv_forward_args(ctx, op, x, w, p, y);
  const Shape channels{y.dim(1)};
  // The per-channel tensors are f32 whatever the data's dtype, as bias_add's and batch norm's.
  const auto per_channel = [&](std::string_view name, const Tensor& t) {
    placed(ctx, op, name, t);
    CUDL_CHECK(t.shape() == channels, "{}: {}={} but y={} has {} channels", op, name, t.shape(), y.shape(), y.dim(1));
  };
  if (bias.defined()) per_channel("bias", bias);
  per_channel("gamma", bn.gamma);
  per_channel("beta", bn.beta);
  per_channel("running_mean", bn.running_mean);
  per_channel("running_var", bn.running_var);
  batchnorm_eps(op, bn.eps);
  if (residual.defined()) {
    placed_as(ctx, op, "residual", residual, "x", x);
    check::same_shape(op, "residual", residual, "y", y);
  }
  // The residual is added in y's layout: the backends read it as y is stored.
  const Tensor res = in_format(ctx, residual, y.format());
  run_routed(ctx, routes_to_nchw(op, {&x, &res, &y}, true),
             [&](auto& r) { do_conv2d_bn_forward(ctx, r.in(x), w, bias, bn, p, r.in(res), relu, r.out(y)); });
}

void Backend::compose_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                        const BatchNormEval& bn, const Conv2dParams& p, const Tensor& residual,
                                        bool relu, Tensor& y) {
  if (y.numel() == 0) return;
  // The convolution into its own tensor: batch norm reads it into y (cuDNN's inference call is
  // not documented to allow x == y); the ops after it are elementwise, safe in place.
  Tensor conv = Tensor::empty_like(y, ctx);
  do_conv2d_forward(ctx, x, w, p, conv);
  if (bias.defined()) do_bias_add(ctx, conv, bias);
  do_batchnorm_forward_eval(ctx, conv, bn.gamma, bn.beta, bn.running_mean, bn.running_var, bn.eps, y);
  if (residual.defined()) do_axpy(ctx, 1.0f, residual, y);
  if (relu) do_activation_forward(ctx, Activation::relu, 0.0f, y, y);
}

void Backend::linear_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  constexpr std::string_view op = "linear_bias_relu_forward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed_as(ctx, op, "w", w, "x", x);
  placed_as(ctx, op, "y", y, "x", x);
  check::rank_is(op, "x", x, 2);
  check::rank_is(op, "w", w, 2);
  CUDL_CHECK(w.dim(1) == x.dim(1), "{}: w={} must be [out, {}] for x={}", op, w.shape(), x.dim(1), x.shape());
  check::shape_is(op, "y", y, Shape{x.dim(0), w.dim(0)});
  if (bias.defined()) {  // f32 whatever the data's dtype, as bias_add's
    placed(ctx, op, "bias", bias);
    CUDL_CHECK(bias.shape() == Shape{w.dim(0)}, "{}: bias={} but w={} has {} outputs", op, bias.shape(), w.shape(),
               w.dim(0));
  }
  do_linear_bias_relu_forward(ctx, x, w, bias, y);
}

// ---- activations ----

void Backend::activation_forward(Context& ctx, Activation a, float alpha, const Tensor& x, Tensor& y) {
  constexpr std::string_view op = "activation_forward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed_as(ctx, op, "y", y, "x", x);
  check::same_shape(op, "x", x, "y", y);
  do_activation_forward(ctx, a, alpha, in_format(ctx, x, y.format()), y);
}

void Backend::activation_backward(Context& ctx, Activation a, float alpha, const Tensor& x, const Tensor& y,
                                  const Tensor& dy, Tensor& dx) {
  constexpr std::string_view op = "activation_backward";
  bound_to(ctx, op);
  placed_float(ctx, op, "dy", dy);
  placed_as(ctx, op, "dx", dx, "dy", dy);
  check::same_shape(op, "dy", dy, "dx", dx);
  // ReLU-like functions differentiate from x, sigmoid and tanh from y; only that one is needed.
  if (activation_grad_reads_x(a)) {
    placed_as(ctx, op, "x", x, "dy", dy);
    check::same_shape(op, "x", x, "dy", dy);
  } else {
    placed_as(ctx, op, "y", y, "dy", dy);
    check::same_shape(op, "y", y, "dy", dy);
  }
  const MemoryFormat f = dx.format();
  do_activation_backward(ctx, a, alpha, in_format(ctx, x, f), in_format(ctx, y, f), in_format(ctx, dy, f), dx);
}

// ---- pooling ----

void Backend::maxpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  constexpr std::string_view op = "maxpool2d_forward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed_as(ctx, op, "y", y, "x", x);
  placed(ctx, op, "argmax", argmax, DType::i32);
  check::shape_is(op, "y", y, pool2d_output_shape(x.shape(), p));
  check::same_shape(op, "y", y, "argmax", argmax);
  run_routed(ctx, routes_to_nchw(op, {&x, &y, &argmax}),
             [&](auto& r) { do_maxpool2d_forward(ctx, r.in(x), p, r.out(y), r.out(argmax)); });
}

void Backend::maxpool2d_backward(Context& ctx, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p,
                                 Tensor& dx) {
  constexpr std::string_view op = "maxpool2d_backward";
  bound_to(ctx, op);
  placed_float(ctx, op, "dy", dy);
  placed(ctx, op, "argmax", argmax, DType::i32);
  placed_as(ctx, op, "dx", dx, "dy", dy);
  pool_backward_shapes(op, dy, dx, p);
  check::same_shape(op, "dy", dy, "argmax", argmax);
  run_routed(ctx, routes_to_nchw(op, {&dy, &argmax, &dx}),
             [&](auto& r) { do_maxpool2d_backward(ctx, r.in(dy), r.in(argmax), p, r.out(dx)); });
}

void Backend::avgpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y) {
  constexpr std::string_view op = "avgpool2d_forward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed_as(ctx, op, "y", y, "x", x);
  check::shape_is(op, "y", y, pool2d_output_shape(x.shape(), p));
  run_routed(ctx, routes_to_nchw(op, {&x, &y}), [&](auto& r) { do_avgpool2d_forward(ctx, r.in(x), p, r.out(y)); });
}

void Backend::avgpool2d_backward(Context& ctx, const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  constexpr std::string_view op = "avgpool2d_backward";
  bound_to(ctx, op);
  placed_float(ctx, op, "dy", dy);
  placed_as(ctx, op, "dx", dx, "dy", dy);
  pool_backward_shapes(op, dy, dx, p);
  run_routed(ctx, routes_to_nchw(op, {&dy, &dx}), [&](auto& r) { do_avgpool2d_backward(ctx, r.in(dy), p, r.out(dx)); });
}

// ---- softmax family ----

void Backend::softmax_forward(Context& ctx, const Tensor& x, Tensor& y) {
  bound_to(ctx, "softmax_forward");
  softmax_forward_args(ctx, "softmax_forward", x, y);
  if (x.numel() > 0) do_softmax_forward(ctx, x, y);
}

void Backend::softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) {
  bound_to(ctx, "softmax_backward");
  softmax_backward_args(ctx, "softmax_backward", y, dy, dx);
  if (y.numel() > 0) do_softmax_backward(ctx, y, dy, dx);
}

void Backend::log_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) {
  bound_to(ctx, "log_softmax_forward");
  softmax_forward_args(ctx, "log_softmax_forward", x, y);
  if (x.numel() > 0) do_log_softmax_forward(ctx, x, y);
}

void Backend::log_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) {
  bound_to(ctx, "log_softmax_backward");
  softmax_backward_args(ctx, "log_softmax_backward", y, dy, dx);
  if (y.numel() > 0) do_log_softmax_backward(ctx, y, dy, dx);
}

void Backend::softmax_cross_entropy_forward(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& probs,
                                            Tensor& loss) {
  constexpr std::string_view op = "softmax_cross_entropy_forward";
  bound_to(ctx, op);
  rows(ctx, op, "logits", logits);
  placed(ctx, op, "probs", probs);
  placed(ctx, op, "loss", loss);
  check::same_shape(op, "logits", logits, "probs", probs);
  check::numel_is(op, "loss", loss, 1);
  CUDL_CHECK(logits.dim(0) > 0 && logits.dim(1) > 0, "{}: logits is empty (shape {})", op, logits.shape());
  labels_for(ctx, op, labels, logits.dim(0));
  do_softmax_cross_entropy_forward(ctx, logits, labels, probs, loss);
}

void Backend::softmax_cross_entropy_backward(Context& ctx, const Tensor& probs, const Tensor& labels, float dloss,
                                             Tensor& dlogits) {
  constexpr std::string_view op = "softmax_cross_entropy_backward";
  bound_to(ctx, op);
  rows(ctx, op, "probs", probs);
  placed(ctx, op, "dlogits", dlogits);
  check::same_shape(op, "probs", probs, "dlogits", dlogits);
  labels_for(ctx, op, labels, probs.dim(0));
  CUDL_CHECK(probs.dim(1) > 0 || probs.dim(0) == 0, "{}: probs={} has rows but no classes", op, probs.shape());
  if (probs.numel() > 0) do_softmax_cross_entropy_backward(ctx, probs, labels, dloss, dlogits);
}

// ---- Gram matrices ----

void Backend::gram_forward(Context& ctx, const Tensor& x, Tensor& g) {
  constexpr std::string_view op = "gram_forward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed(ctx, op, "g", g);
  check::rank_is(op, "x", x, 4);
  check::shape_is(op, "g", g, Shape{x.dim(0), x.dim(1), x.dim(1)});
  run_routed(ctx, routes_to_nchw(op, {&x}), [&](auto& r) { do_gram_forward(ctx, r.in(x), g); });
}

void Backend::gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx) {
  constexpr std::string_view op = "gram_backward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed(ctx, op, "dg", dg);
  placed_as(ctx, op, "dx", dx, "x", x);
  check::rank_is(op, "x", x, 4);
  check::shape_is(op, "dg", dg, Shape{x.dim(0), x.dim(1), x.dim(1)});
  check::same_shape(op, "x", x, "dx", dx);
  if (x.numel() == 0) return;
  run_routed(ctx, routes_to_nchw(op, {&x, &dx}), [&](auto& r) { do_gram_backward(ctx, r.in(x), dg, r.out(dx)); });
}

// ---- losses ----

void Backend::mse_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) {
  constexpr std::string_view op = "mse_loss_forward";
  bound_to(ctx, op);
  loss_forward_args(ctx, op, a, b, loss);
  do_mse_loss_forward(ctx, a, in_format(ctx, b, a.format()), loss);
}

void Backend::mse_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  constexpr std::string_view op = "mse_loss_backward";
  bound_to(ctx, op);
  loss_backward_args(ctx, op, a, b, da);
  do_mse_loss_backward(ctx, in_format(ctx, a, da.format()), in_format(ctx, b, da.format()), dloss, da);
}

void Backend::l1_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) {
  constexpr std::string_view op = "l1_loss_forward";
  bound_to(ctx, op);
  loss_forward_args(ctx, op, a, b, loss);
  do_l1_loss_forward(ctx, a, in_format(ctx, b, a.format()), loss);
}

void Backend::l1_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  constexpr std::string_view op = "l1_loss_backward";
  bound_to(ctx, op);
  loss_backward_args(ctx, op, a, b, da);
  do_l1_loss_backward(ctx, in_format(ctx, a, da.format()), in_format(ctx, b, da.format()), dloss, da);
}

namespace {
void tv_beta_arg(std::string_view op, float beta) {
  CUDL_CHECK(beta >= 1.0f && beta <= 4.0f, "{}: beta must be in [1, 4], got {}", op, beta);
}
}  // namespace

void Backend::tv_loss_forward(Context& ctx, const Tensor& x, Tensor& loss, float beta) {
  constexpr std::string_view op = "tv_loss_forward";
  bound_to(ctx, op);
  placed(ctx, op, "x", x);
  check::rank_is(op, "x", x, 4);
  scalar(ctx, op, "loss", loss);
  tv_beta_arg(op, beta);
  run_routed(ctx, routes_to_nchw(op, {&x}), [&](auto& r) { do_tv_loss_forward(ctx, r.in(x), beta, loss); });
}

void Backend::tv_loss_backward(Context& ctx, const Tensor& x, float dloss, Tensor& dx, bool accumulate, float beta) {
  constexpr std::string_view op = "tv_loss_backward";
  bound_to(ctx, op);
  tv_beta_arg(op, beta);
  placed(ctx, op, "x", x);
  placed(ctx, op, "dx", dx);
  check::rank_is(op, "x", x, 4);
  check::same_shape(op, "x", x, "dx", dx);
  CUDL_CHECK(dx.raw() != x.raw() || x.numel() == 0, "{}: dx must not alias x (x={})", op, x.shape());
  run_routed(ctx, routes_to_nchw(op, {&x, &dx}),
             [&](auto& r) { do_tv_loss_backward(ctx, r.in(x), beta, dloss, r.out(dx, accumulate), accumulate); });
}

// ---- dropout and the elementwise product ----

void Backend::dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                              Tensor& y, Tensor& mask) {
  constexpr std::string_view op = "dropout_forward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed_as(ctx, op, "y", y, "x", x);
  placed_as(ctx, op, "mask", mask, "x", x);
  check::same_shape(op, "x", x, "y", y);
  check::same_shape(op, "x", x, "mask", mask);
  CUDL_CHECK(p >= 0.0f && p < 1.0f, "{}: p={} must be in [0, 1) (x={})", op, p, x.shape());
  CUDL_CHECK(mask.format() == y.format(), "{}: y is {} but mask is {}; they must share one format (x={})", op,
             memory_format_name(y.format()), memory_format_name(mask.format()), x.shape());
  do_dropout_forward(ctx, in_format(ctx, x, y.format()), p, seed, offset, y, mask);
}

void Backend::dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, Tensor& counter,
                              std::uint64_t offset, std::uint64_t advance, Tensor& y, Tensor& mask) {
  constexpr std::string_view op = "dropout_forward";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed_as(ctx, op, "y", y, "x", x);
  placed_as(ctx, op, "mask", mask, "x", x);
  check::same_shape(op, "x", x, "y", y);
  check::same_shape(op, "x", x, "mask", mask);
  placed(ctx, op, "counter", counter, DType::i32);
  check::shape_is(op, "counter", counter, Shape{2});
  CUDL_CHECK(p >= 0.0f && p < 1.0f, "{}: p={} must be in [0, 1) (x={})", op, p, x.shape());
  CUDL_CHECK(mask.format() == y.format(), "{}: y is {} but mask is {}; they must share one format (x={})", op,
             memory_format_name(y.format()), memory_format_name(mask.format()), x.shape());
  do_dropout_forward_counted(ctx, in_format(ctx, x, y.format()), p, seed, counter, offset, advance, y, mask);
}

void Backend::mul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  constexpr std::string_view op = "mul";
  bound_to(ctx, op);
  placed_float(ctx, op, "a", a);
  placed_as(ctx, op, "b", b, "a", a);
  placed_as(ctx, op, "out", out, "a", a);
  check::same_shape(op, "a", a, "b", b);
  check::same_shape(op, "a", a, "out", out);
  do_mul(ctx, in_format(ctx, a, out.format()), in_format(ctx, b, out.format()), out);
}

// ---- optimizer steps ----

namespace {
// A per-step scalars tensor, when given, is f32 [kOptimizerScalars] on ctx's device.
void check_optimizer_scalars(const Context& ctx, std::string_view op, const Tensor& scalars) {
  if (!scalars.defined()) return;
  placed(ctx, op, "scalars", scalars);
  check::shape_is(op, "scalars", scalars, Shape{kOptimizerScalars});
}
}  // namespace

OptimizerStepValues optimizer_scalars(const SgdParams& p) {
  OptimizerStepValues s;
  s.v[kOptLr] = p.lr;
  s.v[kOptAdamStepSize] = 0.0f;
  s.v[kOptAdamInvSqrtBc2] = 1.0f;
  s.v[kOptAdamShrink] = 1.0f;
  return s;
}

OptimizerStepValues optimizer_scalars(const AdamParams& p) {
  // Bias corrections in double: beta2^t stays accurate for the large t of long runs.
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  OptimizerStepValues s;
  s.v[kOptLr] = p.lr;
  s.v[kOptAdamStepSize] = static_cast<float>(p.lr / bc1);
  s.v[kOptAdamInvSqrtBc2] = static_cast<float>(1.0 / std::sqrt(bc2));
  s.v[kOptAdamShrink] = p.decoupled_weight_decay ? 1.0f - p.lr * p.weight_decay : 1.0f;
  return s;
}

void Backend::sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf) {
  constexpr std::string_view op = "sgd_step";
  bound_to(ctx, op);
  placed(ctx, op, "param", param);
  placed(ctx, op, "grad", grad);
  check::same_shape(op, "param", param, "grad", grad);
  CUDL_CHECK(p.momentum >= 0.0f, "{}: momentum={} is negative (param={})", op, p.momentum, param.shape());
  CUDL_CHECK(!p.nesterov || (p.momentum > 0.0f && p.dampening == 0.0f),
             "{}: nesterov needs momentum > 0 and dampening 0, got momentum={} dampening={} (param={})", op, p.momentum,
             p.dampening, param.shape());
  if (p.momentum > 0.0f) {
    placed(ctx, op, "momentum_buf", momentum_buf);
    check::same_shape(op, "param", param, "momentum_buf", momentum_buf);
  }
  check_optimizer_scalars(ctx, op, p.scalars);
  CUDL_CHECK(!any_channels_last({&param, &grad, &momentum_buf}), "{}: param={} and its state must be contiguous", op,
             param.shape());
  do_sgd_step(ctx, p, param, grad, momentum_buf);
}

void Backend::adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v) {
  constexpr std::string_view op = "adam_step";
  bound_to(ctx, op);
  placed(ctx, op, "param", param);
  placed(ctx, op, "grad", grad);
  placed(ctx, op, "m", m);
  placed(ctx, op, "v", v);
  check::same_shape(op, "param", param, "grad", grad);
  check::same_shape(op, "param", param, "m", m);
  check::same_shape(op, "param", param, "v", v);
  check_optimizer_scalars(ctx, op, p.scalars);
  CUDL_CHECK(p.scalars.defined() || p.step >= 1, "{}: step={} must be >= 1 (it is 1-based; param={})", op, p.step,
             param.shape());
  CUDL_CHECK(!any_channels_last({&param, &grad, &m, &v}), "{}: param={} and its state must be contiguous", op,
             param.shape());
  do_adam_step(ctx, p, param, grad, m, v);
}

// ---- reductions ----

void Backend::sum(Context& ctx, const Tensor& x, Tensor& out) {
  bound_to(ctx, "sum");
  placed_float(ctx, "sum", "x", x);
  scalar(ctx, "sum", "out", out);
  do_sum(ctx, x, out);
}

void Backend::mean(Context& ctx, const Tensor& x, Tensor& out) {
  bound_to(ctx, "mean");
  placed_float(ctx, "mean", "x", x);
  scalar(ctx, "mean", "out", out);
  CUDL_CHECK(x.numel() > 0, "mean: x is empty (shape {})", x.shape());
  do_mean(ctx, x, out);
}

void Backend::max(Context& ctx, const Tensor& x, Tensor& out) {
  bound_to(ctx, "max");
  placed_float(ctx, "max", "x", x);
  scalar(ctx, "max", "out", out);
  CUDL_CHECK(x.numel() > 0, "max: x is empty (shape {})", x.shape());
  do_max(ctx, x, out);
}

void Backend::argmax_rows(Context& ctx, const Tensor& x, Tensor& out) {
  constexpr std::string_view op = "argmax_rows";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  check::rank_is(op, "x", x, 2);
  placed(ctx, op, "out", out, DType::i32);
  check::shape_is(op, "out", out, Shape{x.dim(0)});
  CUDL_CHECK(x.dim(1) > 0, "argmax_rows: x has no columns (shape {})", x.shape());
  if (x.dim(0) > 0) do_argmax_rows(ctx, x, out);
}

void Backend::accuracy(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& out) {
  constexpr std::string_view op = "accuracy";
  bound_to(ctx, op);
  placed_float(ctx, op, "logits", logits);
  check::rank_is(op, "logits", logits, 2);
  labels_for(ctx, op, labels, logits.dim(0));
  scalar(ctx, op, "out", out);
  CUDL_CHECK(logits.dim(0) > 0 && logits.dim(1) > 0, "accuracy: logits is empty (shape {})", logits.shape());
  do_accuracy(ctx, logits, labels, out);
}

void Backend::top_k(Context& ctx, const Tensor& x, Tensor& indices, Tensor& values) {
  constexpr std::string_view op = "top_k";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  check::rank_is(op, "x", x, 2);
  placed(ctx, op, "indices", indices, DType::i32);
  check::rank_is(op, "indices", indices, 2);
  const std::int64_t k = indices.dim(1);
  CUDL_CHECK(indices.dim(0) == x.dim(0), "{}: indices={} must have x's {} rows (x={})", op, indices.shape(), x.dim(0),
             x.shape());
  CUDL_CHECK(k >= 1 && k <= x.dim(1), "{}: k={} (indices={}) must be in [1, K={}] (x={})", op, k, indices.shape(),
             x.dim(1), x.shape());
  if (values.defined()) {
    placed(ctx, op, "values", values);
    check::shape_is(op, "values", values, indices.shape());
  }
  if (x.dim(0) > 0) do_top_k(ctx, x, indices, values);
}

void Backend::match_histograms(Context& ctx, const Tensor& source, const Tensor& reference, Tensor& out) {
  constexpr std::string_view op = "match_histograms";
  bound_to(ctx, op);
  placed(ctx, op, "source", source);
  placed(ctx, op, "reference", reference);
  placed(ctx, op, "out", out);
  check::rank_is(op, "source", source, 2);
  check::rank_is(op, "reference", reference, 2);
  check::same_shape(op, "source", source, "out", out);
  CUDL_CHECK(reference.dim(0) == source.dim(0), "{}: reference={} must have source's {} rows (source={})", op,
             reference.shape(), source.dim(0), source.shape());
  CUDL_CHECK(reference.dim(1) > 0 || source.numel() == 0, "{}: reference={} has no values to match source={} to", op,
             reference.shape(), source.shape());
  // Positions are the low 32 bits of the sort keys.
  CUDL_CHECK(source.dim(1) <= INT32_MAX && reference.dim(1) <= INT32_MAX,
             "{}: rows of more than 2^31-1 values (source={}, reference={})", op, source.shape(), reference.shape());
  CUDL_CHECK(reference.raw() != out.raw() || out.numel() == 0, "{}: out must not alias reference (reference={})", op,
             reference.shape());
  if (source.numel() > 0) do_match_histograms(ctx, source, reference, out);
}

// ---- elementwise basics ----

void Backend::fill(Context& ctx, Tensor& x, float value) {
  bound_to(ctx, "fill");
  placed_float(ctx, "fill", "x", x);
  do_fill(ctx, x, value);
}

void Backend::copy(Context& ctx, const Tensor& src, Tensor& dst) {
  bound_to(ctx, "copy");
  check::defined("copy", "src", src);
  check::defined("copy", "dst", dst);
  check::on_device("copy", "src", src, ctx.device());
  check::on_device("copy", "dst", dst, ctx.device());
  CUDL_CHECK(src.nbytes() == dst.nbytes(), "copy: size mismatch: src={} ({}) but dst={} ({})", src.shape(),
             dtype_name(src.dtype()), dst.shape(), dtype_name(dst.dtype()));
  if (src.format() != dst.format()) {
    CUDL_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(),
               "copy: src={} ({}, {}) and dst={} ({}, {}): a copy between formats keeps the shape and dtype",
               src.shape(), dtype_name(src.dtype()), memory_format_name(src.format()), dst.shape(),
               dtype_name(dst.dtype()), memory_format_name(dst.format()));
    // One channel or one pixel: both formats are the same bytes (Tensor::to_format shares them).
    if (!formats_share_bytes(src.shape())) {
      CUDL_CHECK(src.raw() != dst.raw() || src.nbytes() == 0, "copy: src={} and dst share memory but not a format",
                 src.shape());
      if (src.nbytes() > 0) do_convert_format(ctx, src, dst);
      return;
    }
  }
  if (src.nbytes() > 0 && src.raw() != dst.raw()) do_copy(ctx, src, dst);
}

void Backend::axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y) {
  bound_to(ctx, "axpy");
  placed_float(ctx, "axpy", "x", x);
  placed_as(ctx, "axpy", "y", y, "x", x);
  check::same_shape("axpy", "x", x, "y", y);
  do_axpy(ctx, alpha, in_format(ctx, x, y.format()), y);
}

void Backend::scale(Context& ctx, Tensor& x, float alpha) {
  bound_to(ctx, "scale");
  placed_float(ctx, "scale", "x", x);
  do_scale(ctx, x, alpha);
}

// ---- per-channel affine map and batch norm ----

void Backend::channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) {
  constexpr std::string_view op = "channel_affine";
  bound_to(ctx, op);
  placed_float(ctx, op, "x", x);
  placed(ctx, op, "scale", scale);
  placed(ctx, op, "shift", shift);
  placed_as(ctx, op, "y", y, "x", x);
  channel_dims(op, "x", x);
  per_channel(op, "scale", scale, "x", x);
  per_channel(op, "shift", shift, "x", x);
  check::same_shape(op, "x", x, "y", y);
  run_routed(ctx, routes_to_nchw(op, {&x, &y}),
             [&](auto& r) { do_channel_affine(ctx, r.in(x), scale, shift, r.out(y)); });
}

void Backend::channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx) {
  constexpr std::string_view op = "channel_affine_backward";
  bound_to(ctx, op);
  placed_float(ctx, op, "dy", dy);
  placed(ctx, op, "scale", scale);
  placed_as(ctx, op, "dx", dx, "dy", dy);
  channel_dims(op, "dy", dy);
  per_channel(op, "scale", scale, "dy", dy);
  check::same_shape(op, "dy", dy, "dx", dx);
  run_routed(ctx, routes_to_nchw(op, {&dy, &dx}),
             [&](auto& r) { do_channel_affine_backward(ctx, r.in(dy), scale, r.out(dx)); });
}

void Backend::batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                                      float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y,
                                      Tensor& save_mean, Tensor& save_invstd) {
  constexpr std::string_view op = "batchnorm_forward_train";
  bound_to(ctx, op);
  if (!batchnorm_train_args(ctx, op, x, gamma, beta, eps, momentum, running_mean, running_var, y, save_mean,
                            save_invstd))
    return;
  run_routed(ctx, routes_to_nchw(op, {&x, &y}), [&](auto& r) {
    do_batchnorm_forward_train(ctx, r.in(x), gamma, beta, eps, momentum, running_mean, running_var, r.out(y), save_mean,
                               save_invstd);
  });
}

void Backend::batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                     const Tensor& running_mean, const Tensor& running_var, float eps, Tensor& y) {
  constexpr std::string_view op = "batchnorm_forward_eval";
  bound_to(ctx, op);
  batchnorm_args(ctx, op, x,
                 {{"gamma", gamma, Role::per_channel},
                  {"beta", beta, Role::per_channel},
                  {"running_mean", running_mean, Role::per_channel},
                  {"running_var", running_var, Role::per_channel},
                  {"y", y, Role::like_x}});
  batchnorm_eps(op, eps);
  if (x.numel() == 0) return;
  run_routed(ctx, routes_to_nchw(op, {&x, &y}), [&](auto& r) {
    do_batchnorm_forward_eval(ctx, r.in(x), gamma, beta, running_mean, running_var, eps, r.out(y));
  });
}

void Backend::batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                 const Tensor& save_mean, const Tensor& save_invstd, float eps, Tensor& dx,
                                 Tensor& dgamma, Tensor& dbeta) {
  constexpr std::string_view op = "batchnorm_backward";
  bound_to(ctx, op);
  batchnorm_args(ctx, op, x,
                 {{"dy", dy, Role::like_x},
                  {"gamma", gamma, Role::per_channel},
                  {"save_mean", save_mean, Role::per_channel},
                  {"save_invstd", save_invstd, Role::per_channel},
                  {"dx", dx, Role::like_x},
                  {"dgamma", dgamma, Role::per_channel},
                  {"dbeta", dbeta, Role::per_channel}});
  batchnorm_eps(op, eps);
  if (x.numel() == 0) return;  // no values (or no channels): nothing to differentiate, nothing to add
  run_routed(ctx, routes_to_nchw(op, {&x, &dy, &dx}), [&](auto& r) {
    do_batchnorm_backward(ctx, r.in(x), r.in(dy), gamma, save_mean, save_invstd, eps, r.out(dx), dgamma, dbeta);
  });
}

void Backend::batchnorm_relu_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                           float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                           Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  constexpr std::string_view op = "batchnorm_relu_forward_train";
  bound_to(ctx, op);
  if (!batchnorm_train_args(ctx, op, x, gamma, beta, eps, momentum, running_mean, running_var, y, save_mean,
                            save_invstd))
    return;
  run_routed(ctx, routes_to_nchw(op, {&x, &y}), [&](auto& r) {
    do_batchnorm_relu_forward_train(ctx, r.in(x), gamma, beta, eps, momentum, running_mean, running_var, r.out(y),
                                    save_mean, save_invstd);
  });
}

void Backend::batchnorm_relu_backward(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& dy,
                                      const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd,
                                      float eps, Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  constexpr std::string_view op = "batchnorm_relu_backward";
  bound_to(ctx, op);
  batchnorm_args(ctx, op, x,
                 {{"y", y, Role::like_x},
                  {"dy", dy, Role::like_x},
                  {"gamma", gamma, Role::per_channel},
                  {"save_mean", save_mean, Role::per_channel},
                  {"save_invstd", save_invstd, Role::per_channel},
                  {"dx", dx, Role::like_x},
                  {"dgamma", dgamma, Role::per_channel},
                  {"dbeta", dbeta, Role::per_channel}});
  batchnorm_eps(op, eps);
  if (x.numel() == 0) return;  // as batchnorm_backward: nothing to differentiate, nothing to add
  run_routed(ctx, routes_to_nchw(op, {&x, &y, &dy, &dx}), [&](auto& r) {
    do_batchnorm_relu_backward(ctx, r.in(x), r.in(y), r.in(dy), gamma, save_mean, save_invstd, eps, r.out(dx), dgamma,
                               dbeta);
  });
}

// ---- precision ----

void Backend::cast(Context& ctx, const Tensor& src, Tensor& dst) {
  constexpr std::string_view op = "cast";
  bound_to(ctx, op);
  placed_float(ctx, op, "src", src);
  placed_float(ctx, op, "dst", dst);
  CUDL_CHECK(src.numel() == dst.numel(), "{}: src={} ({} elements) but dst={} ({} elements)", op, src.shape(),
             src.numel(), dst.shape(), dst.numel());
  if (src.numel() == 0) return;
  if (src.format() != dst.format()) {
    CUDL_CHECK(src.shape() == dst.shape(), "{}: src={} ({}) and dst={} ({}): a cast between formats keeps the shape",
               op, src.shape(), memory_format_name(src.format()), dst.shape(), memory_format_name(dst.format()));
    if (src.dtype() == dst.dtype()) {
      copy(ctx, src, dst);
      return;
    }
    do_cast(ctx, src.to_format(ctx, dst.format()), dst);
    return;
  }
  if (src.dtype() == dst.dtype()) {
    if (src.raw() != dst.raw()) do_copy(ctx, src, dst);
    return;
  }
  do_cast(ctx, src, dst);
}

// ---- vector helpers for L-BFGS and image output ----

void Backend::dot(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  bound_to(ctx, "dot");
  placed(ctx, "dot", "a", a);
  placed(ctx, "dot", "b", b);
  placed(ctx, "dot", "out", out);
  check::same_shape("dot", "a", a, "b", b);
  check::numel_is("dot", "out", out, 1);
  do_dot(ctx, a, in_format(ctx, b, a.format()), out);
}

void Backend::clamp(Context& ctx, Tensor& x, float low, float high) {
  bound_to(ctx, "clamp");
  placed(ctx, "clamp", "x", x);
  CUDL_CHECK(low <= high, "clamp: low={} > high={} (x={})", low, high, x.shape());
  do_clamp(ctx, x, low, high);
}

void Backend::axpy_scalar(Context& ctx, float sign, const Tensor& alpha, const Tensor& x, Tensor& y) {
  constexpr std::string_view op = "axpy_scalar";
  bound_to(ctx, op);
  scalar(ctx, op, "alpha", alpha);
  placed(ctx, op, "x", x);
  placed(ctx, op, "y", y);
  check::same_shape(op, "x", x, "y", y);
  do_axpy_scalar(ctx, sign, alpha, in_format(ctx, x, y.format()), y);
}

void Backend::abs_sum(Context& ctx, const Tensor& x, Tensor& out) {
  bound_to(ctx, "abs_sum");
  placed(ctx, "abs_sum", "x", x);
  scalar(ctx, "abs_sum", "out", out);
  do_abs_sum(ctx, x, out);
}

void Backend::scalar_op(Context& ctx, ScalarOp kind, const Tensor& a, const Tensor& b, Tensor& out) {
  bound_to(ctx, "scalar_op");
  scalar(ctx, "scalar_op", "a", a);
  scalar(ctx, "scalar_op", "b", b);
  scalar(ctx, "scalar_op", "out", out);
  do_scalar_op(ctx, kind, a, b, out);
}

// ---- seeded random fills ----

void Backend::fill_uniform(Context& ctx, Tensor& x, float low, float high, std::uint64_t seed, std::uint64_t offset) {
  bound_to(ctx, "fill_uniform");
  placed(ctx, "fill_uniform", "x", x);
  CUDL_CHECK(low <= high, "fill_uniform: low={} > high={} (x={})", low, high, x.shape());
  do_fill_uniform(ctx, x, low, high, seed, offset);
}

void Backend::fill_normal(Context& ctx, Tensor& x, float mean, float stddev, std::uint64_t seed, std::uint64_t offset) {
  bound_to(ctx, "fill_normal");
  placed(ctx, "fill_normal", "x", x);
  CUDL_CHECK(stddev >= 0.0f, "fill_normal: stddev={} is negative (x={})", stddev, x.shape());
  do_fill_normal(ctx, x, mean, stddev, seed, offset);
}

// ---- row gather ----

void Backend::gather_rows(Context& ctx, const Tensor& src, const Tensor& index, Tensor& out) {
  constexpr std::string_view op = "gather_rows";
  bound_to(ctx, op);
  check::defined(op, "src", src);
  check::on_device(op, "src", src, ctx.device());
  CUDL_CHECK(src.rank() >= 1, "{}: src must have a row dim (dim 0), got a scalar of shape {}", op, src.shape());
  placed(ctx, op, "index", index, DType::i32);
  check::rank_is(op, "index", index, 1);
  placed_as(ctx, op, "out", out, "src", src);
  Shape expected = src.shape();
  expected[0] = index.dim(0);
  check::shape_is(op, "out", out, expected);
  if (index.dim(0) > 0) do_gather_rows(ctx, in_format(ctx, src, out.format()), index, out);
}

}  // namespace cudl
