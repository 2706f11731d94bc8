#include "cudl/layers/linear.hpp"

#include <fmt/format.h>

#include "cudl/layers/autocast.hpp"
#include "cudl/layers/init.hpp"

namespace cudl {

Linear::Linear(std::int64_t in_features, std::int64_t out_features, bool bias, InitScheme init)
    : in_features_(in_features), out_features_(out_features), has_bias_(bias), init_(init) {
  weight_ = {"weight", Shape{out_features, in_features}, {}, {}, true, {}};
  bias_ = {"bias", Shape{out_features}, {}, {}, true, {}};
}

std::string Linear::describe() const {
  return fmt::format("Linear(in_features={}, out_features={}{})", in_features_, out_features_,
                     has_bias_ ? "" : ", bias=False");
}

Shape Linear::output_shape(const Shape& input) const {
  CUDL_CHECK(input.rank() == 2 && input[1] == in_features_, "Linear({}, {}): input {} must be [N, {}]", in_features_,
             out_features_, input, in_features_);
  return Shape{input[0], out_features_};
}

std::vector<Parameter*> Linear::parameters() {
  if (has_bias_) return {&weight_, &bias_};
  return {&weight_};
}

void Linear::initialize(Context& ctx, std::uint64_t seed) {
  if (init_ == InitScheme::vgg) {
    ctx.backend().fill_normal(ctx, weight_.value, 0.0f, 0.01f, init::derive_seed(seed, 0), 0);
    if (has_bias_) ctx.backend().fill(ctx, bias_.value, 0.0f);
  } else {
    init::pytorch_uniform(ctx, weight_.value, in_features_, init::derive_seed(seed, 0));
    if (has_bias_) init::pytorch_uniform(ctx, bias_.value, in_features_, init::derive_seed(seed, 1));
  }
}

Tensor Linear::forward(Context& ctx, const Tensor& x, bool train) {
  const Tensor xc = autocast::input(ctx, x);
  Tensor y = Tensor::empty(output_shape(x.shape()), ctx, xc.dtype());
  ctx.backend().gemm(ctx, false, true, 1.0f, xc, autocast::weight(ctx, weight_, xc.dtype()), 0.0f, y);
  if (has_bias_) ctx.backend().bias_add(ctx, y, bias_.value);
  x_ = train ? xc : Tensor();
  input_dtype_ = x.dtype();
  return y;
}

Tensor Linear::backward(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(x_.defined(), "Linear::backward: no saved input (forward was not run with train=true)");
  const Tensor dyc = dy.cast(ctx, x_.dtype());
  if (!frozen_) {
    // dW += dyᵀ x, accumulated in the f32 master gradient whatever the compute dtype.
    ctx.backend().gemm(ctx, true, false, 1.0f, dyc, x_, 1.0f, weight_.grad);
    if (has_bias_) ctx.backend().bias_grad(ctx, dyc, bias_.grad, true);
  }
  Tensor dx;
  if (input_grad_) {
    dx = Tensor::empty(x_.shape(), ctx, x_.dtype());
    ctx.backend().gemm(ctx, false, false, 1.0f, dyc, autocast::weight(ctx, weight_, x_.dtype()), 0.0f, dx);  // dy W
    dx = dx.cast(ctx, input_dtype_);
  }
  x_ = Tensor();
  return dx;
}

}  // namespace cudl
