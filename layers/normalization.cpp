#include "cudl/layers/normalization.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace cudl {

BatchNorm2d::BatchNorm2d(std::int64_t channels, float eps, float momentum)
    : channels_(channels), eps_(eps), momentum_(momentum) {
  weight_ = {"weight", Shape{channels}, {}, {}, true, {}};
  bias_ = {"bias", Shape{channels}, {}, {}, true, {}};
  running_mean_ = {"running_mean", Shape{channels}, {}, {}, false, {}};
  running_var_ = {"running_var", Shape{channels}, {}, {}, false, {}};
}

std::string BatchNorm2d::describe() const { return fmt::format("BatchNorm2d({}, eps={})", channels_, eps_); }

Shape BatchNorm2d::output_shape(const Shape& input) const {
  CUDL_CHECK(input.rank() == 4 && input[1] == channels_, "BatchNorm2d({}): input {} must be [N, {}, H, W]", channels_,
             input, channels_);
  return input;
}

std::vector<Parameter*> BatchNorm2d::parameters() { return {&weight_, &bias_, &running_mean_, &running_var_}; }

void BatchNorm2d::initialize(Context& ctx, std::uint64_t /*seed*/) {
  ctx.backend().fill(ctx, weight_.value, 1.0f);
  ctx.backend().fill(ctx, bias_.value, 0.0f);
  ctx.backend().fill(ctx, running_mean_.value, 0.0f);
  ctx.backend().fill(ctx, running_var_.value, 1.0f);
}

Tensor BatchNorm2d::forward(Context& ctx, const Tensor& x, bool train) {
  // Under autocast x and y stay in half; the statistics and parameters are f32 (as in PyTorch).
  Tensor y = Tensor::empty_like(x, ctx);
  relu_y_ = Tensor();
  eval_forward_ = !train || frozen_;
  if (eval_forward_) {
    ctx.backend().batchnorm_forward_eval(ctx, x, weight_.value, bias_.value, running_mean_.value, running_var_.value,
                                         eps_, y);
    x_ = train ? x : Tensor();  // a frozen layer in training still passes gradients down
    return y;
  }
  save_mean_ = Tensor::empty({channels_}, ctx);
  save_invstd_ = Tensor::empty({channels_}, ctx);
  ctx.backend().batchnorm_forward_train(ctx, x, weight_.value, bias_.value, eps_, momentum_, running_mean_.value,
                                        running_var_.value, y, save_mean_, save_invstd_);
  x_ = x;
  return y;
}

Tensor BatchNorm2d::forward_relu(Context& ctx, const Tensor& x) {
  CUDL_CHECK(!frozen_,
             "BatchNorm2d::forward_relu: a frozen layer normalises with its running statistics; run it "
             "unfused");
  Tensor y = Tensor::empty_like(x, ctx);
  eval_forward_ = false;
  save_mean_ = Tensor::empty({channels_}, ctx);
  save_invstd_ = Tensor::empty({channels_}, ctx);
  ctx.backend().batchnorm_relu_forward_train(ctx, x, weight_.value, bias_.value, eps_, momentum_, running_mean_.value,
                                             running_var_.value, y, save_mean_, save_invstd_);
  x_ = x;
  relu_y_ = y;
  return y;
}

Tensor BatchNorm2d::backward_relu(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(x_.defined() && relu_y_.defined(),
             "BatchNorm2d::backward_relu: no saved fused forward (forward_relu was not run since the last backward)");
  const Tensor dyc = dy.cast(ctx, x_.dtype());
  Tensor dx = Tensor::empty_like(x_, ctx);
  // Frozen since the forward: the gradients for gamma and beta go to scratch, as in backward().
  Tensor dgamma = frozen_ ? Tensor::zeros({channels_}, ctx) : weight_.grad;
  Tensor dbeta = frozen_ ? Tensor::zeros({channels_}, ctx) : bias_.grad;
  ctx.backend().batchnorm_relu_backward(ctx, x_, relu_y_, dyc, weight_.value, save_mean_, save_invstd_, eps_, dx,
                                        dgamma, dbeta);
  x_ = Tensor();
  relu_y_ = Tensor();
  return dx;
}

Tensor BatchNorm2d::backward(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(x_.defined(), "BatchNorm2d::backward: no saved input (forward was not run with train=true)");
  CUDL_CHECK(!relu_y_.defined(),
             "BatchNorm2d::backward: the last forward ran fused with its ReLU; its backward is "
             "backward_relu");
  const Tensor dyc = dy.cast(ctx, x_.dtype());
  Tensor dx = Tensor::empty_like(x_, ctx);
  if (eval_forward_) {
    // y = gamma (x - mean) / sqrt(var + eps) + beta with constant statistics, so dx is dy scaled
    // per channel by gamma / sqrt(var + eps): the same evaluation op with mean 0 and beta 0.
    Tensor zeros = Tensor::zeros({channels_}, ctx);
    ctx.backend().batchnorm_forward_eval(ctx, dyc, weight_.value, zeros, zeros, running_var_.value, eps_, dx);
  } else if (frozen_) {
    // Frozen: gradients for gamma/beta are computed into scratch and dropped.
    Tensor dgamma = Tensor::zeros({channels_}, ctx), dbeta = Tensor::zeros({channels_}, ctx);
    ctx.backend().batchnorm_backward(ctx, x_, dyc, weight_.value, save_mean_, save_invstd_, eps_, dx, dgamma, dbeta);
  } else {
    ctx.backend().batchnorm_backward(ctx, x_, dyc, weight_.value, save_mean_, save_invstd_, eps_, dx, weight_.grad,
                                     bias_.grad);
  }
  x_ = Tensor();
  return dx;
}

Normalize::Normalize(std::array<float, 3> mean, std::array<float, 3> std) : mean_(mean), std_(std) {}

std::unique_ptr<Normalize> Normalize::imagenet() {
  return std::make_unique<Normalize>(std::array<float, 3>{0.485f, 0.456f, 0.406f},
                                     std::array<float, 3>{0.229f, 0.224f, 0.225f});
}

std::string Normalize::describe() const {
  return fmt::format("Normalize(mean=[{}], std=[{}])", fmt::join(mean_, ", "), fmt::join(std_, ", "));
}

Shape Normalize::output_shape(const Shape& input) const {
  CUDL_CHECK(input.rank() == 4 && input[1] == 3, "Normalize: input {} must be RGB [N, 3, H, W]", input);
  return input;
}

Tensor Normalize::forward(Context& ctx, const Tensor& x, bool /*train*/) {
  if (!scale_.defined() || device_ != ctx.device()) {
    std::vector<float> scale(3), shift(3);
    for (int c = 0; c < 3; ++c) {
      scale[static_cast<std::size_t>(c)] = 1.0f / std_[static_cast<std::size_t>(c)];
      shift[static_cast<std::size_t>(c)] = -mean_[static_cast<std::size_t>(c)] / std_[static_cast<std::size_t>(c)];
    }
    scale_ = Tensor::from_host(scale, {3}, ctx);
    shift_ = Tensor::from_host(shift, {3}, ctx);
    device_ = ctx.device();
  }
  (void)output_shape(x.shape());
  Tensor y = Tensor::empty_like(x, ctx);
  ctx.backend().channel_affine(ctx, x, scale_, shift_, y);
  return y;
}

Tensor Normalize::backward(Context& ctx, const Tensor& dy) {
  if (!input_grad_) return Tensor();  // the first layer of a classifier: nobody wants the image gradient
  Tensor dx = Tensor::empty_like(dy, ctx);
  ctx.backend().channel_affine_backward(ctx, dy, scale_, dx);
  return dx;
}

}  // namespace cudl
