#pragma once
// Optimizers over a model's contiguous parameter block: one fused backend call per step updates
// every parameter (SGD with momentum / Nesterov / weight decay, Adam, AdamW), plus the
// learning-rate schedules the CLI offers.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/layers/layer.hpp"

namespace cudl {

enum class OptimizerKind { sgd, adam, adamw };
OptimizerKind parse_optimizer(const std::string& name);  // "sgd" | "adam" | "adamw"
std::string optimizer_name(OptimizerKind kind);

// The CLI's default learning rates, chosen on MNIST with mnist_cnn and a one-cycle schedule
// (one CPU epoch: 97.2% test accuracy at 1e-3, 98.4% at 3e-3 and 6e-3 with Adam).
float default_learning_rate(OptimizerKind kind);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::adam;
  float lr = 3e-3f;
  float momentum = 0.9f;  // SGD only
  bool nesterov = false;  // SGD only
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // Adam/AdamW
};

class Optimizer {
 public:
  // State lives on ctx's device, zero-initialised, laid out like the model's parameter block.
  // `model` (a Sequential) must outlive the optimizer.
  Optimizer(Context& ctx, ParameterBlocks& model, OptimizerConfig config);

  // Applies one update with learning rate `lr` (the schedule's value for this step) from the
  // gradients currently in the model's gradient block: prepare(ctx, lr), then apply(ctx).
  void step(Context& ctx, float lr);
  // The two halves of step(), for a step replayed as a CUDA graph (engine/step_graph.hpp):
  // prepare() is host work, run before every step, replayed or not: it counts the step and writes
  // this step's values (the rate, Adam's bias corrections: OptimizerScalar) into a small tensor on
  // the device. apply() launches the update, which reads them there, so a graph that recorded it
  // applies each step's values. Call apply() once after each prepare(), on the same stream.
  void prepare(Context& ctx, float lr);
  void apply(Context& ctx);
  // apply() on elements [begin, end) of the parameter block only (and of the gradients and state
  // laid out like it): the sharded update (data parallel) updates each rank's piece; pieces that
  // cover the block give apply()'s bits (the update is element by element).
  void apply(Context& ctx, std::int64_t begin, std::int64_t end);

  const OptimizerConfig& config() const { return config_; }
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t steps) { steps_ = steps; }
  // Zeroes the state (momentum, Adam's moments) of frozen layers' parameters. Frozen layers get no
  // gradient, so with zero state their update is zero; state restored from a checkpoint of a run
  // that trained them would otherwise keep moving them. Call after loading state.
  void clear_frozen_state(Context& ctx);
  // Named flat state tensors ("exp_avg", "exp_avg_sq" or "momentum_buffer"), each shaped like
  // the parameter block; checkpoints save and restore them.
  std::vector<std::pair<std::string, Tensor*>> state();

 private:
  ParameterBlocks* model_;
  OptimizerConfig config_;
  std::int64_t steps_ = 0;
  Tensor first_, second_;  // SGD: momentum buffer; Adam: exp_avg, exp_avg_sq
  Tensor scalars_;         // f32 [kOptimizerScalars] on the device: the prepared step's values
};

enum class Schedule { none, step, cosine, onecycle };
Schedule parse_schedule(const std::string& name);  // "none" | "step" | "cosine" | "onecycle"
std::string schedule_name(Schedule s);

// The learning rate at 0-based `step` of `total_steps` for base rate `lr`:
// none: constant; step: ×0.1 after each third of training; cosine: half a cosine from lr to 0;
// onecycle: PyTorch's OneCycleLR defaults (30% warm-up from lr/25 to lr, cosine down to lr/25e4).
float learning_rate(Schedule schedule, float lr, std::int64_t step, std::int64_t total_steps);

}  // namespace cudl
