// train()'s configuration and results outside the loop: the checks of a TrainConfig, the
// loader settings it implies and the metrics document of a run.
#include <cmath>

#include "cudl/models/train/hooks.hpp"
#include "cudl/models/train/train.hpp"

namespace cudl {

Target parse_target(const std::string& name) {
  if (name == "labels") return Target::labels;
  if (name == "input") return Target::input;
  CUDL_THROW("unknown target '{}': expected labels or input", name);
}

std::string target_name(Target target) { return target == Target::input ? "input" : "labels"; }

const EpochMetrics* TrainResult::best() const {
  for (const auto& m : epochs)
    if (m.epoch == best_epoch) return &m;
  return nullptr;
}

nlohmann::json metrics_document(const TrainResult& r) {
  nlohmann::json j = {{"model", r.model},          {"device", r.device},         {"precision", r.precision},
                      {"params", r.params},        {"train_size", r.train_size}, {"val_size", r.val_size},
                      {"test_size", r.test_size},  {"target", r.target},         {"monitor", r.monitor},
                      {"best_epoch", r.best_epoch}};
  if (!r.stopped.empty()) j["stopped"] = r.stopped;
  j["epochs"] = train_hooks::history_json(r.epochs);
  return j;
}

LoaderOptions training_loader_options(const FitOptions& options) {
  LoaderOptions lo;
  lo.batch_size = options.batch_size;
  lo.shuffle = true;
  lo.seed = options.seed;
  lo.augment = options.augment;
  lo.workers = options.workers;
  lo.prefetch = options.prefetch;
  lo.resident = options.resident_data;
  // Data parallel: each rank's loader decodes only its rows of every global batch.
  if (options.comm != nullptr) {
    lo.shard_index = options.comm->rank();
    lo.shard_count = options.comm->size();
  }
  return lo;
}

void check_train_config(const TrainConfig& o) {
  CUDL_CHECK(std::isfinite(o.bucket_mb) && o.bucket_mb >= 0 && o.bucket_mb <= 1e6,
             "train: bucket_mb must be a finite number in [0, 1e6] (0: one all-reduce after backward), got {}",
             o.bucket_mb);
  CUDL_CHECK(o.accumulate_steps >= 1 && o.accumulate_steps <= 1'000'000,
             "train: accumulate_steps must be a whole number in [1, 1000000] (1: no accumulation), got {}",
             o.accumulate_steps);
  CUDL_CHECK(o.epochs > 0 && o.batch_size > 0, "train: epochs ({}) and batch size ({}) must be positive", o.epochs,
             o.batch_size);
  const OptimizerConfig& oc = o.optimizer;
  CUDL_CHECK(std::isfinite(oc.lr) && oc.lr > 0, "train: the learning rate must be a finite number > 0, got {}", oc.lr);
  CUDL_CHECK(std::isfinite(oc.momentum) && oc.momentum >= 0 && oc.momentum <= 1,
             "train: momentum must be a finite number in [0, 1], got {}", oc.momentum);
  CUDL_CHECK(std::isfinite(oc.weight_decay) && oc.weight_decay >= 0,
             "train: weight decay must be a finite number >= 0, got {}", oc.weight_decay);
  CUDL_CHECK(o.early_stopping_patience >= 0 && o.plateau_patience >= 0 && o.max_steps >= 0 &&
                 o.finite_check_every >= 0 && o.eval_test_every >= 0,
             "train: early-stopping patience ({}), plateau patience ({}), max steps ({}), the check interval ({}) and "
             "the test interval ({}) must be >= 0",
             o.early_stopping_patience, o.plateau_patience, o.max_steps, o.finite_check_every, o.eval_test_every);
  CUDL_CHECK(std::isfinite(o.plateau_factor) && o.plateau_factor > 0 && o.plateau_factor < 1,
             "train: the plateau factor must be in (0, 1), got {}", o.plateau_factor);
  CUDL_CHECK(std::isfinite(o.clip_grad_norm) && o.clip_grad_norm >= 0,
             "train: the gradient-norm limit must be a finite number >= 0, got {}", o.clip_grad_norm);
}

}  // namespace cudl
