// The one training loop (models/train/train.hpp). An epoch is: steps over the shuffled training
// split (forward, the task's loss and gradient, backward, all-reduce, unscale, clip, update,
// guard), then the evaluations the model selection needs, the monitor, the checkpoints and the
// metrics file. Nothing here knows which task it trains.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>

#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/train/data_parallel.hpp"
#include "cudl/models/train/gradient_buckets.hpp"
#include "cudl/models/train/hooks.hpp"
#include "cudl/models/train/step_capture.hpp"
#include "cudl/models/zoo/model_file.hpp"

namespace cudl {

using namespace train_hooks;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// What the monitor watches: the task's validation metric with a validation split, else the
// training loss (Keras' default, monitor="loss"); never the test set.
Monitor make_monitor(const Task& task, bool has_val) {
  if (!has_val) return Monitor("train_loss", false);
  const auto [name, higher] = task.validation_monitor();
  return Monitor(name, higher);
}

// A batch's place in its accumulation group (TrainConfig::accumulate_steps): whether it starts the
// group (the gradients are zeroed) or ends it (the all-reduce and the optimizer step), and its
// share of the group's rows, which weights its loss so the group's summed gradient is the
// gradient of the mean over all its rows.
struct MicroBatch {
  bool first = true, last = true;
  float weight = 1.0f;
};

// Batch `index` (0-based in the epoch) of an epoch of `batches` batches of `batch_size` over
// `samples` rows, in groups of `group`; the epoch's last group holds the batches that are left.
MicroBatch micro_batch(std::int64_t index, std::int64_t batches, std::int64_t batch_size, std::int64_t samples,
                       std::int64_t group) {
  const std::int64_t begin = index / group * group, end = std::min(begin + group, batches);
  const auto rows = [&](std::int64_t from, std::int64_t to) {
    return std::min(to * batch_size, samples) - from * batch_size;
  };
  MicroBatch m;
  m.first = index == begin;
  m.last = index + 1 == end;
  m.weight = static_cast<float>(static_cast<double>(rows(index, index + 1)) / static_cast<double>(rows(begin, end)));
  return m;
}

// One run of train(): its state, and the steps of an epoch as methods.
class Run {
 public:
  Run(Context& ctx, Sequential& model, Task& task, const TrainData& data, const TrainConfig& o)
      : ctx_(ctx),
        model_(model),
        task_(task),
        data_(data),
        o_(o),
        has_val_(data.validation.size() > 0),
        optimizer_(ctx, model, o.optimizer),
        monitor_(make_monitor(task, has_val_)),
        loader_(data.train, ctx, training_loader_options(o)),
        guard_(ctx, o.finite_check_every > 0 ? o.finite_check_every
                    : ctx.device().is_cpu()  ? 1
                                             : kGpuFiniteCheckEvery) {}

  // The model outlives the run: its gradients hook (data parallel) must not call into a dead one.
  ~Run() { model_.set_gradients_ready_hook({}); }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  TrainResult run();

 private:
  // Before a host read of the device: data parallel waits within --dist-timeout (a hung all-reduce
  // ends in an Error, not in a read that never returns).
  void wait_for_device() { o_.comm ? o_.comm->synchronize(ctx_) : ctx_.synchronize(); }
  void describe();
  void resume();
  EpochMetrics train_epoch(std::int64_t epoch);
  std::int64_t step(const Batch& batch, const MicroBatch& micro);
  void forward_backward(const Batch& local, const MicroBatch& micro);
  bool captured_step(const Batch& batch);
  void progress(std::int64_t epoch, std::int64_t done, Clock::time_point start, std::int64_t samples, bool last);
  TrainProgress report(std::int64_t epoch, std::int64_t done, double loss, double accuracy, double seconds,
                       double images_per_second, bool epoch_done) const;
  void evaluate_validation(EpochMetrics& m);
  void evaluate_test(EpochMetrics& m, bool last_epoch);
  void save(const EpochMetrics& m, bool improved);
  void score_best_on_test();

  Context& ctx_;
  Sequential& model_;
  Task& task_;
  const TrainData& data_;
  const TrainConfig& o_;
  const bool has_val_;
  Optimizer optimizer_;
  Monitor monitor_;
  DataLoader loader_;
  FiniteGuard guard_;
  std::optional<GradClipper> clipper_;
  std::optional<LossScaler> scaler_;
  std::optional<GradientBuckets> buckets_;  // data parallel: the all-reduce, overlapped with backward
  // --cuda-graphs: the step replayed as a CUDA graph (for batches of the first batch's shape),
  // reading its batch from staged_, whose addresses the graph recorded.
  std::optional<TrainStepGraph> graph_;
  Batch staged_;
  TrainResult result_;
  std::int64_t first_epoch_ = 0, batches_ = 0, total_steps_ = 0, skipped_before_ = 0;
  std::int64_t steps_per_epoch_ = 0;  // optimizer steps: batches_ in groups of accumulate_steps
  bool sync_ = false;                 // this backward ends a group: the gradients hook starts the all-reduce
  float lr_ = 0;
  Tensor loss_sum_, correct_, batch_loss_, batch_accuracy_;
  Tensor step_loss_;        // the mean loss over the rows of the optimizer step's batches (the guard's)
  Tensor best_parameters_;  // save-best runs whose test split was not scored at the best epoch
  // How a stopped run ends its message: which checkpoint on disk is the last good one.
  std::string last_good_;
};

void Run::describe() {
  result_.params = model_.parameter_count();
  result_.device = ctx_.device().str();
  result_.model = o_.model_name;
  result_.target = target_name(task_.target());
  result_.precision = std::string(precision_name(ctx_.precision()));
  result_.train_size = data_.train.size();
  result_.val_size = data_.validation.size();
  result_.test_size = data_.test.size();
  result_.monitor = monitor_.name();
  last_good_ = o_.save_path.empty() ? std::string("stopped; no checkpoint is kept (no --save)")
                                    : fmt::format("stopped before saving it to '{}'", o_.save_path);
}

void Run::resume() {
  CheckpointInfo info = load_checkpoint(o_.resume_path, ctx_, model_, &optimizer_);
  // A model file may be spelled another way (./net.json, /abs/net.json, a copy): its fingerprint decides.
  CUDL_CHECK(same_model_name(info, o_.model_name), "--resume: '{}' holds a {} checkpoint, but the model is {}",
             o_.resume_path, info.model, o_.model_name);
  optimizer_.clear_frozen_state(ctx_);  // --freeze on resume: restored moments must not move frozen weights
  first_epoch_ = info.epoch;
  last_good_ = fmt::format("stopped; the last good checkpoint is '{}' (epoch {})", o_.resume_path, info.epoch);
  const auto target = info.extra.find("target");
  const std::string saved_target = target == info.extra.end() ? std::string("labels") : target->second;
  CUDL_CHECK(saved_target == target_name(task_.target()),
             "--resume: '{}' was trained with target {}, this run's target is {}", o_.resume_path, saved_target,
             target_name(task_.target()));
  if (auto it = info.extra.find("metrics"); it != info.extra.end())
    result_.epochs = history_from_json(
        it->second,
        fmt::format("--resume: '{}': metadata extra.metrics is not the metrics list cudl writes", o_.resume_path));
  if (auto it = info.extra.find("model_fingerprint"); it != info.extra.end())
    CUDL_CHECK(it->second == fmt::format("{:016x}", model_fingerprint(model_)),
               "--resume: '{}' holds another model than {}: their layers differ", o_.resume_path, o_.model_name);
  check_resume(info, o_, data_.train.size(), result_.epochs, optimizer_.steps());
  // fp16: continue at the loss scale the run had reached, not at the initial one (which would
  // skip steps again until it fell back to where it was).
  if (auto it = info.extra.find("loss_scale"); it != info.extra.end() && scaler_) {
    const double scale = std::strtod(it->second.c_str(), nullptr);
    CUDL_CHECK(std::isfinite(scale) && scale > 0,
               "--resume: '{}': metadata extra.loss_scale = '{}', expected a number > 0", o_.resume_path, it->second);
    scaler_->set_scale(static_cast<float>(scale));
  }
}

// Forward and backward of this rank's shard of `batch`, its gradients added to the group's; the
// optimizer step after the group's last batch. Returns the shard's rows.
std::int64_t Run::step(const Batch& batch, const MicroBatch& micro) {
  if (captured_step(batch)) return batch.images.dim(0);
  const Batch local = local_shard(model_, batch, o_.comm);  // the batch itself in one process
  forward_backward(local, micro);
  if (!micro.last) return local.images.dim(0);
  if (buckets_) {
    maybe_inject_fault_for_test(*o_.comm, optimizer_.steps() + 1);
    buckets_->finish(ctx_, model_.gradient_block());  // the rest, then waits: averaged over the ranks
  }
  // fp16: a step whose scaled gradients overflowed (in any batch of the group: the sum holds it)
  // is skipped (the same on every rank: the gradients were all-reduced first) and never reaches
  // the weights.
  if (!scaler_ || scaler_->unscale(ctx_, model_.gradient_block())) {
    if (clipper_) clipper_->clip(ctx_, model_.gradient_block());
    lr_ = static_cast<float>(learning_rate(o_.schedule, o_.optimizer.lr, optimizer_.steps(), total_steps_) *
                             monitor_.lr_scale());
    if (buckets_ && buckets_->sharded()) {
      // This rank's pieces hold the averaged gradients: it updates those, each bucket's updated
      // piece sent to the other ranks while it updates the next.
      optimizer_.prepare(ctx_, lr_);
      buckets_->gather(ctx_, model_.parameter_block(),
                       [this](std::int64_t begin, std::int64_t end) { optimizer_.apply(ctx_, begin, end); });
    } else {
      optimizer_.step(ctx_, lr_);
    }
  }
  return local.images.dim(0);
}

// --cuda-graphs: the whole step (forward, loss, backward, clipping, update) as one graph replay,
// where nothing in it needs the host: not with data parallel (the all-reduce), fp16 (the loss
// scaler decides on the host whether the update runs) or accumulation (a group's batches differ),
// and only for batches of the first batch's shape (an epoch's last, partial batch runs plainly).
// Returns false where the step must run plainly.
bool Run::captured_step(const Batch& batch) {
  if (!graph_) return false;
  if (!staged_.images.defined()) {
    staged_.images = Tensor::empty(batch.images.shape(), ctx_, batch.images.dtype());
    staged_.labels = Tensor::empty(batch.labels.shape(), ctx_, batch.labels.dtype());
  }
  if (batch.images.shape() != staged_.images.shape() || batch.labels.shape() != staged_.labels.shape()) return false;
  Backend& be = ctx_.backend();
  be.copy(ctx_, batch.images, staged_.images);
  be.copy(ctx_, batch.labels, staged_.labels);
  staged_.index = batch.index;
  staged_.global_rows = batch.global_rows;
  staged_.row_offset = batch.row_offset;
  // Host work of the update, before the replay: the step count and this step's rate on the device.
  lr_ = static_cast<float>(learning_rate(o_.schedule, o_.optimizer.lr, optimizer_.steps(), total_steps_) *
                           monitor_.lr_scale());
  optimizer_.prepare(ctx_, lr_);
  graph_->run(ctx_, [&] {
    forward_backward(staged_, MicroBatch{});
    if (clipper_) clipper_->clip(ctx_, model_.gradient_block());
    optimizer_.apply(ctx_);
  });
  return true;
}

// Zeroes the gradients at a group's first batch, then forward, the task's loss and gradient, the
// running sums and backward of `local`.
void Run::forward_backward(const Batch& local, const MicroBatch& micro) {
  Backend& be = ctx_.backend();
  if (micro.first) {
    model_.zero_grad(ctx_);
    be.fill(ctx_, step_loss_, 0.0f);
  }
  Tensor output = model_.forward(ctx_, local.images, /*train=*/true);
  // The loss scale is the same over a group: only unscale(), after its last batch, changes it.
  const float dloss = shard_loss_scale(o_.comm, local.images.dim(0), local.global_rows) * micro.weight *
                      (scaler_ ? scaler_->scale() : 1.0f);
  Tensor grad = task_.loss_and_gradient(ctx_, output, local, dloss, batch_loss_, batch_accuracy_);
  const auto n = static_cast<float>(local.images.dim(0));
  be.axpy(ctx_, n, batch_loss_, loss_sum_);
  be.axpy(ctx_, micro.weight, batch_loss_, step_loss_);
  if (task_.has_accuracy()) be.axpy(ctx_, n, batch_accuracy_, correct_);
  // Data parallel: one all-reduce per optimizer step, of the group's summed gradients.
  sync_ = buckets_.has_value() && micro.last;
  if (sync_) buckets_->begin_step();
  model_.backward(ctx_, grad);  // starts the buckets backward has finished (the model's hook)
}

// Collective with several ranks (the running sums are combined), so every rank comes here.
void Run::progress(std::int64_t epoch, std::int64_t done, Clock::time_point start, std::int64_t samples, bool last) {
  if (!(o_.on_progress || o_.comm) || (done % kGpuFiniteCheckEvery != 0 && !last)) return;
  wait_for_device();
  const Sums all = combine_sums(
      o_.comm, {loss_sum_.item(ctx_), task_.has_accuracy() ? correct_.item(ctx_) : 0.0, static_cast<double>(samples)});
  const double seconds = seconds_since(start);
  if (o_.on_progress)
    o_.on_progress(report(epoch + 1, done, all.loss / all.samples, all.correct / all.samples, seconds,
                          all.samples / std::max(seconds, 1e-9), false));
}

TrainProgress Run::report(std::int64_t epoch, std::int64_t done, double loss, double accuracy, double seconds,
                          double images_per_second, bool epoch_done) const {
  TrainProgress p;
  p.epoch = epoch;
  p.epochs = o_.epochs;
  p.batch = done;
  p.batches = steps_per_epoch_;
  p.loss = loss;
  p.accuracy = accuracy;
  p.elapsed_seconds = seconds;
  p.images_per_second = images_per_second;
  p.lr = lr_;
  if (scaler_) {
    p.loss_scale = scaler_->scale();
    p.skipped_steps = scaler_->skipped_steps() - skipped_before_;
  }
  p.epoch_done = epoch_done;
  return p;
}

EpochMetrics Run::train_epoch(std::int64_t epoch) {
  Backend& be = ctx_.backend();
  loader_.start_epoch(epoch);
  be.fill(ctx_, loss_sum_, 0.0f);
  be.fill(ctx_, correct_, 0.0f);
  std::int64_t samples = 0, done = 0;
  const std::int64_t steps_before_epoch = optimizer_.steps();
  skipped_before_ = scaler_ ? scaler_->skipped_steps() : 0;
  const auto start = Clock::now();
  Batch batch;
  // `done` counts optimizer steps; with accumulation each is a group of batches.
  for (std::int64_t index = 0; loader_.next(batch); ++index) {
    const MicroBatch micro = micro_batch(index, batches_, o_.batch_size, data_.train.size(), o_.accumulate_steps);
    samples += step(batch, micro);
    if (!micro.last) continue;
    ++done;
    guard_.record(ctx_, done, step_loss_, model_.parameter_block());
    if (o_.after_step) o_.after_step(optimizer_.steps());
    const bool last = done == steps_per_epoch_ || optimizer_.steps() >= total_steps_;
    if (guard_.due(done, last)) {
      wait_for_device();
      guard_.check(ctx_, epoch + 1, done, steps_per_epoch_, steps_before_epoch, last_good_);
    }
    progress(epoch, done, start, samples, last);
    if (optimizer_.steps() >= total_steps_) break;
  }
  wait_for_device();
  // Over all ranks' shards (this rank's alone in one process).
  const Sums all = combine_sums(
      o_.comm, {loss_sum_.item(ctx_), task_.has_accuracy() ? correct_.item(ctx_) : 0.0, static_cast<double>(samples)});
  EpochMetrics m;
  m.epoch = epoch + 1;
  m.has_accuracy = task_.has_accuracy();
  m.seconds = seconds_since(start);
  m.images_per_second = all.samples / std::max(m.seconds, 1e-9);
  m.train_loss = all.loss / std::max(all.samples, 1.0);
  m.train_accuracy = all.correct / std::max(all.samples, 1.0);
  m.lr = lr_;
  m.steps = optimizer_.steps();
  if (scaler_) {
    m.loss_scale = scaler_->scale();
    m.skipped_steps = scaler_->skipped_steps() - skipped_before_;
  }
  result_.images_trained += static_cast<std::int64_t>(all.samples);
  if (o_.on_progress)
    o_.on_progress(report(m.epoch, done, m.train_loss, m.train_accuracy, m.seconds, m.images_per_second, true));
  return m;
}

void Run::evaluate_validation(EpochMetrics& m) {
  if (!has_val_) return;
  const SplitScores v = task_.evaluate(ctx_, model_, data_.validation, o_.batch_size, o_.comm);
  m.has_val = true;
  m.val_loss = v.loss;
  m.val_accuracy = v.accuracy;
  for (const auto& [key, value] : v.extra) m.extra["val_" + key] = value;
}

// The test split every epoch without a validation split, else at the end and every
// eval_test_every epochs. A non-finite loss means the weights do not work (logits that
// overflow): stop before they overwrite the last good checkpoint.
void Run::evaluate_test(EpochMetrics& m, bool last_epoch) {
  m.has_test = !has_val_ || last_epoch || (o_.eval_test_every > 0 && m.epoch % o_.eval_test_every == 0);
  if (m.has_test) {
    const SplitScores t = task_.evaluate(ctx_, model_, data_.test, o_.batch_size, o_.comm);
    m.test_loss = t.loss;
    m.test_accuracy = t.accuracy;
    for (const auto& [key, value] : t.extra) m.extra["test_" + key] = value;
  }
  task_.end_epoch(ctx_, model_, m);
  CUDL_CHECK(std::isfinite(m.train_loss) && (!m.has_test || std::isfinite(m.test_loss)) &&
                 (!has_val_ || std::isfinite(m.val_loss)),
             "fit: epoch {} ended with train loss {:.4g}{}{}: training diverged (a learning rate too high?); {}",
             m.epoch, m.train_loss, has_val_ ? fmt::format(", validation loss {:.4g}", m.val_loss) : std::string(),
             m.has_test ? fmt::format(" and test loss {:.4g}", m.test_loss) : std::string(), last_good_);
}

void Run::save(const EpochMetrics& m, bool improved) {
  // The sharded update leaves each rank's optimizer state current in its own pieces only; the
  // checkpoint (rank 0's) needs all of it. Every rank comes here at every epoch's end.
  if (buckets_ && buckets_->sharded())
    for (const auto& [name, state] : optimizer_.state()) buckets_->gather(ctx_, *state);
  CheckpointInfo info;
  info.model = o_.model_name;
  info.epoch = m.epoch;
  info.step = optimizer_.steps();
  info.seed = o_.seed;
  info.extra = o_.metadata;
  task_.add_checkpoint_metadata(info.extra);
  info.extra["metrics"] = history_json(result_.epochs).dump();
  // What a resume must match (check_resume) and the layers a renamed model file must still have.
  info.extra["batch_size"] = std::to_string(o_.batch_size);
  info.extra["accumulate_steps"] = std::to_string(o_.accumulate_steps);
  info.extra["train_images"] = std::to_string(data_.train.size());
  info.extra["model_fingerprint"] = fmt::format("{:016x}", model_fingerprint(model_));
  if (scaler_) info.extra["loss_scale"] = fmt::format("{}", scaler_->scale());
  if (!o_.save_path.empty()) {
    save_checkpoint(o_.save_path, ctx_, model_, &optimizer_, info);
    last_good_ = fmt::format("stopped; the last good checkpoint is '{}' (epoch {})", o_.save_path, m.epoch);
  }
  if (improved && !o_.save_best_path.empty()) {
    info.extra["best_epoch"] = std::to_string(m.epoch);
    info.extra["monitor"] = fmt::format("{} {:.6f}", monitor_.name(), monitor_.value(m));
    save_checkpoint(o_.save_best_path, ctx_, model_, &optimizer_, info);
    // Kept for scoring the best weights on the test split at the end, when it is not scored now.
    if (!m.has_test) {
      if (!best_parameters_.defined()) best_parameters_ = Tensor::empty(model_.parameter_block().shape(), ctx_);
      ctx_.backend().copy(ctx_, model_.parameter_block(), best_parameters_);
    }
  }
}

// Save-best runs report the best checkpoint's test scores: the best epoch's entry gets them,
// from the weights kept at that epoch, scored once (the model's own weights are put back).
void Run::score_best_on_test() {
  if (o_.save_best_path.empty() || monitor_.best_epoch() == 0) return;
  EpochMetrics* best = nullptr;
  for (auto& m : result_.epochs)
    if (m.epoch == monitor_.best_epoch()) best = &m;
  if (!best || best->has_test || !best_parameters_.defined()) return;
  Tensor last = Tensor::empty(model_.parameter_block().shape(), ctx_);
  Tensor& block = model_.parameter_block();
  ctx_.backend().copy(ctx_, block, last);
  ctx_.backend().copy(ctx_, best_parameters_, block);
  model_.parameters_changed();
  const SplitScores t = task_.evaluate(ctx_, model_, data_.test, o_.batch_size, o_.comm);
  ctx_.backend().copy(ctx_, last, block);
  model_.parameters_changed();
  best->has_test = true;
  best->test_loss = t.loss;
  best->test_accuracy = t.accuracy;
  for (const auto& [key, value] : t.extra) best->extra["test_" + key] = value;
  task_.end_epoch(ctx_, model_, *best);
}

TrainResult Run::run() {
  const auto start = Clock::now();
  describe();
  if (ctx_.precision() == Precision::fp16) scaler_.emplace(ctx_, o_.loss_scaling);
  if (o_.clip_grad_norm > 0) clipper_.emplace(ctx_, o_.clip_grad_norm);
  if (!o_.resume_path.empty()) resume();
  // Ranks that disagree on the model, options, data or starting step would exchange blocks of
  // different sizes (heap corruption) or different steps (a hang): one small collective first.
  if (o_.comm) {
    const bool sharded = shards_update(o_, *o_.comm, ctx_.precision());
    std::vector<AgreedValue> agreed =
        fit_agreement(model_, o_, data_.train, data_.validation, data_.test, first_epoch_, optimizer_.steps());
    // One rank reduce-scattering while another all-reduces would exchange mismatched blocks.
    agreed.push_back({"the sharded update (--shard-update, --clip-grad-norm, --precision fp16)", sharded ? 1u : 0u});
    check_ranks_agree(o_.comm, agreed);
    // Every rank starts from rank 0's parameters (the same seed builds the same ones; this makes sure).
    o_.comm->broadcast(ctx_, model_.parameter_block(), 0);
    model_.parameters_changed();
    buckets_.emplace(*o_.comm, model_.gradient_block().numel(), bucket_elements_for_mb(o_.bucket_mb), sharded);
    model_.set_gradients_ready_hook([this](std::int64_t from) {
      if (sync_) buckets_->ready_from(ctx_, model_.gradient_block(), from);
    });
  }
  for (const auto& m : result_.epochs) monitor_.observe(m, o_);
  result_.best_epoch = monitor_.best_epoch();
  task_.prepare(ctx_, data_.train, data_.test);
  batches_ = loader_.batches_per_epoch();
  check_data_parallel_batches(o_.comm, data_.train.size(), o_.batch_size);
  steps_per_epoch_ = (batches_ + o_.accumulate_steps - 1) / o_.accumulate_steps;
  total_steps_ = o_.epochs * steps_per_epoch_;
  if (o_.max_steps > 0) total_steps_ = std::min(total_steps_, o_.max_steps);
  loss_sum_ = Tensor::zeros({1}, ctx_);
  correct_ = Tensor::zeros({1}, ctx_);
  batch_loss_ = Tensor::empty({1}, ctx_);
  step_loss_ = Tensor::zeros({1}, ctx_);
  batch_accuracy_ = Tensor::empty({1}, ctx_);
  if (!ctx_.device().is_cpu() && ctx_.cuda_graphs() && !scaler_ && !o_.comm && o_.accumulate_steps == 1)
    graph_.emplace(model_);

  for (std::int64_t epoch = first_epoch_; epoch < o_.epochs && optimizer_.steps() < total_steps_; ++epoch) {
    EpochMetrics m = train_epoch(epoch);
    if (optimizer_.steps() >= total_steps_ && total_steps_ < o_.epochs * steps_per_epoch_)
      result_.stopped = "max_steps";
    // The monitor reads the training loss or the validation split, both known before the test.
    evaluate_validation(m);
    Monitor next = monitor_;
    const bool improved = next.observe(m, o_);
    if (next.should_stop(o_) && epoch + 1 < o_.epochs) result_.stopped = "early_stopping";
    const bool last = epoch + 1 == o_.epochs || !result_.stopped.empty();
    evaluate_test(m, last);
    monitor_ = next;
    result_.epochs.push_back(m);
    result_.best_epoch = monitor_.best_epoch();
    save(m, improved);
    if (last) score_best_on_test();
    result_.wall_seconds = seconds_since(start);
    result_.pool_peak_bytes = ctx_.allocator().stats().peak_allocated_bytes;
    if (!o_.metrics_path.empty()) write_file_atomically(o_.metrics_path, metrics_document(result_).dump(2) + "\n");
    if (o_.on_epoch_end) o_.on_epoch_end(result_);
    if (!result_.stopped.empty()) break;
  }
  result_.wall_seconds = seconds_since(start);
  result_.pool_peak_bytes = ctx_.allocator().stats().peak_allocated_bytes;
  return result_;
}

}  // namespace

TrainResult train(Context& ctx, Sequential& model, Task& task, const TrainData& data, const TrainConfig& config) {
  check_train_config(config);
  CUDL_CHECK(model.built(), "train: build() the model first");
  CUDL_CHECK(model.parameter_count() > 0,
             "train: model {} has no trainable parameters: there is nothing to train (add a layer with weights)",
             config.model_name);
  task.check(model, data.train, "train", config.model_name);
  if (data.validation.size() > 0) task.check(model, data.validation, "validation", config.model_name);
  task.check(model, data.test, "test", config.model_name);
  Run run(ctx, model, task, data, config);
  return run.run();
}

}  // namespace cudl
