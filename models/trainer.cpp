#include "models/trainer.hpp"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "engine/io/atomic_file.hpp"
#include "engine/io/loader.hpp"
#include "models/checkpoint.hpp"
#include "models/model_file.hpp"
#include "models/zoo.hpp"

namespace cudl {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

nlohmann::json to_json(const EpochMetrics& m) {
  return {{"epoch", m.epoch},
          {"train_loss", m.train_loss},
          {"train_accuracy", m.train_accuracy},
          {"test_loss", m.test_loss},
          {"test_accuracy", m.test_accuracy},
          {"seconds", m.seconds},
          {"images_per_second", m.images_per_second}};
}

EpochMetrics metrics_from_json(const nlohmann::json& j) {
  EpochMetrics m;
  m.epoch = j.at("epoch").get<std::int64_t>();
  m.train_loss = j.at("train_loss").get<double>();
  m.train_accuracy = j.at("train_accuracy").get<double>();
  m.test_loss = j.at("test_loss").get<double>();
  m.test_accuracy = j.at("test_accuracy").get<double>();
  m.seconds = j.at("seconds").get<double>();
  m.images_per_second = j.at("images_per_second").get<double>();
  return m;
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
  if (!data.images.defined() || data.images.rank() != 4) return 0;
  const Shape& s = data.images.shape();
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
    CUDL_CHECK(label >= 0 && label < classes, "{}: label {} at index {} is outside [0, {}) (the model has {} outputs{})",
               split, label, i, classes, classes,
               data.name.empty() ? std::string() : fmt::format("; dataset '{}'", data.name));
  }
}

EvalResult evaluate_checked(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size);

}  // namespace

EvalResult evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size) {
  check_labels(model, data, "eval");
  return evaluate_checked(ctx, model, data, batch_size);
}

namespace {

// evaluate() after its labels were checked (fit checks the test split once, not every epoch).
EvalResult evaluate_checked(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size) {
  Backend& be = ctx.backend();
  DataLoader loader(data, ctx, batch_size, /*shuffle=*/false, /*seed=*/0);
  loader.start_epoch(0);
  Tensor loss_sum = Tensor::zeros({1}, ctx), correct = Tensor::zeros({1}, ctx);
  Tensor batch_loss = Tensor::empty({1}, ctx), batch_accuracy = Tensor::empty({1}, ctx);
  std::int64_t samples = 0;
  Batch batch;
  while (loader.next(batch)) {
    Tensor logits = model.forward(ctx, batch.images, /*train=*/false);
    Tensor probs = Tensor::empty(logits.shape(), ctx);
    be.softmax_cross_entropy_forward(ctx, logits, batch.labels, probs, batch_loss);
    be.accuracy(ctx, logits, batch.labels, batch_accuracy);
    const auto n = static_cast<float>(batch.labels.numel());
    be.axpy(ctx, n, batch_loss, loss_sum);
    be.axpy(ctx, n, batch_accuracy, correct);
    samples += batch.labels.numel();
  }
  EvalResult r;
  r.samples = samples;
  if (samples > 0) {
    r.loss = loss_sum.item(ctx) / static_cast<double>(samples);
    r.accuracy = correct.item(ctx) / static_cast<double>(samples);
  }
  return r;
}

}  // namespace

TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& test, const FitOptions& options) {
  CUDL_CHECK(model.built(), "fit: build() the model first");
  CUDL_CHECK(options.epochs > 0 && options.batch_size > 0, "fit: epochs ({}) and batch size ({}) must be positive",
             options.epochs, options.batch_size);
  const OptimizerConfig& oc = options.optimizer;
  CUDL_CHECK(std::isfinite(oc.lr) && oc.lr > 0, "fit: the learning rate must be a finite number > 0, got {}", oc.lr);
  CUDL_CHECK(std::isfinite(oc.momentum) && oc.momentum >= 0 && oc.momentum <= 1,
             "fit: momentum must be a finite number in [0, 1], got {}", oc.momentum);
  CUDL_CHECK(std::isfinite(oc.weight_decay) && oc.weight_decay >= 0,
             "fit: weight decay must be a finite number >= 0, got {}", oc.weight_decay);
  check_labels(model, train, "train");
  check_labels(model, test, "test");
  Backend& be = ctx.backend();
  TrainResult result;
  result.params = model.parameter_count();
  result.device = ctx.device().str();

  Optimizer optimizer(ctx, model, options.optimizer);
  std::int64_t first_epoch = 0;
  if (!options.resume_path.empty()) {
    CheckpointInfo info = load_checkpoint(options.resume_path, ctx, model, &optimizer);
    CUDL_CHECK(info.model == options.model_name, "--resume: '{}' holds a {} checkpoint, but the model is {}",
               options.resume_path, info.model, options.model_name);
    first_epoch = info.epoch;
    if (auto it = info.extra.find("metrics"); it != info.extra.end()) {
      try {
        for (const auto& j : nlohmann::json::parse(it->second)) result.epochs.push_back(metrics_from_json(j));
      } catch (const nlohmann::json::exception& e) {
        CUDL_THROW("--resume: '{}': metadata extra.metrics is not the metrics list cudl writes ({})",
                   options.resume_path, e.what());
      }
    }
  }

  Augment augment;
  augment.random_crop = augment.hflip = options.augment;
  DataLoader loader(train, ctx, options.batch_size, /*shuffle=*/true, options.seed, augment);
  const std::int64_t batches = loader.batches_per_epoch();
  const std::int64_t total_steps = options.epochs * batches;

  Tensor loss_sum = Tensor::zeros({1}, ctx), correct = Tensor::zeros({1}, ctx);
  Tensor batch_loss = Tensor::empty({1}, ctx), batch_accuracy = Tensor::empty({1}, ctx);
  constexpr std::int64_t kProgressEvery = 20;  // steps between host reads of the running loss (each one syncs)

  for (std::int64_t epoch = first_epoch; epoch < options.epochs; ++epoch) {
    loader.start_epoch(epoch);
    be.fill(ctx, loss_sum, 0.0f);
    be.fill(ctx, correct, 0.0f);
    std::int64_t samples = 0;
    const auto start = Clock::now();
    Batch batch;
    std::int64_t done = 0;
    while (loader.next(batch)) {
      model.zero_grad(ctx);
      Tensor logits = model.forward(ctx, batch.images, /*train=*/true);
      Tensor probs = Tensor::empty(logits.shape(), ctx);
      be.softmax_cross_entropy_forward(ctx, logits, batch.labels, probs, batch_loss);
      be.accuracy(ctx, logits, batch.labels, batch_accuracy);
      const auto n = static_cast<float>(batch.labels.numel());
      be.axpy(ctx, n, batch_loss, loss_sum);
      be.axpy(ctx, n, batch_accuracy, correct);
      Tensor dlogits = Tensor::empty(logits.shape(), ctx);
      be.softmax_cross_entropy_backward(ctx, probs, batch.labels, 1.0f, dlogits);
      model.backward(ctx, dlogits);
      const float lr = learning_rate(options.schedule, options.optimizer.lr, optimizer.steps(), total_steps);
      optimizer.step(ctx, lr);
      samples += batch.labels.numel();
      ++done;
      maybe_die_for_test(optimizer.steps());
      if (options.on_progress && (done % kProgressEvery == 0 || done == batches)) {
        TrainProgress p;
        p.epoch = epoch + 1;
        p.epochs = options.epochs;
        p.batch = done;
        p.batches = batches;
        p.loss = loss_sum.item(ctx) / static_cast<double>(samples);
        p.accuracy = correct.item(ctx) / static_cast<double>(samples);
        p.elapsed_seconds = seconds_since(start);
        p.images_per_second = static_cast<double>(samples) / std::max(p.elapsed_seconds, 1e-9);
        options.on_progress(p);
      }
    }
    ctx.synchronize();
    EpochMetrics m;
    m.epoch = epoch + 1;
    m.seconds = seconds_since(start);
    m.images_per_second = static_cast<double>(samples) / std::max(m.seconds, 1e-9);
    m.train_loss = loss_sum.item(ctx) / static_cast<double>(std::max<std::int64_t>(samples, 1));
    m.train_accuracy = correct.item(ctx) / static_cast<double>(std::max<std::int64_t>(samples, 1));
    EvalResult eval = evaluate_checked(ctx, model, test, options.batch_size);
    m.test_loss = eval.loss;
    m.test_accuracy = eval.accuracy;
    // A diverged run is a failure, not a result: stop before its NaN weights overwrite the last
    // good checkpoint.
    CUDL_CHECK(std::isfinite(m.train_loss) && std::isfinite(m.test_loss),
               "fit: epoch {} ended with train loss {:.4g} and test loss {:.4g}: training diverged (a learning rate too "
               "high?); {}",
               m.epoch, m.train_loss, m.test_loss,
               options.save_path.empty() ? std::string("stopped")
                                         : fmt::format("stopped before saving it to '{}'", options.save_path));
    result.epochs.push_back(m);
    if (options.on_progress) {
      TrainProgress p;
      p.epoch = epoch + 1;
      p.epochs = options.epochs;
      p.batch = p.batches = batches;
      p.loss = m.train_loss;
      p.accuracy = m.train_accuracy;
      p.elapsed_seconds = m.seconds;
      p.images_per_second = m.images_per_second;
      p.epoch_done = true;
      options.on_progress(p);
    }

    const std::string metrics = history_json(result.epochs).dump();
    if (!options.save_path.empty()) {
      CheckpointInfo info;
      info.model = options.model_name;
      info.epoch = epoch + 1;
      info.step = optimizer.steps();
      info.seed = options.seed;
      info.extra = options.metadata;
      info.extra["metrics"] = metrics;
      save_checkpoint(options.save_path, ctx, model, &optimizer, info);
    }
    if (!options.metrics_path.empty()) {
      nlohmann::json j = {{"model", options.model_name},
                          {"device", result.device},
                          {"params", result.params},
                          {"epochs", history_json(result.epochs)}};
      write_file_atomically(options.metrics_path, j.dump(2) + "\n");
    }
  }
  return result;
}

std::string default_dataset(const std::string& model_name) {
  if (is_model_file(model_name)) return default_dataset_for_input(model_spec(model_name).input);
  if (model_name == "mlp" || model_name == "mnist_cnn") return "mnist";
  if (model_name.ends_with("_cifar")) return "cifar10";
  return "folder";
}

DataSplits load_dataset(const std::string& kind, const std::string& dir, const std::string& model_name) {
  const ModelSpec& spec = model_spec(model_name);
  DataSplits splits;
  if (kind == "mnist" || kind == "fashion-mnist") {
    splits = load_mnist_dir(dir);
  } else if (kind == "cifar10") {
    splits = load_cifar10_dir(dir);
  } else if (kind == "folder") {
    splits = load_image_folder(dir, static_cast<int>(spec.input[1]));
  } else {
    CUDL_THROW("--dataset: unknown '{}': expected mnist, fashion-mnist, cifar10 or folder", kind);
  }
  const Shape& got = splits.train.images.shape();
  CUDL_CHECK(got[1] == spec.input[0] && got[2] == spec.input[1] && got[3] == spec.input[2],
             "model {} takes [{}, {}, {}] images but the {} data in '{}' is {}", model_name, spec.input[0],
             spec.input[1], spec.input[2], kind, dir, got);
  CUDL_CHECK(splits.train.num_classes <= spec.num_classes,
             "model {} has {} outputs but the {} data in '{}' has {} classes", model_name, spec.num_classes, kind, dir,
             splits.train.num_classes);
  return splits;
}

}  // namespace cudl
