#include "cudl/layers/loss_scaler.hpp"

#include <algorithm>
#include <cmath>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

namespace {
void check_scale(float scale) {
  CUDL_CHECK(std::isfinite(scale) && scale >= 1.0f, "loss scaler: the scale must be a finite number >= 1, got {}",
             scale);
}
}  // namespace

LossScaler::LossScaler(Context& ctx, LossScalerConfig config)
    : config_(config), scale_(config.init_scale), sum_(Tensor::empty({1}, ctx)) {
  check_scale(config.init_scale);
  CUDL_CHECK(config.growth_factor >= 1.0f && config.backoff_factor > 0.0f && config.backoff_factor < 1.0f &&
                 config.growth_interval > 0,
             "loss scaler: growth factor {} must be >= 1, backoff {} in (0, 1) and the interval {} positive",
             config.growth_factor, config.backoff_factor, config.growth_interval);
}

void LossScaler::set_scale(float scale) {
  check_scale(scale);
  scale_ = scale;
  good_in_a_row_ = 0;
}

bool LossScaler::unscale(Context& ctx, Tensor& grads) {
  // A sum is finite exactly when every term is (it accumulates in double, which no f32 block can
  // overflow), so one reduction finds any inf or NaN.
  ctx.backend().sum(ctx, grads, sum_);
  if (!std::isfinite(sum_.item(ctx))) {
    ++skipped_;
    good_in_a_row_ = 0;
    // Never below 1: a scale that small means the gradients overflow unscaled, which the
    // divergence guard reports, not this.
    scale_ = std::max(1.0f, scale_ * config_.backoff_factor);
    return false;
  }
  // The scale is a power of two, so dividing by it is exact.
  ctx.backend().scale(ctx, grads, 1.0f / scale_);
  if (++good_in_a_row_ >= config_.growth_interval) {
    good_in_a_row_ = 0;
    const float grown = scale_ * config_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;
  }
  return true;
}

}  // namespace cudl
