#include "cudl/layers/lbfgs.hpp"

#include "cudl/engine/backend.hpp"
#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"

namespace cudl {

Lbfgs::Lbfgs(Context& ctx, const Shape& shape, LbfgsOptions options) : options_(options), shape_(shape) {
  CUDL_CHECK(options.history >= 1, "Lbfgs: history must be >= 1, got {}", options.history);
  const std::int64_t n = shape.numel();
  s_ = Tensor::zeros(Shape{options.history, n}, ctx);
  y_ = Tensor::zeros(Shape{options.history, n}, ctx);
  rho_ = Tensor::zeros(Shape{options.history}, ctx);
  alpha_ = Tensor::zeros(Shape{options.history}, ctx);
  g_prev_ = Tensor::zeros(shape, ctx);
  d_ = Tensor::zeros(shape, ctx);
  scalars_ = Tensor::zeros(Shape{4}, ctx);
}

Tensor Lbfgs::s_slot(int i) const { return s_.view(static_cast<std::int64_t>(i) * shape_.numel(), shape_); }
Tensor Lbfgs::y_slot(int i) const { return y_.view(static_cast<std::int64_t>(i) * shape_.numel(), shape_); }

void Lbfgs::step(Context& ctx, Tensor& x, const Tensor& grad) {
  check::same_shape("Lbfgs::step", "x", x, "grad", grad);
  CUDL_CHECK(x.shape() == shape_, "Lbfgs::step: x has shape {}, the optimizer was made for {}", x.shape(), shape_);
  Backend& be = ctx.backend();
  Tensor gamma = scalar(scalars_, 0), ys = scalar(scalars_, 1), yy = scalar(scalars_, 2), tmp = scalar(scalars_, 3);
  const int m = options_.history;

  if (iterations_ == 0) {
    // d = -min(1, 1/Σ|g|) g: Torch's first step length folded into the direction.
    be.abs_sum(ctx, grad, tmp);
    be.scalar_op(ctx, ScalarOp::first_step, tmp, tmp, tmp);
    be.fill(ctx, d_, 0.0f);
    be.axpy_scalar(ctx, -1.0f, tmp, grad, d_);
    be.fill(ctx, gamma, 1.0f);
  } else {
    // The newest slot already holds s = x_k - x_{k-1}; y = g_k - g_{k-1}.
    Tensor s = s_slot(newest_), y = y_slot(newest_);
    be.copy(ctx, grad, y);
    be.axpy(ctx, -1.0f, g_prev_, y);
    be.dot(ctx, y, s, ys);
    be.dot(ctx, y, y, yy);
    Tensor rho_new = scalar(rho_, newest_);
    be.scalar_op(ctx, ScalarOp::safe_recip, ys, ys, rho_new);
    be.scalar_op(ctx, ScalarOp::safe_ratio, ys, yy, gamma);
    if (count_ < m) ++count_;

    // Two-loop recursion: q = -g; newest to oldest: α_i = ρ_i s_iᵀq, q -= α_i y_i.
    Tensor q = d_;
    be.copy(ctx, grad, q);
    be.scale(ctx, q, -1.0f);
    for (int k = 0; k < count_; ++k) {
      const int i = ((newest_ - k) % m + m) % m;
      Tensor a = scalar(alpha_, i);
      be.dot(ctx, s_slot(i), q, tmp);
      be.scalar_op(ctx, ScalarOp::mul, scalar(rho_, i), tmp, a);
      be.axpy_scalar(ctx, -1.0f, a, y_slot(i), q);
    }
    // r = H0 q with H0 = γ I (r reuses g_prev_, no longer needed); oldest to newest:
    // β = ρ_i y_iᵀr, r += (α_i - β) s_i.
    Tensor r = g_prev_;
    be.fill(ctx, r, 0.0f);
    be.axpy_scalar(ctx, 1.0f, gamma, q, r);
    for (int k = count_ - 1; k >= 0; --k) {
      const int i = ((newest_ - k) % m + m) % m;
      be.dot(ctx, y_slot(i), r, tmp);
      be.scalar_op(ctx, ScalarOp::mul, scalar(rho_, i), tmp, tmp);
      be.scalar_op(ctx, ScalarOp::sub, scalar(alpha_, i), tmp, tmp);
      be.axpy_scalar(ctx, 1.0f, tmp, s_slot(i), r);
    }
    be.copy(ctx, r, d_);
  }
  be.copy(ctx, grad, g_prev_);
  // The step s = lr d goes into the next slot (the oldest pair's once the history is full); the
  // next call completes the pair with its y.
  newest_ = (newest_ + 1) % m;
  Tensor s = s_slot(newest_);
  be.copy(ctx, d_, s);
  be.scale(ctx, s, options_.lr);
  be.axpy(ctx, 1.0f, s, x);
  ++iterations_;
}

}  // namespace cudl
