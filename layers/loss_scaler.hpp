#pragma once
// Dynamic loss scaling for fp16 training (PyTorch's torch.amp.GradScaler, same defaults): the loss
// gradient is multiplied by `scale` so that small gradients survive fp16's narrow range on the way
// back; before the optimizer runs, the f32 gradient block is checked for inf/NaN (one reduction)
// and divided by the scale. A step whose gradients overflowed never reaches the weights: it is
// skipped and the scale halved; after `growth_interval` good steps in a row the scale doubles.
// bf16 needs none of this (it has fp32's exponent range).
#include <cstdint>

#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

struct LossScalerConfig {
  float init_scale = 65536.0f;  // 2^16
  float growth_factor = 2.0f;
  float backoff_factor = 0.5f;
  std::int64_t growth_interval = 2000;
};

class LossScaler {
 public:
  LossScaler(Context& ctx, LossScalerConfig config = {});

  // What the loss's upstream gradient is multiplied by this step.
  float scale() const { return scale_; }
  // After backward (and any all-reduce): true when every gradient is finite, and then the block is
  // unscaled in place, ready for clipping and the optimizer; false when the step must be skipped
  // (the gradients are left as they are, the caller zeroes them next step as always). Updates the
  // scale either way. Reads one value from the device.
  bool unscale(Context& ctx, Tensor& grads);

  std::int64_t skipped_steps() const { return skipped_; }
  // Restores a scale saved with a checkpoint, so a resumed fp16 run does not start over at 2^16.
  void set_scale(float scale);

 private:
  LossScalerConfig config_;
  float scale_;
  std::int64_t good_in_a_row_ = 0, skipped_ = 0;
  Tensor sum_;
};

}  // namespace cudl
