#pragma once
// The training loop's hooks (models/train/train.hpp), each small and blind to the task: the
// metrics history as JSON, the resume checks, the non-finite guard, gradient clipping and the
// monitor behind the best keeper, early stopping and reduce-on-plateau.
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/train/train.hpp"

namespace cudl::train_hooks {

// Epochs as the metrics file and the checkpoints' extra.metrics hold them, and back: absent
// fields (a split not scored, a task without accuracy) stay absent. `what` names the source in
// errors; every value is checked (a hand-edited epoch of 1e30 or an accuracy of 7 is refused).
nlohmann::json history_json(const std::vector<EpochMetrics>& history);
std::vector<EpochMetrics> history_from_json(const std::string& text, const std::string& what);

// Where a resumed run starts, checked against what this run asks: it must be able to continue.
void check_resume(const CheckpointInfo& info, const TrainConfig& o, std::int64_t train_size,
                  const std::vector<EpochMetrics>& history, std::int64_t steps);

// The best epoch by the monitored metric and the epochs since it, for the best keeper, early
// stopping and reduce-on-plateau. Replayed over a resumed run's history, so a resumed run decides
// exactly as the uninterrupted one would. Improvement is strictly better (Keras' min_delta 0).
class Monitor {
 public:
  // `name`: the EpochMetrics field ("val_accuracy", "val_loss", "train_loss").
  Monitor(std::string name, bool higher_is_better) : name_(std::move(name)), higher_(higher_is_better) {}
  const std::string& name() const { return name_; }
  double value(const EpochMetrics& m) const;
  // Returns true when `m` is the new best.
  bool observe(const EpochMetrics& m, const TrainConfig& o);
  bool should_stop(const TrainConfig& o) const {
    return o.early_stopping_patience > 0 && since_best_ >= o.early_stopping_patience;
  }
  std::int64_t best_epoch() const { return best_epoch_; }
  double lr_scale() const { return lr_scale_; }

 private:
  std::string name_;
  bool higher_;
  double best_ = std::numeric_limits<double>::quiet_NaN();
  std::int64_t best_epoch_ = 0;
  std::int64_t since_best_ = 0;    // epochs in a row without improvement
  std::int64_t plateau_wait_ = 0;  // the same, reset when the learning rate drops
  double lr_scale_ = 1.0;
};

// Global L2-norm clipping over the whole gradient block, on the device: Σg² in one fused
// reduction (accumulated in double), the factor min(1, max / (‖g‖ + 1e-6)) (PyTorch's
// clip_grad_norm_) minus one in a one-thread scalar op, and g += (factor - 1)·g. Nothing is read
// back, so there is no host sync; a factor of exactly 1 leaves the gradients bit for bit unchanged.
class GradClipper {
 public:
  GradClipper(Context& ctx, double max_norm);
  void clip(Context& ctx, Tensor& grads);

 private:
  Tensor sum_sq_, max_norm_, delta_;
};

// The non-finite guard. Every step it records, on the device, the batch loss and the sum of the
// parameters after the update (a sum is finite exactly when every term is: it accumulates in
// double, which 3.4e38 * 2^31 parameters cannot overflow) into a ring of `every` slots; every
// `every` steps, at the epoch's end and at the last step the ring is read in one copy. So the
// GPU waits for no more reads than the progress bar already does, yet the step named is exact.
class FiniteGuard {
 public:
  FiniteGuard(Context& ctx, std::int64_t every) : every_(every), ring_(Tensor::empty({2 * every}, ctx)) {}
  // `done`: 1-based step within the epoch, just taken.
  void record(Context& ctx, std::int64_t done, const Tensor& batch_loss, const Tensor& params);
  bool due(std::int64_t done, bool last) const { return last || done % every_ == 0; }
  // Reads the slots of steps since the last check (those up to `done`); on a non-finite value
  // throws naming the epoch, the step and the last good checkpoint.
  void check(Context& ctx, std::int64_t epoch, std::int64_t done, std::int64_t batches, std::int64_t steps_before_epoch,
             const std::string& last_good) const;

 private:
  std::int64_t every_;
  Tensor ring_;  // [loss, Σparams] per slot
};

}  // namespace cudl::train_hooks
