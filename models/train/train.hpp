#pragma once
// The one training loop (issue 21): train(ctx, model, task, data, config) runs every supervised
// task cudl has. The loop owns what every task shares: the seeded loader, the optimizer step and
// its schedule, resume, the non-finite guard, gradient clipping, fp16 loss scaling, data-parallel
// ranks, model selection (best epoch, early stopping, plateaus), checkpoints and the metrics
// JSON. A Task owns only what differs: the loss and its gradient, the per-batch accuracy (when the
// task has one), the evaluation of a split and what its checkpoints record.
// (tiny-cuda-nn's Trainer(model, optimizer, loss) and dlib's dnn_trainer are the same idea.)
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cudl/engine/distributed.hpp"
#include "cudl/engine/io/augment.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/layers/loss_scaler.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/network/sequential.hpp"

namespace cudl {

struct EpochMetrics {
  std::int64_t epoch = 0;  // 1-based
  double train_loss = 0, train_accuracy = 0;
  bool has_val = false;  // a validation split was held out
  double val_loss = 0, val_accuracy = 0;
  // Whether the test split was scored after this epoch: every epoch without a validation split,
  // else at the end (and every eval_test_every epochs), as Keras' evaluate() after fit().
  bool has_test = true;
  double test_loss = 0, test_accuracy = 0;
  // The *_accuracy fields mean something (classification); false for a task without accuracy.
  bool has_accuracy = true;
  // The task's own metrics by their JSON names (reconstruction: test_psnr, val_psnr, mean_image_mse...).
  std::map<std::string, double> extra;
  double seconds = 0, images_per_second = 0;
  double lr = 0;           // the learning rate of the epoch's last step
  std::int64_t steps = 0;  // optimizer steps taken by the end of this epoch (all epochs)
  // fp16 only (0 otherwise): the loss scale at the epoch's end and the steps it skipped because
  // their gradients overflowed (layers/loss_scaler.hpp).
  double loss_scale = 0;
  std::int64_t skipped_steps = 0;
};

// What the progress display needs, reported every few steps and at the end of each epoch.
struct TrainProgress {
  std::int64_t epoch = 0, epochs = 0;
  std::int64_t batch = 0, batches = 0;  // optimizer steps done in this epoch, of (batches without accumulation)
  double loss = 0, accuracy = 0;        // running means over this epoch (accuracy: 0 without one)
  double images_per_second = 0;
  double elapsed_seconds = 0;
  double lr = 0;                   // the learning rate of the last step
  double loss_scale = 0;           // fp16: the current loss scale (0: no loss scaling)
  std::int64_t skipped_steps = 0;  // fp16: steps skipped in this epoch (gradients overflowed)
  bool epoch_done = false;
};

struct TrainResult;

// What the model learns to output: the labels (classification) or its input (reconstruction).
enum class Target { labels, input };
Target parse_target(const std::string& name);  // "labels" | "input"; throws listing them
std::string target_name(Target target);

// The training configuration (train()'s and fit()'s): one struct, checked once by train().
struct FitOptions {
  std::string model_name;
  std::int64_t epochs = 10;
  std::int64_t batch_size = 128;
  // Gradient accumulation: sum the gradients of this many consecutive batches of batch_size (the
  // micro-batches), then take one optimizer step (and, data parallel, one all-reduce), with the
  // loss weighted so the step is the one of a batch of accumulate_steps * batch_size rows (the
  // mean over all of them). Steps, max_steps, the schedule, progress and checkpoints count
  // optimizer steps. An epoch's batches that do not fill the last group make a shorter group:
  // its step is the mean over the rows it has (as an epoch's last, partial batch is without
  // accumulation). BatchNorm statistics are the micro-batches' own.
  std::int64_t accumulate_steps = 1;
  OptimizerConfig optimizer;
  Schedule schedule = Schedule::onecycle;
  std::uint64_t seed = 1;
  std::string save_path;     // checkpoint written atomically after every epoch
  std::string resume_path;   // continue from this checkpoint
  std::string metrics_path;  // JSON rewritten atomically after every epoch
  Augment augment;           // training-time augmentation (engine/io/augment.hpp); none by default
  int workers = 0;           // the training loader's threads (0: default_loader_workers())
  int prefetch = 0;          // batches staged ahead of the step (0: the loader's default)
  // Keep the training set on the device and gather each batch there (engine/io/resident.hpp):
  // automatic on a GPU when it fits; the batches, and so the run, are the same either way.
  ResidentData resident_data = ResidentData::automatic;
  std::map<std::string, std::string>
      metadata;  // saved with every checkpoint as extra.<key> (models/zoo/preprocess.hpp)
  std::function<void(const TrainProgress&)> on_progress;

  // The epoch with the best monitored metric (TrainResult::monitor: the task's validation metric
  // with a validation split, else the training loss; never the test set) is saved here,
  // atomically; its checkpoint's metadata names the epoch (extra.best_epoch).
  std::string save_best_path;
  // Stop after this many epochs in a row without a better monitored metric (0: never).
  std::int64_t early_stopping_patience = 0;
  // Multiply the learning rate by plateau_factor after this many epochs in a row without a better
  // monitored metric (0: never), then wait as many again (Keras' ReduceLROnPlateau, cooldown 0).
  std::int64_t plateau_patience = 0;
  double plateau_factor = 0.1;
  // With a validation split, also score the test split every this many epochs (0: only at the
  // end). Without one the test split is scored every epoch (for the curves; it picks nothing).
  std::int64_t eval_test_every = 0;
  // Scale the gradient block so its global L2 norm is at most this (0: no clipping), on the device.
  double clip_grad_norm = 0;
  // Stop after this many optimizer steps in all (0: epochs * batches); the schedule spans them.
  std::int64_t max_steps = 0;
  // Steps between host reads of the non-finite guard (0: 1 on the CPU, kGpuFiniteCheckEvery on a
  // GPU, where each read waits for the device). The step it names is exact either way.
  std::int64_t finite_check_every = 0;
  // Called after each epoch's metrics JSON and checkpoints are written (curves, logs).
  std::function<void(const TrainResult&)> on_epoch_end;
  // Called after every optimizer step with the global step count (tests: a seam to stop a run
  // at a chosen step, as a kill would).
  std::function<void(std::int64_t step)> after_step;
  // fp16 (ctx.precision()): dynamic loss scaling's settings; unused in other precisions.
  LossScalerConfig loss_scaling;
  // Data-parallel training (models/train/data_parallel.hpp): this process is one of comm->size() ranks,
  // each training on its shard of every global batch of batch_size images. nullptr: one process.
  // Writers (save paths, metrics, callbacks) are the caller's to give to one rank only.
  Communicator* comm = nullptr;
  // With comm: the gradient all-reduce goes in buckets of about this many MB (fp32 gradients), each
  // started as soon as backward has produced it, so it runs under the rest of backward
  // (models/train/gradient_buckets.hpp); 0: one all-reduce of the whole block after backward.
  double bucket_mb = 25;
  // With comm: the sharded update (ZeRO stage 1): each bucket is reduce-scattered, each rank runs
  // the optimizer on its 1/N of the parameters only and the updated pieces are all-gathered, so
  // the update's work falls with the rank count; the same sums and the same update as the
  // all-reduce. Where the communicator cannot (NCCL, for now), with clip_grad_norm or with fp16's
  // loss scaling the step all-reduces (shards_update, models/train/data_parallel.hpp).
  bool shard_update = true;
};
using TrainConfig = FitOptions;

// Throws naming the setting and what was expected for a configuration train() cannot run.
void check_train_config(const TrainConfig& config);

// How often the guard reads the device on a GPU, in steps (also the progress bar's interval).
constexpr std::int64_t kGpuFiniteCheckEvery = 20;

struct TrainResult {
  std::vector<EpochMetrics> epochs;
  std::int64_t params = 0;
  std::string device;
  std::string model;
  std::string target = "labels";   // the task's (Task::target)
  std::string precision = "fp32";  // ctx.precision() of the run
  std::int64_t train_size = 0, val_size = 0, test_size = 0;
  std::int64_t best_epoch = 0;  // by the monitored metric (0: none yet)
  std::string monitor;          // "val_accuracy", "val_loss" or "train_loss"
  std::string stopped;          // why the run ended early: "early_stopping", "max_steps" (empty: it did not)
  double wall_seconds = 0;      // this invocation of train
  std::int64_t images_trained = 0;
  std::size_t pool_peak_bytes = 0;  // the device allocator's peak allocated bytes
  // The metrics of the best epoch (nullptr: none); with save_best_path its test_* are the best
  // weights' test scores even when the test split was not scored that epoch.
  const EpochMetrics* best() const;
};

// A split's evaluation by a task.
struct SplitScores {
  double loss = 0, accuracy = 0;        // accuracy: 0 for a task without one
  std::map<std::string, double> extra;  // the task's own metrics, unprefixed ("psnr", "mse")
  std::int64_t samples = 0;
};

// What a supervised task is: its loss, gradient and metrics. The loop calls these and nothing else
// that depends on the task.
class Task {
 public:
  virtual ~Task() = default;
  // The metrics file's and checkpoints' target (target_name: "labels", "input").
  virtual Target target() const = 0;
  virtual bool has_accuracy() const = 0;
  // The metric that picks the best epoch with a validation split ("val_accuracy", "val_loss")
  // and whether higher is better.
  virtual std::pair<std::string, bool> validation_monitor() const = 0;
  // Checks a split against the model before any step (`split`: "train", "validation", "test").
  virtual void check(const Sequential& model, const Dataset& data, std::string_view split,
                     const std::string& model_name) const = 0;
  // Called once before the first step, with the training and test splits (baselines).
  virtual void prepare(Context& /*ctx*/, const Dataset& /*train*/, const Dataset& /*test*/) {}
  // The batch's loss into `loss` ([1]), its accuracy into `accuracy` ([1]; has_accuracy() only),
  // and the gradient of dloss * loss with respect to `output`.
  virtual Tensor loss_and_gradient(Context& ctx, const Tensor& output, const Batch& batch, float dloss, Tensor& loss,
                                   Tensor& accuracy) = 0;
  // The model's scores on `data` (this rank's part, combined over the ranks with comm).
  virtual SplitScores evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
                               Communicator* comm) = 0;
  // After an epoch's evaluations: metrics not of a split (baselines), the sample grid.
  virtual void end_epoch(Context& /*ctx*/, Sequential& /*model*/, EpochMetrics& /*m*/) {}
  // Keys every checkpoint of the run records (reconstruction: extra.target, extra.loss).
  virtual void add_checkpoint_metadata(std::map<std::string, std::string>& /*extra*/) const {}
};

// The splits a run uses; validation may be empty (no validation split).
struct TrainData {
  const Dataset& train;
  const Dataset& validation;
  const Dataset& test;
};

// Trains `model` (built on ctx's device) on data.train for `task`, evaluating after each epoch
// as FitOptions says, with checkpoints, resume and the guards above.
TrainResult train(Context& ctx, Sequential& model, Task& task, const TrainData& data, const TrainConfig& config);

// The metrics file `--metrics-json` writes and `cudl plot` reads: model, device, params, the split
// sizes, the target, the monitored metric, the best epoch and every epoch's metrics.
nlohmann::json metrics_document(const TrainResult& result);

// The training loader's settings: shuffled, seeded, augmented and threaded as `options` say.
LoaderOptions training_loader_options(const FitOptions& options);

}  // namespace cudl
