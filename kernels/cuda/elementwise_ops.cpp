// CudaBackend: elementwise basics, clamp, seeded random fills, dropout, activations, bias, the
// per-channel affine map and the fused optimizer steps. Checks here, kernels in
// kernels/cuda/elementwise.cu.
#include <cmath>

#include "kernels/channel_args.hpp"
#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"

namespace cudl {

using cuda_detail::device_tensor;
using cuda_detail::stream_of;

void CudaBackend::fill(Context& ctx, Tensor& x, float value) {
  device_tensor("fill", "x", x, ctx);
  cuda_detail::launch_fill(x.data<float>(), x.numel(), value, stream_of(ctx));
}

void CudaBackend::copy(Context& ctx, const Tensor& src, Tensor& dst) {
  check::defined("copy", "src", src);
  check::defined("copy", "dst", dst);
  check::on_device("copy", "src", src, ctx.device());
  check::on_device("copy", "dst", dst, ctx.device());
  CUDL_CHECK(src.nbytes() == dst.nbytes(), "copy: size mismatch: src={} ({}) but dst={} ({})", src.shape(),
             dtype_name(src.dtype()), dst.shape(), dtype_name(dst.dtype()));
  if (src.nbytes() == 0 || src.raw() == dst.raw()) return;
  CUDL_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_of(ctx)),
                  "copy src={} dst={}", src.shape(), dst.shape());
}

void CudaBackend::axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y) {
  device_tensor("axpy", "x", x, ctx);
  device_tensor("axpy", "y", y, ctx);
  check::same_shape("axpy", "x", x, "y", y);
  cuda_detail::launch_axpy(alpha, x.data<float>(), y.data<float>(), x.numel(), stream_of(ctx));
}

void CudaBackend::scale(Context& ctx, Tensor& x, float alpha) {
  device_tensor("scale", "x", x, ctx);
  cuda_detail::launch_scale(x.data<float>(), alpha, x.numel(), stream_of(ctx));
}

void CudaBackend::clamp(Context& ctx, Tensor& x, float low, float high) {
  device_tensor("clamp", "x", x, ctx);
  CUDL_CHECK(low <= high, "clamp: low={} > high={} (x={})", low, high, x.shape());
  cuda_detail::launch_clamp(x.data<float>(), x.numel(), low, high, stream_of(ctx));
}

void CudaBackend::mul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  device_tensor("mul", "a", a, ctx);
  device_tensor("mul", "b", b, ctx);
  device_tensor("mul", "out", out, ctx);
  check::same_shape("mul", "a", a, "b", b);
  check::same_shape("mul", "a", a, "out", out);
  cuda_detail::launch_mul(a.data<float>(), b.data<float>(), out.data<float>(), a.numel(), stream_of(ctx));
}

void CudaBackend::fill_uniform(Context& ctx, Tensor& x, float low, float high, std::uint64_t seed,
                               std::uint64_t offset) {
  device_tensor("fill_uniform", "x", x, ctx);
  CUDL_CHECK(low <= high, "fill_uniform: low={} > high={} (x={})", low, high, x.shape());
  cuda_detail::launch_fill_uniform(x.data<float>(), x.numel(), low, high, seed, offset, stream_of(ctx));
}

void CudaBackend::fill_normal(Context& ctx, Tensor& x, float mean, float stddev, std::uint64_t seed,
                              std::uint64_t offset) {
  device_tensor("fill_normal", "x", x, ctx);
  CUDL_CHECK(stddev >= 0.0f, "fill_normal: stddev={} is negative (x={})", stddev, x.shape());
  cuda_detail::launch_fill_normal(x.data<float>(), x.numel(), mean, stddev, seed, offset, stream_of(ctx));
}

void CudaBackend::dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                                  Tensor& y, Tensor& mask) {
  device_tensor("dropout", "x", x, ctx);
  device_tensor("dropout", "y", y, ctx);
  device_tensor("dropout", "mask", mask, ctx);
  check::same_shape("dropout", "x", x, "y", y);
  check::same_shape("dropout", "x", x, "mask", mask);
  CUDL_CHECK(p >= 0.0f && p < 1.0f, "dropout: p={} must be in [0, 1) (x={})", p, x.shape());
  const float keep_scale = 1.0f / (1.0f - p);
  cuda_detail::launch_dropout(x.data<float>(), y.data<float>(), mask.data<float>(), x.numel(), p, keep_scale, seed,
                              offset, stream_of(ctx));
}

namespace {
int activation_kind(Activation a) {
  switch (a) {
    case Activation::relu: return cuda_detail::kRelu;
    case Activation::leaky_relu: return cuda_detail::kLeakyRelu;
    case Activation::sigmoid: return cuda_detail::kSigmoid;
    case Activation::tanh: return cuda_detail::kTanh;
  }
  CUDL_THROW("activation: unknown activation {}", static_cast<int>(a));
}
}  // namespace

void CudaBackend::activation_forward(Context& ctx, Activation a, float alpha, const Tensor& x, Tensor& y) {
  const std::string_view op = activation_name(a);
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "y", y, ctx);
  check::same_shape(op, "x", x, "y", y);
  cuda_detail::launch_activation_forward(activation_kind(a), alpha, x.data<float>(), y.data<float>(), x.numel(),
                                         stream_of(ctx));
}

void CudaBackend::activation_backward(Context& ctx, Activation a, float alpha, const Tensor& x, const Tensor& y,
                                      const Tensor& dy, Tensor& dx) {
  const std::string_view op = activation_name(a);
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "y", y, ctx);
  device_tensor(op, "dy", dy, ctx);
  device_tensor(op, "dx", dx, ctx);
  check::same_shape(op, "x", x, "y", y);
  check::same_shape(op, "x", x, "dy", dy);
  check::same_shape(op, "x", x, "dx", dx);
  cuda_detail::launch_activation_backward(activation_kind(a), alpha, x.data<float>(), y.data<float>(),
                                          dy.data<float>(), dx.data<float>(), x.numel(), stream_of(ctx));
}

namespace {
// y viewed as [outer, channels, inner] around dim 1.
struct ChannelView {
  std::int64_t outer = 0, channels = 0, inner = 1;
};
ChannelView channel_view(std::string_view op, const Tensor& y) {
  CUDL_CHECK(y.rank() >= 2, "{}: y must have rank >= 2 ([N, C] or [N, C, H, W]), got shape {}", op, y.shape());
  ChannelView v;
  v.outer = y.dim(0);
  v.channels = y.dim(1);
  for (int i = 2; i < y.rank(); ++i) v.inner *= y.dim(i);
  return v;
}
}  // namespace

void CudaBackend::bias_add(Context& ctx, Tensor& y, const Tensor& bias) {
  device_tensor("bias_add", "y", y, ctx);
  device_tensor("bias_add", "bias", bias, ctx);
  ChannelView v = channel_view("bias_add", y);
  check::shape_is("bias_add", "bias", bias, Shape{v.channels});
  cuda_detail::launch_bias_add(y.data<float>(), bias.data<float>(), v.outer, v.channels, v.inner, stream_of(ctx));
}

void CudaBackend::bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate) {
  device_tensor("bias_grad", "dy", dy, ctx);
  device_tensor("bias_grad", "dbias", dbias, ctx);
  ChannelView v = channel_view("bias_grad", dy);
  check::shape_is("bias_grad", "dbias", dbias, Shape{v.channels});
  cuda_detail::launch_bias_grad(dy.data<float>(), dbias.data<float>(), v.outer, v.channels, v.inner, accumulate,
                                stream_of(ctx));
}

void CudaBackend::channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) {
  constexpr std::string_view op = "channel_affine";
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "scale", scale, ctx);
  device_tensor(op, "shift", shift, ctx);
  device_tensor(op, "y", y, ctx);
  const channel_args::ChannelDims d = channel_args::channel_dims(op, "x", x);
  channel_args::per_channel(op, "scale", scale, "x", x);
  channel_args::per_channel(op, "shift", shift, "x", x);
  check::same_shape(op, "x", x, "y", y);
  cuda_detail::launch_channel_affine(x.data<float>(), scale.data<float>(), shift.data<float>(), y.data<float>(),
                                     d.outer, d.channels, d.inner, stream_of(ctx));
}

void CudaBackend::channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx) {
  constexpr std::string_view op = "channel_affine_backward";
  device_tensor(op, "dy", dy, ctx);
  device_tensor(op, "scale", scale, ctx);
  device_tensor(op, "dx", dx, ctx);
  const channel_args::ChannelDims d = channel_args::channel_dims(op, "dy", dy);
  channel_args::per_channel(op, "scale", scale, "dy", dy);
  check::same_shape(op, "dy", dy, "dx", dx);
  cuda_detail::launch_channel_scale(dy.data<float>(), scale.data<float>(), dx.data<float>(), d.outer, d.channels,
                                    d.inner, stream_of(ctx));
}

void CudaBackend::sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad,
                           Tensor& momentum_buf) {
  device_tensor("sgd_step", "param", param, ctx);
  device_tensor("sgd_step", "grad", grad, ctx);
  check::same_shape("sgd_step", "param", param, "grad", grad);
  CUDL_CHECK(!p.nesterov || (p.momentum > 0.0f && p.dampening == 0.0f),
             "sgd_step: nesterov needs momentum > 0 and zero dampening (momentum={}, dampening={})", p.momentum,
             p.dampening);
  float* buf = nullptr;
  if (p.momentum != 0.0f) {
    device_tensor("sgd_step", "momentum_buf", momentum_buf, ctx);
    check::same_shape("sgd_step", "param", param, "momentum_buf", momentum_buf);
    buf = momentum_buf.data<float>();
  }
  cuda_detail::launch_sgd_step(param.data<float>(), grad.data<float>(), buf, param.numel(), p.lr, p.momentum,
                               p.dampening, p.weight_decay, p.nesterov, stream_of(ctx));
}

void CudaBackend::adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m,
                            Tensor& v) {
  device_tensor("adam_step", "param", param, ctx);
  device_tensor("adam_step", "grad", grad, ctx);
  device_tensor("adam_step", "m", m, ctx);
  device_tensor("adam_step", "v", v, ctx);
  check::same_shape("adam_step", "param", param, "grad", grad);
  check::same_shape("adam_step", "param", param, "m", m);
  check::same_shape("adam_step", "param", param, "v", v);
  CUDL_CHECK(p.step >= 1, "adam_step: step={} must be >= 1 (it is 1-based)", p.step);
  const double t = static_cast<double>(p.step);
  const float bias_correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), t));
  const float bias_correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), t));
  cuda_detail::launch_adam_step(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                                param.numel(), p.lr, p.beta1, p.beta2, p.eps, p.weight_decay,
                                p.decoupled_weight_decay, bias_correction1, bias_correction2, stream_of(ctx));
}

}  // namespace cudl
