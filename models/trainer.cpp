#include "cudl/models/trainer.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/json.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/models/batch_means.hpp"
#include "cudl/models/checkpoint.hpp"
#include "cudl/models/data_parallel.hpp"
#include "cudl/models/model_file.hpp"
#include "cudl/models/zoo.hpp"

namespace cudl {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

nlohmann::json to_json(const EpochMetrics& m) {
  nlohmann::json j = {{"epoch", m.epoch}, {"train_loss", m.train_loss}, {"train_accuracy", m.train_accuracy}};
  if (m.has_val) {
    j["val_loss"] = m.val_loss;
    j["val_accuracy"] = m.val_accuracy;
  }
  j["test_loss"] = m.test_loss;
  j["test_accuracy"] = m.test_accuracy;
  j["lr"] = m.lr;
  j["steps"] = m.steps;
  j["seconds"] = m.seconds;
  j["images_per_second"] = m.images_per_second;
  if (m.loss_scale > 0) {
    j["loss_scale"] = m.loss_scale;
    j["skipped_steps"] = m.skipped_steps;
  }
  return j;
}

// Checkpoints written before validation existed have no val_*, lr or steps: they read as absent.
// One epoch of a checkpoint's extra.metrics, each value checked as the CLI checks its own: a
// hand-edited epoch of 1e30 or an accuracy of 7 is refused, not printed.
EpochMetrics metrics_from_json(const nlohmann::json& j, std::size_t index, const std::string& what) {
  CUDL_CHECK(j.is_object(), "{}: metrics[{}] is not an object", what, index);
  const auto number = [&](const char* key, double lo, double hi, bool required) {
    const auto it = j.find(key);
    if (it == j.end()) {
      CUDL_CHECK(!required, "{}: metrics[{}].{} is missing", what, index, key);
      return 0.0;
    }
    const double v = it->is_number() ? it->get<double>() : std::nan("");
    CUDL_CHECK(std::isfinite(v) && v >= lo && v <= hi, "{}: metrics[{}].{} must be a finite number in [{}, {}], got {}",
               what, index, key, lo, hi, io::json_excerpt(*it));
    return v;
  };
  const auto whole = [&](const char* key, bool required) {
    const auto it = j.find(key);
    CUDL_CHECK(it != j.end() || !required, "{}: metrics[{}].{} is missing", what, index, key);
    if (it == j.end()) return std::int64_t{0};
    CUDL_CHECK(it->is_number_integer() && it->get<double>() >= 0 && it->get<double>() <= 9007199254740992.0,
               "{}: metrics[{}].{} must be a whole number in [0, 2^53], got {}", what, index, key,
               io::json_excerpt(*it));
    return it->get<std::int64_t>();
  };
  constexpr double kBig = std::numeric_limits<double>::max();
  EpochMetrics m;
  m.epoch = whole("epoch", true);
  m.train_loss = number("train_loss", 0, kBig, true);
  m.train_accuracy = number("train_accuracy", 0, 1, true);
  m.has_val = j.contains("val_accuracy");
  if (m.has_val) {
    m.val_loss = number("val_loss", 0, kBig, true);
    m.val_accuracy = number("val_accuracy", 0, 1, true);
  }
  m.test_loss = number("test_loss", 0, kBig, true);
  m.test_accuracy = number("test_accuracy", 0, 1, true);
  m.lr = number("lr", 0, kBig, false);
  m.steps = whole("steps", false);
  m.seconds = number("seconds", 0, kBig, true);
  m.images_per_second = number("images_per_second", 0, kBig, true);
  m.loss_scale = number("loss_scale", 0, kBig, false);
  m.skipped_steps = whole("skipped_steps", false);
  return m;
}

// Where a resumed run starts, checked against what this run asks: it must be able to continue.
void check_resume(const CheckpointInfo& info, const FitOptions& o, std::int64_t train_size,
                  const std::vector<EpochMetrics>& history, std::int64_t steps) {
  const std::string& path = o.resume_path;
  CUDL_CHECK(history.size() <= static_cast<std::size_t>(info.epoch),
             "--resume: '{}': metadata extra.metrics lists {} epochs, but the checkpoint is at epoch {}", path,
             history.size(), info.epoch);
  for (std::size_t i = 0; i < history.size(); ++i)
    CUDL_CHECK(history[i].epoch == info.epoch - static_cast<std::int64_t>(history.size() - i) + 1,
               "--resume: '{}': metadata extra.metrics lists epoch {} at position {}; expected epochs up to {} in "
               "order",
               path, history[i].epoch, i, info.epoch);
  // The schedule and the data order count steps per epoch: another batch size or training set
  // would continue a different run (or none: the step count already past the new end).
  const auto saved = [&](const char* key) -> std::optional<std::int64_t> {
    const auto it = info.extra.find(key);
    if (it == info.extra.end()) return std::nullopt;
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
    CUDL_CHECK(ec == std::errc() && end == it->second.data() + it->second.size() && v >= 1,
               "--resume: '{}': metadata extra.{} = '{}', expected a whole number >= 1", path, key, it->second);
    return v;
  };
  if (const auto b = saved("batch_size"))
    CUDL_CHECK(*b == o.batch_size,
               "--resume: '{}' was trained with --batch-size {}, this run asks {}: resume with the same --batch-size "
               "(or start a new run from its weights with --init-from)",
               path, *b, o.batch_size);
  if (const auto n = saved("train_images"))
    CUDL_CHECK(*n == train_size,
               "--resume: '{}' was trained on {} training images, this run has {} (another --subset, --val-split or "
               "data): resume with the same ones (or start a new run from its weights with --init-from)",
               path, *n, train_size);
  CUDL_CHECK(info.epoch < o.epochs,
             "--resume: '{}' is at epoch {} already; --epochs {} asks for no more: give --epochs above {} to train on",
             path, info.epoch, o.epochs, info.epoch);
  CUDL_CHECK(o.max_steps == 0 || steps < o.max_steps,
             "--resume: '{}' is at step {} already; --max-steps {} asks for no more", path, steps, o.max_steps);
}

nlohmann::json history_json(const std::vector<EpochMetrics>& history) {
  nlohmann::json epochs = nlohmann::json::array();
  for (const auto& m : history) epochs.push_back(to_json(m));
  return epochs;
}

// Tests simulate a hard kill at a chosen global step (SIGKILL: no destructors, no flushing), to
// check that a resumed run loses nothing but the unfinished epoch.
void maybe_die_for_test(std::int64_t step) {
  static const char* kill_at = std::getenv("CUDL_TEST_KILL_AT_STEP");
  if (kill_at && std::atoll(kill_at) == step) std::raise(SIGKILL);
}

// The model's number of output classes for data's images: the columns of its [N, K] logits.
// 0 when the model does not end in [N, K] (softmax cross-entropy then rejects it itself).
std::int64_t output_classes(const Sequential& model, const Dataset& data) {
  const Shape s = data.image_shape();
  if (s.rank() != 4) return 0;
  const Shape out = model.output_shape(Shape{1, s[1], s[2], s[3]});
  return out.rank() == 2 ? out[1] : 0;
}

// Every label of `data` must be a class of the model, checked here on the host where the labels
// are: on the GPU an out-of-range label can only set the device fault word, reported at a later
// read with no row or value to name (and after a step with a wrong loss and gradients).
void check_labels(const Sequential& model, const Dataset& data, std::string_view split) {
  if (!data.labels.defined() || data.labels.dtype() != DType::i32 || !data.labels.device().is_cpu() ||
      data.labels.rank() != 1)
    return;  // not a dataset the DataLoader takes; it says why
  const std::int64_t classes = output_classes(model, data);
  if (classes <= 0) return;
  const std::int32_t* labels = data.labels.data<std::int32_t>();
  const std::int64_t n = data.labels.dim(0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t label = labels[i];
    CUDL_CHECK(label >= 0 && label < classes,
               "{}: label {} at index {} is outside [0, {}) (the model has {} outputs{})", split, label, i, classes,
               classes, data.name.empty() ? std::string() : fmt::format("; dataset '{}'", data.name));
  }
}

EvalResult evaluate_checked(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size);

}  // namespace

LoaderOptions training_loader_options(const FitOptions& options) {
  LoaderOptions lo;
  lo.batch_size = options.batch_size;
  lo.shuffle = true;
  lo.seed = options.seed;
  lo.augment = options.augment;
  lo.workers = options.workers;
  lo.prefetch = options.prefetch;
  return lo;
}

EvalResult evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size) {
  check_labels(model, data, "eval");
  return evaluate_checked(ctx, model, data, batch_size);
}

namespace {

// evaluate() after its labels were checked (fit checks the test split once, not every epoch).
EvalResult evaluate_checked(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size) {
  const BatchMeans means = batch_means(
      ctx, model, data, batch_size, [&](const Tensor& logits, const Batch& batch, Tensor& loss, Tensor& acc) {
        Tensor probs = Tensor::empty(logits.shape(), ctx);
        ctx.backend().softmax_cross_entropy_forward(ctx, logits, batch.labels, probs, loss);
        ctx.backend().accuracy(ctx, logits, batch.labels, acc);
      });
  EvalResult r;
  r.samples = means.samples;
  r.loss = means.first;
  r.accuracy = means.second;
  return r;
}

}  // namespace

namespace {

// evaluate_checked() of this rank's part of `data`, combined over the ranks (data-parallel runs
// evaluate each split once in all, not once per rank).
EvalResult evaluate_split(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
                          Communicator* comm) {
  if (!comm) return evaluate_checked(ctx, model, data, batch_size);
  const Dataset part = local_part(data, comm);
  const EvalResult r = part.size() > 0 ? evaluate_checked(ctx, model, part, batch_size) : EvalResult{};
  const auto n = static_cast<double>(r.samples);
  const Sums all = combine_sums(comm, {r.loss * n, r.accuracy * n, n});
  EvalResult out;
  out.samples = static_cast<std::int64_t>(all.samples);
  out.loss = all.samples > 0 ? all.loss / all.samples : 0;
  out.accuracy = all.samples > 0 ? all.correct / all.samples : 0;
  return out;
}

// Which accuracy decides the best epoch, early stopping and plateaus: validation when there is a
// validation split (Keras' val_*), else test (the only per-epoch signal left).
double monitored(const EpochMetrics& m) { return m.has_val ? m.val_accuracy : m.test_accuracy; }

// The best epoch so far and the epochs since it, for --save-best, --early-stopping and
// --reduce-lr-on-plateau. Replayed over a resumed run's history, so a resumed run decides exactly
// as the uninterrupted one would. Improvement is strictly better (Keras' min_delta 0: a tie is not).
struct PlateauWatch {
  double best = -std::numeric_limits<double>::infinity();
  std::int64_t best_epoch = 0;
  std::int64_t since_best = 0;    // epochs in a row without improvement
  std::int64_t plateau_wait = 0;  // the same, reset when the learning rate drops
  double lr_scale = 1.0;
  bool reduced = false;  // the last observe() lowered the learning rate

  // Returns true when `m` is the new best.
  bool observe(const EpochMetrics& m, const FitOptions& o) {
    reduced = false;
    const double value = monitored(m);
    if (value > best) {
      best = value;
      best_epoch = m.epoch;
      since_best = plateau_wait = 0;
      return true;
    }
    ++since_best;
    if (o.plateau_patience > 0 && ++plateau_wait >= o.plateau_patience) {
      lr_scale *= o.plateau_factor;
      plateau_wait = 0;
      reduced = true;
    }
    return false;
  }
  bool should_stop(const FitOptions& o) const {
    return o.early_stopping_patience > 0 && since_best >= o.early_stopping_patience;
  }
};

// Global L2-norm clipping over the whole gradient block, on the device: Σg² in one fused
// reduction (accumulated in double), the factor min(1, max / (‖g‖ + 1e-6)) (PyTorch's
// clip_grad_norm_) minus one in a one-thread scalar op, and g += (factor - 1)·g. Nothing is read
// back, so there is no host sync; a factor of exactly 1 leaves the gradients bit for bit unchanged.
class GradClipper {
 public:
  GradClipper(Context& ctx, double max_norm)
      : sum_sq_(Tensor::empty({1}, ctx)),
        max_norm_(Tensor::full({1}, static_cast<float>(max_norm), ctx)),
        delta_(Tensor::empty({1}, ctx)) {}
  void clip(Context& ctx, Tensor& grads) {
    Backend& be = ctx.backend();
    be.dot(ctx, grads, grads, sum_sq_);
    be.scalar_op(ctx, ScalarOp::clip_delta, sum_sq_, max_norm_, delta_);
    be.axpy_scalar(ctx, 1.0f, delta_, grads, grads);
  }

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
  std::int64_t every() const { return every_; }

  // `done`: 1-based step within the epoch, just taken.
  void record(Context& ctx, std::int64_t done, const Tensor& batch_loss, const Tensor& params) {
    const std::int64_t slot = (done - 1) % every_;
    Tensor loss_slot = ring_.view(2 * slot, Shape{1});
    Tensor param_slot = ring_.view(2 * slot + 1, Shape{1});
    ctx.backend().copy(ctx, batch_loss, loss_slot);
    ctx.backend().sum(ctx, params, param_slot);
  }
  bool due(std::int64_t done, bool last) const { return last || done % every_ == 0; }

  // Reads the slots of steps since the last check (those up to `done`); on a non-finite value
  // throws naming the epoch, the step and the last good checkpoint.
  void check(Context& ctx, std::int64_t epoch, std::int64_t done, std::int64_t batches, std::int64_t steps_before_epoch,
             const std::string& last_good) const {
    const std::vector<float> values = ring_.to_vector(ctx);
    const std::int64_t count = (done - 1) % every_ + 1;
    for (std::int64_t i = 0; i < count; ++i) {
      const float loss = values[static_cast<std::size_t>(2 * i)];
      const float params = values[static_cast<std::size_t>(2 * i + 1)];
      const std::int64_t step = done - count + 1 + i;
      const std::string where =
          fmt::format("epoch {}, step {} of {} (step {} in all)", epoch, step, batches, steps_before_epoch + step);
      // NaN's sign bit is noise ("-nan"): name it plainly.
      CUDL_CHECK(std::isfinite(loss),
                 "fit: the training loss is {} at {}: training diverged (a learning rate too high?); {}",
                 std::isnan(loss) ? std::string("nan") : fmt::format("{}", loss), where, last_good);
      CUDL_CHECK(std::isfinite(params),
                 "fit: the parameters hold non-finite values after the update of {}: training diverged (a learning "
                 "rate too high?); {}",
                 where, last_good);
    }
  }

 private:
  std::int64_t every_;
  Tensor ring_;  // [loss, Σparams] per slot
};

}  // namespace

nlohmann::json metrics_document(const TrainResult& r) {
  nlohmann::json j = {{"model", r.model},         {"device", r.device},         {"precision", r.precision},
                      {"params", r.params},       {"train_size", r.train_size}, {"val_size", r.val_size},
                      {"test_size", r.test_size}, {"monitor", r.monitor},       {"best_epoch", r.best_epoch}};
  if (!r.stopped.empty()) j["stopped"] = r.stopped;
  j["epochs"] = history_json(r.epochs);
  return j;
}

TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& test, const FitOptions& options) {
  return fit(ctx, model, train, Dataset{}, test, options);
}

TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& validation, const Dataset& test,
                const FitOptions& options) {
  const auto fit_start = Clock::now();
  CUDL_CHECK(model.built(), "fit: build() the model first");
  CUDL_CHECK(options.epochs > 0 && options.batch_size > 0, "fit: epochs ({}) and batch size ({}) must be positive",
             options.epochs, options.batch_size);
  const OptimizerConfig& oc = options.optimizer;
  CUDL_CHECK(std::isfinite(oc.lr) && oc.lr > 0, "fit: the learning rate must be a finite number > 0, got {}", oc.lr);
  CUDL_CHECK(std::isfinite(oc.momentum) && oc.momentum >= 0 && oc.momentum <= 1,
             "fit: momentum must be a finite number in [0, 1], got {}", oc.momentum);
  CUDL_CHECK(std::isfinite(oc.weight_decay) && oc.weight_decay >= 0,
             "fit: weight decay must be a finite number >= 0, got {}", oc.weight_decay);
  CUDL_CHECK(options.early_stopping_patience >= 0 && options.plateau_patience >= 0 && options.max_steps >= 0 &&
                 options.finite_check_every >= 0,
             "fit: early-stopping patience ({}), plateau patience ({}), max steps ({}) and the check interval ({}) "
             "must be >= 0",
             options.early_stopping_patience, options.plateau_patience, options.max_steps, options.finite_check_every);
  CUDL_CHECK(std::isfinite(options.plateau_factor) && options.plateau_factor > 0 && options.plateau_factor < 1,
             "fit: the plateau factor must be in (0, 1), got {}", options.plateau_factor);
  CUDL_CHECK(std::isfinite(options.clip_grad_norm) && options.clip_grad_norm >= 0,
             "fit: the gradient-norm limit must be a finite number >= 0, got {}", options.clip_grad_norm);
  const bool has_val = validation.size() > 0;
  CUDL_CHECK(model.parameter_count() > 0,
             "fit: model {} has no trainable parameters: there is nothing to train (add a layer with weights)",
             options.model_name);
  check_labels(model, train, "train");
  if (has_val) check_labels(model, validation, "validation");
  check_labels(model, test, "test");
  Backend& be = ctx.backend();
  TrainResult result;
  result.params = model.parameter_count();
  result.device = ctx.device().str();
  result.model = options.model_name;
  result.precision = std::string(precision_name(ctx.precision()));
  result.train_size = train.size();
  result.val_size = validation.size();
  result.test_size = test.size();
  result.monitor = has_val ? "val_accuracy" : "test_accuracy";

  Optimizer optimizer(ctx, model, options.optimizer);
  std::int64_t first_epoch = 0;
  // How a stopped run ends its message: which checkpoint on disk is the last good one.
  std::string last_good = options.save_path.empty()
                              ? std::string("stopped; no checkpoint is kept (no --save)")
                              : fmt::format("stopped before saving it to '{}'", options.save_path);
  if (!options.resume_path.empty()) {
    CheckpointInfo info = load_checkpoint(options.resume_path, ctx, model, &optimizer);
    // A model file may be spelled another way (./net.json, /abs/net.json, a copy): its fingerprint decides.
    CUDL_CHECK(same_model_name(info, options.model_name), "--resume: '{}' holds a {} checkpoint, but the model is {}",
               options.resume_path, info.model, options.model_name);
    optimizer.clear_frozen_state(ctx);  // --freeze on resume: restored moments must not move frozen weights
    first_epoch = info.epoch;
    last_good = fmt::format("stopped; the last good checkpoint is '{}' (epoch {})", options.resume_path, info.epoch);
    if (auto it = info.extra.find("metrics"); it != info.extra.end()) {
      const std::string what = fmt::format("--resume: '{}': metadata extra.metrics is not the metrics list cudl writes",
                                           options.resume_path);
      const nlohmann::json list = io::parse_json(it->second, what);
      CUDL_CHECK(list.is_array(), "{}: not a list", what);
      for (std::size_t i = 0; i < list.size(); ++i) result.epochs.push_back(metrics_from_json(list[i], i, what));
    }
    if (auto it = info.extra.find("model_fingerprint"); it != info.extra.end())
      CUDL_CHECK(it->second == fmt::format("{:016x}", model_fingerprint(model)),
                 "--resume: '{}' holds another model than {}: their layers differ", options.resume_path,
                 options.model_name);
    check_resume(info, options, train.size(), result.epochs, optimizer.steps());
  }
  // Ranks that disagree on the model, options, data or starting step would exchange blocks of
  // different sizes (heap corruption) or different steps (a hang): one small collective first.
  if (options.comm)
    check_ranks_agree(options.comm,
                      fit_agreement(model, options, train, validation, test, first_epoch, optimizer.steps()));
  // Every rank starts from rank 0's parameters (the same seed builds the same ones; this makes sure).
  if (options.comm) {
    options.comm->broadcast(ctx, model.parameter_block(), 0);
    model.parameters_changed();
  }
  PlateauWatch watch;
  for (const auto& m : result.epochs) watch.observe(m, options);
  result.best_epoch = watch.best_epoch;

  DataLoader loader(train, ctx, training_loader_options(options));
  const std::int64_t batches = loader.batches_per_epoch();
  check_data_parallel_batches(options.comm, train.size(), options.batch_size);
  std::int64_t total_steps = options.epochs * batches;
  if (options.max_steps > 0) total_steps = std::min(total_steps, options.max_steps);

  Tensor loss_sum = Tensor::zeros({1}, ctx), correct = Tensor::zeros({1}, ctx);
  Tensor batch_loss = Tensor::empty({1}, ctx), batch_accuracy = Tensor::empty({1}, ctx);
  constexpr std::int64_t kProgressEvery = kGpuFiniteCheckEvery;  // steps between host reads of the running loss
  FiniteGuard guard(ctx, options.finite_check_every > 0 ? options.finite_check_every
                         : ctx.device().is_cpu()        ? 1
                                                        : kGpuFiniteCheckEvery);
  std::optional<GradClipper> clipper;
  if (options.clip_grad_norm > 0) clipper.emplace(ctx, options.clip_grad_norm);
  std::optional<LossScaler> scaler;
  if (ctx.precision() == Precision::fp16) scaler.emplace(ctx, options.loss_scaling);

  for (std::int64_t epoch = first_epoch; epoch < options.epochs && optimizer.steps() < total_steps; ++epoch) {
    loader.start_epoch(epoch);
    be.fill(ctx, loss_sum, 0.0f);
    be.fill(ctx, correct, 0.0f);
    std::int64_t samples = 0;
    const std::int64_t steps_before_epoch = optimizer.steps();
    const std::int64_t skipped_before_epoch = scaler ? scaler->skipped_steps() : 0;
    const auto start = Clock::now();
    Batch batch;
    std::int64_t done = 0;
    float lr = 0;
    while (loader.next(batch)) {
      const Batch local = local_shard(model, batch, options.comm);  // the batch itself in one process
      model.zero_grad(ctx);
      Tensor logits = model.forward(ctx, local.images, /*train=*/true);
      Tensor probs = Tensor::empty(logits.shape(), ctx);
      be.softmax_cross_entropy_forward(ctx, logits, local.labels, probs, batch_loss);
      be.accuracy(ctx, logits, local.labels, batch_accuracy);
      const auto n = static_cast<float>(local.labels.numel());
      be.axpy(ctx, n, batch_loss, loss_sum);
      be.axpy(ctx, n, batch_accuracy, correct);
      Tensor dlogits = Tensor::empty(logits.shape(), ctx);
      const float dloss = shard_loss_scale(options.comm, local.labels.numel(), batch.labels.numel()) *
                          (scaler ? scaler->scale() : 1.0f);
      be.softmax_cross_entropy_backward(ctx, probs, local.labels, dloss, dlogits);
      model.backward(ctx, dlogits);
      if (options.comm) {
        maybe_inject_fault_for_test(*options.comm, optimizer.steps() + 1);
        options.comm->allreduce_mean(ctx, model.gradient_block());  // one call over the whole block
      }
      // fp16: a step whose scaled gradients overflowed is skipped (the same on every rank: the
      // gradients were all-reduced first) and never reaches the weights.
      if (!scaler || scaler->unscale(ctx, model.gradient_block())) {
        if (clipper) clipper->clip(ctx, model.gradient_block());
        lr = static_cast<float>(learning_rate(options.schedule, options.optimizer.lr, optimizer.steps(), total_steps) *
                                watch.lr_scale);
        optimizer.step(ctx, lr);
      }
      samples += local.labels.numel();
      ++done;
      guard.record(ctx, done, batch_loss, model.parameter_block());
      maybe_die_for_test(optimizer.steps());
      const bool last = done == batches || optimizer.steps() >= total_steps;
      if (guard.due(done, last)) guard.check(ctx, epoch + 1, done, batches, steps_before_epoch, last_good);
      // Collective with several ranks (the running sums are combined), so every rank comes here.
      if ((options.on_progress || options.comm) && (done % kProgressEvery == 0 || last)) {
        const Sums all =
            combine_sums(options.comm, {loss_sum.item(ctx), correct.item(ctx), static_cast<double>(samples)});
        TrainProgress p;
        p.epoch = epoch + 1;
        p.epochs = options.epochs;
        p.batch = done;
        p.batches = batches;
        p.loss = all.loss / all.samples;
        p.accuracy = all.correct / all.samples;
        p.elapsed_seconds = seconds_since(start);
        p.images_per_second = all.samples / std::max(p.elapsed_seconds, 1e-9);
        p.lr = lr;
        if (scaler) {
          p.loss_scale = scaler->scale();
          p.skipped_steps = scaler->skipped_steps() - skipped_before_epoch;
        }
        if (options.on_progress) options.on_progress(p);
      }
      if (optimizer.steps() >= total_steps) break;
    }
    ctx.synchronize();
    // Over all ranks' shards (this rank's alone in one process).
    const Sums all = combine_sums(options.comm, {loss_sum.item(ctx), correct.item(ctx), static_cast<double>(samples)});
    EpochMetrics m;
    m.epoch = epoch + 1;
    m.seconds = seconds_since(start);
    m.images_per_second = all.samples / std::max(m.seconds, 1e-9);
    m.train_loss = all.loss / std::max(all.samples, 1.0);
    m.train_accuracy = all.correct / std::max(all.samples, 1.0);
    m.lr = lr;
    m.steps = optimizer.steps();
    if (scaler) {
      m.loss_scale = scaler->scale();
      m.skipped_steps = scaler->skipped_steps() - skipped_before_epoch;
    }
    result.images_trained += static_cast<std::int64_t>(all.samples);
    if (has_val) {
      const EvalResult v = evaluate_split(ctx, model, validation, options.batch_size, options.comm);
      m.has_val = true;
      m.val_loss = v.loss;
      m.val_accuracy = v.accuracy;
    }
    EvalResult eval = evaluate_split(ctx, model, test, options.batch_size, options.comm);
    m.test_loss = eval.loss;
    m.test_accuracy = eval.accuracy;
    // The guard saw finite losses and parameters; a non-finite evaluation loss still means the
    // weights do not work (logits that overflow): stop before they overwrite the last good checkpoint.
    CUDL_CHECK(std::isfinite(m.train_loss) && std::isfinite(m.test_loss) && (!has_val || std::isfinite(m.val_loss)),
               "fit: epoch {} ended with train loss {:.4g}{} and test loss {:.4g}: training diverged (a learning rate "
               "too high?); {}",
               m.epoch, m.train_loss, has_val ? fmt::format(", validation loss {:.4g}", m.val_loss) : std::string(),
               m.test_loss, last_good);
    result.epochs.push_back(m);
    const bool improved = watch.observe(m, options);
    result.best_epoch = watch.best_epoch;
    if (optimizer.steps() >= total_steps && total_steps < options.epochs * batches) result.stopped = "max_steps";
    if (watch.should_stop(options) && epoch + 1 < options.epochs) result.stopped = "early_stopping";
    if (options.on_progress) {
      TrainProgress p;
      p.epoch = epoch + 1;
      p.epochs = options.epochs;
      p.batch = done;
      p.batches = batches;
      p.loss = m.train_loss;
      p.accuracy = m.train_accuracy;
      p.elapsed_seconds = m.seconds;
      p.images_per_second = m.images_per_second;
      p.lr = lr;
      p.loss_scale = m.loss_scale;
      p.skipped_steps = m.skipped_steps;
      p.epoch_done = true;
      options.on_progress(p);
    }

    const std::string metrics = history_json(result.epochs).dump();
    CheckpointInfo info;
    info.model = options.model_name;
    info.epoch = epoch + 1;
    info.step = optimizer.steps();
    info.seed = options.seed;
    info.extra = options.metadata;
    info.extra["metrics"] = metrics;
    // What a resume must match (check_resume) and the layers a renamed model file must still have.
    info.extra["batch_size"] = std::to_string(options.batch_size);
    info.extra["train_images"] = std::to_string(train.size());
    info.extra["model_fingerprint"] = fmt::format("{:016x}", model_fingerprint(model));
    if (!options.save_path.empty()) {
      save_checkpoint(options.save_path, ctx, model, &optimizer, info);
      last_good = fmt::format("stopped; the last good checkpoint is '{}' (epoch {})", options.save_path, epoch + 1);
    }
    if (improved && !options.save_best_path.empty()) {
      info.extra["best_epoch"] = std::to_string(epoch + 1);
      info.extra["monitor"] = fmt::format("{} {:.6f}", result.monitor, monitored(m));
      save_checkpoint(options.save_best_path, ctx, model, &optimizer, info);
    }
    result.wall_seconds = seconds_since(fit_start);
    result.pool_peak_bytes = ctx.allocator().stats().peak_allocated_bytes;
    if (!options.metrics_path.empty())
      write_file_atomically(options.metrics_path, metrics_document(result).dump(2) + "\n");
    if (options.on_epoch_end) options.on_epoch_end(result);
    if (!result.stopped.empty()) break;
  }
  result.wall_seconds = seconds_since(fit_start);
  result.pool_peak_bytes = ctx.allocator().stats().peak_allocated_bytes;
  return result;
}

namespace {

// splitmix64: a small, well-mixed generator whose sequence is the same on every platform (the
// standard library's distributions and std::shuffle are not), so a split depends only on the seed.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Each class's sample indices, in order, shuffled with `seed` (Fisher-Yates).
std::vector<std::vector<std::int64_t>> shuffled_by_class(const Dataset& data, std::uint64_t seed) {
  CUDL_CHECK(data.labels.defined() && data.labels.dtype() == DType::i32 && data.labels.device().is_cpu(),
             "split: the dataset's labels must be i32 on the CPU");
  const std::int32_t* labels = data.labels.data<std::int32_t>();
  std::int32_t top = 0;
  for (std::int64_t i = 0; i < data.size(); ++i) {
    CUDL_CHECK(labels[i] >= 0, "split: label {} at index {} is negative", labels[i], i);
    top = std::max(top, labels[i]);
  }
  std::vector<std::vector<std::int64_t>> by_class(static_cast<std::size_t>(data.size() > 0 ? top + 1 : 0));
  for (std::int64_t i = 0; i < data.size(); ++i) by_class[static_cast<std::size_t>(labels[i])].push_back(i);
  SplitMix rng{seed ^ 0x5EED5EED5EED5EEDull};
  for (auto& idx : by_class)
    for (std::size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.next() % i]);
  return by_class;
}

// The samples at `indices` (sorted here, so a subset keeps the dataset's order) as a new dataset;
// a listed folder stays listed.
Dataset gather(const Dataset& data, std::vector<std::int64_t> indices) {
  std::sort(indices.begin(), indices.end());
  return select_samples(data, indices);
}

}  // namespace

std::pair<Dataset, Dataset> split_validation(const Dataset& data, double fraction, std::uint64_t seed) {
  CUDL_CHECK(std::isfinite(fraction) && fraction >= 0 && fraction < 1,
             "validation split: the fraction must be in [0, 1), got {}", fraction);
  if (fraction == 0) return {data, Dataset{}};
  std::vector<std::int64_t> keep, held_out;
  for (const auto& idx : shuffled_by_class(data, seed)) {
    // Every class keeps at least one training image: a class of one would otherwise move wholly
    // into validation, and the model would be scored on a class it never saw.
    const auto n_val = std::min(static_cast<std::size_t>(std::llround(fraction * static_cast<double>(idx.size()))),
                                idx.empty() ? std::size_t{0} : idx.size() - 1);
    held_out.insert(held_out.end(), idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n_val));
    keep.insert(keep.end(), idx.begin() + static_cast<std::ptrdiff_t>(n_val), idx.end());
  }
  CUDL_CHECK(!keep.empty(), "validation split: {} of {} images would leave none to train on", fraction, data.size());
  return {gather(data, std::move(keep)), gather(data, std::move(held_out))};
}

Dataset stratified_subset(const Dataset& data, std::int64_t count, std::uint64_t seed) {
  CUDL_CHECK(count > 0, "subset: the count must be positive, got {}", count);
  if (count >= data.size()) return data;
  const auto by_class = shuffled_by_class(data, seed);
  // Each class's share rounded down, then the remainder one each to the largest remainders
  // (ties to the lower class): largest-remainder apportionment, so the shares sum to `count`.
  std::vector<std::int64_t> share(by_class.size());
  std::vector<std::pair<double, std::size_t>> remainder;
  std::int64_t given = 0;
  for (std::size_t c = 0; c < by_class.size(); ++c) {
    const double exact =
        static_cast<double>(count) * static_cast<double>(by_class[c].size()) / static_cast<double>(data.size());
    share[c] = static_cast<std::int64_t>(exact);
    given += share[c];
    remainder.emplace_back(-(exact - static_cast<double>(share[c])), c);
  }
  std::sort(remainder.begin(), remainder.end());
  for (std::size_t i = 0; given < count && i < remainder.size(); ++i, ++given) ++share[remainder[i].second];
  std::vector<std::int64_t> picked;
  for (std::size_t c = 0; c < by_class.size(); ++c)
    picked.insert(picked.end(), by_class[c].begin(), by_class[c].begin() + share[c]);
  return gather(data, std::move(picked));
}

EvalReport evaluate_report(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size, int k) {
  check_labels(model, data, "eval");
  CUDL_CHECK(k >= 1, "eval: top-k needs k >= 1, got {}", k);
  Backend& be = ctx.backend();
  const auto classes = static_cast<int>(output_classes(model, data));
  CUDL_CHECK(classes > 0, "eval: the model does not end in [N, K] logits for {} images", data.image_shape());
  EvalReport r;
  r.k = std::min(k, classes);
  r.classes = classes;
  r.confusion.assign(static_cast<std::size_t>(classes),
                     std::vector<std::int64_t>(static_cast<std::size_t>(classes), 0));
  const ConstantHold weights = model.hold_parameters_constant(ctx);  // nothing trains while it runs
  DataLoader loader(data, ctx, batch_size, /*shuffle=*/false, /*seed=*/0);
  loader.start_epoch(0);
  Tensor loss_sum = Tensor::zeros({1}, ctx), batch_loss = Tensor::empty({1}, ctx);
  std::int64_t topk_hits = 0, top1_hits = 0;
  Batch batch;
  while (loader.next(batch)) {
    Tensor logits = model.forward(ctx, batch.images, /*train=*/false);
    Tensor probs = Tensor::empty(logits.shape(), ctx);
    be.softmax_cross_entropy_forward(ctx, logits, batch.labels, probs, batch_loss);
    be.axpy(ctx, static_cast<float>(batch.labels.numel()), batch_loss, loss_sum);
    // Ranks on the host: eval is not the training loop, and one copy of [B, K] logits per batch
    // is far cheaper than the forward pass that made them.
    const std::vector<float> z = logits.to_vector(ctx);
    const std::vector<std::int32_t> labels = batch.labels.to_int_vector(ctx);
    for (std::size_t n = 0; n < labels.size(); ++n) {
      const float* row = z.data() + n * static_cast<std::size_t>(classes);
      const auto label = static_cast<std::size_t>(labels[n]);
      // The prediction is the first maximum (argmax_rows' rule); the label ranks after every
      // class with a higher logit and every earlier class with an equal one.
      std::size_t pred = 0;
      int rank = 0;
      for (std::size_t c = 0; c < static_cast<std::size_t>(classes); ++c) {
        if (row[c] > row[pred]) pred = c;
        if (row[c] > row[label] || (row[c] == row[label] && c < label)) ++rank;
      }
      ++r.confusion[label][pred];
      top1_hits += pred == label;
      topk_hits += rank < r.k;
    }
    r.samples += static_cast<std::int64_t>(labels.size());
  }
  if (r.samples > 0) {
    r.loss = loss_sum.item(ctx) / static_cast<double>(r.samples);
    r.top1 = static_cast<double>(top1_hits) / static_cast<double>(r.samples);
    r.topk = static_cast<double>(topk_hits) / static_cast<double>(r.samples);
  }
  for (std::size_t c = 0; c < r.confusion.size(); ++c) {
    std::int64_t row = 0;
    for (auto v : r.confusion[c]) row += v;
    r.per_class_accuracy.push_back(row > 0 ? static_cast<double>(r.confusion[c][c]) / static_cast<double>(row)
                                           : std::numeric_limits<double>::quiet_NaN());
  }
  return r;
}

void hold_out_test(DataSplits& data, double fraction, std::uint64_t seed, const std::string& dir) {
  if (!data.flat) {
    CUDL_CHECK(fraction == 0,
               "--test-split: '{}' has its own test split (test/, or the dataset's test files); --test-split is for a "
               "flat DIR/<class>/ folder",
               dir);
    return;
  }
  CUDL_CHECK(fraction > 0 && fraction < 1,
             "'{}' is a flat folder (<class>/ folders, no train/ and test/): give --test-split F (e.g. 0.2) to hold "
             "out a test set",
             dir);
  auto [train, test] = split_validation(data.train, fraction, seed);
  CUDL_CHECK(test.size() > 0 && train.size() > 0,
             "--test-split {}: '{}' holds {} images, too few to split into a training and a test set", fraction, dir,
             data.train.size());
  data.train = std::move(train);
  data.test = std::move(test);
  data.flat = false;
}

std::vector<std::string> class_names(const std::string& kind, const Dataset& data) {
  if (kind == "fashion-mnist")
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  if (kind == "cifar10")
    return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  if (!data.class_names.empty()) return data.class_names;
  std::vector<std::string> names;
  for (int c = 0; c < data.num_classes; ++c) names.push_back(std::to_string(c));
  return names;
}

std::string default_dataset(const std::string& model_name) {
  if (is_model_file(model_name)) return default_dataset_for_input(model_spec(model_name).input);
  if (model_name == "mlp" || model_name == "mnist_cnn") return "mnist";
  if (model_name.ends_with("_cifar")) return "cifar10";
  return "folder";
}

int folder_image_size(const std::string& model_name, int requested) {
  const ModelSpec spec = model_spec(model_name);
  CUDL_CHECK(spec.input.rank() == 3 && spec.input[0] == 3 && spec.input[1] == spec.input[2],
             "--dataset folder: image folders give square RGB images, but model {} takes {}", model_name, spec.input);
  const auto own = static_cast<int>(spec.input[1]);
  if (requested == 0 || requested == own) return own;
  CUDL_CHECK(requested > 0, "--image-size {} must be positive", requested);
  // Whether the layers take the other size: a linear layer after flatten fixes it.
  std::string why;
  try {
    const Shape out = make_model(model_name).output_shape(Shape{1, 3, requested, requested});
    if (spec.num_classes == 0 || (out.rank() == 2 && out[1] == spec.num_classes)) return requested;
    why = fmt::format("it would output {} instead of [1, {}]", out, spec.num_classes);
  } catch (const Error& e) {
    why = e.what();
  }
  CUDL_THROW("--image-size {}: model {} fixes its input at {}x{} ({})", requested, model_name, own, own, why);
}

DataSplits load_dataset(const std::string& kind, const std::string& dir, const std::string& model_name, int image_size,
                        int outputs) {
  const ModelSpec& spec = model_spec(model_name);
  const int classes = outputs > 0 ? outputs : spec.num_classes;
  CUDL_CHECK(image_size == 0 || kind == "folder",
             "--image-size applies to image folders; {} images have their own size", kind);
  DataSplits splits;
  Shape input = spec.input;
  if (kind == "mnist" || kind == "fashion-mnist") {
    splits = load_mnist_dir(dir);
  } else if (kind == "cifar10") {
    splits = load_cifar10_dir(dir);
  } else if (kind == "folder") {
    const int size = folder_image_size(model_name, image_size);
    splits = list_image_folder(dir, size);
    input = Shape{3, size, size};  // the model's, or another its layers take
  } else {
    CUDL_THROW("--dataset: unknown '{}': expected mnist, fashion-mnist, cifar10 or folder", kind);
  }
  const Shape got = splits.train.image_shape();
  CUDL_CHECK(got[1] == input[0] && got[2] == input[1] && got[3] == input[2],
             "model {} takes [{}, {}, {}] images but the {} data in '{}' is {}", model_name, input[0], input[1],
             input[2], kind, dir, got);
  // A model whose output is not class scores [N, K] (an autoencoder's image) has no class count:
  // say what it outputs, not "0 outputs".
  CUDL_CHECK(classes > 0,
             "model {} outputs {} per batch, not class scores [N, K]: it cannot classify the {} data in '{}' (for "
             "reconstruction: --target input)",
             model_name, make_model(model_name).output_shape(Shape{1, input[0], input[1], input[2]}), kind, dir);
  CUDL_CHECK(splits.train.num_classes <= classes, "model {} has {} outputs but the {} data in '{}' has {} classes",
             model_name, classes, kind, dir, splits.train.num_classes);
  return splits;
}

}  // namespace cudl
