// `cudl train` and `cudl eval`.
#include <fmt/format.h>

#include <cmath>
#include <memory>
#include <optional>

#include "engine/context.hpp"
#include "engine/io/safetensors.hpp"
#include "models/checkpoint.hpp"
#include "models/finetune.hpp"
#include "models/trainer.hpp"
#include "models/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/progress.hpp"
#include "tools/cudl/train_extras.hpp"

namespace cudl::cli {

namespace {

struct TrainArgs {
  std::string model = "mnist_cnn";
  std::string data;
  std::string dataset;
  std::int64_t epochs = 10;
  std::int64_t batch_size = 128;
  std::string optimizer = "adam";
  std::optional<float> lr;  // default per optimizer: see default_learning_rate
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  bool nesterov = false;
  std::string schedule = "onecycle";
  std::string device = "auto";
  std::uint64_t seed = 1;
  std::string save, resume, metrics_json;
  bool augment = false;
  bool deterministic = true;
  bool seed_given = false;
  TrainExtras extras;  // fine-tuning and reconstruction (tools/cudl/train_extras.hpp)
};

std::string model_names() {
  std::string names;
  for (const auto& s : model_specs()) names += (names.empty() ? "" : ", ") + s.name;
  return names;
}

void add_model_and_data_options(CLI::App* cmd, TrainArgs& a) {
  cmd->add_option("--model", a.model, "Model: " + model_names())->capture_default_str();
  cmd->add_option("--data", a.data,
                  "Dataset folder (IDX files for MNIST, CIFAR-10 binary batches, or train/ and test/ class folders)")
      ->required();
  cmd->add_option("--dataset", a.dataset, "mnist | fashion-mnist | cifar10 | folder (default: the model's)")
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "cifar10", "folder"}));
  cmd->add_option("--batch-size", a.batch_size, "Images per batch")
      ->transform(whole_number(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--device", a.device, "auto | cpu | cuda | cuda:N")->check(device_name())->capture_default_str();
  add_deterministic_option(cmd, a.deterministic);
}

void run_train(TrainArgs a) {
  (void)model_spec(a.model);
  // Every output is checked writable before the data is read: a run must not fail at its end.
  check_writable_output("--save", a.save);
  check_writable_output("--metrics-json", a.metrics_json);
  check_train_extras(a.extras, a.model, a.weight_decay, !a.resume.empty());
  if (!a.resume.empty()) {
    // The resume file's metadata is checked before the data is read (its tensors when fit loads them).
    check_input_file("--resume", a.resume);
    const CheckpointInfo info = read_checkpoint_info(a.resume);
    CUDL_CHECK(info.model == a.model, "--resume: '{}' holds a {} checkpoint, but --model is {}", a.resume, info.model,
               a.model);
    // Dropout's mask streams derive from the build seed: resume with the run's own.
    if (!a.seed_given) a.seed = info.seed;
  }
  const std::string kind = a.dataset.empty() ? default_dataset(a.model) : a.dataset;
  DataSplits data = load_train_data(a.extras, kind, a.data, a.model);
  Context ctx(Device::parse(a.device));
  ctx.set_deterministic(a.deterministic);
  Sequential model = make_model(a.model);
  prepare_model(a.extras, model);
  model.build(ctx, a.seed);
  finish_model(a.extras, ctx, model);
  fmt::print("training {} ({} params) on {} ({} train / {} test images) on {}\n", a.model, model.parameter_count(),
             kind, data.train.labels.numel(), data.test.labels.numel(), ctx.device());

  FitOptions o;
  o.model_name = a.model;
  o.epochs = a.epochs;
  o.batch_size = a.batch_size;
  o.optimizer.kind = parse_optimizer(a.optimizer);
  o.optimizer.lr = a.lr.value_or(default_learning_rate(o.optimizer.kind));
  o.optimizer.momentum = a.momentum;
  o.optimizer.nesterov = a.nesterov;
  o.optimizer.weight_decay = a.weight_decay;
  o.schedule = parse_schedule(a.schedule);
  o.seed = a.seed;
  o.save_path = a.save;
  o.resume_path = a.resume;
  o.metrics_path = a.metrics_json;
  o.augment = a.augment;
  add_metadata(a.extras, a.model, data, o);
  if (run_reconstruction_if_asked(a.extras, ctx, model, data, o)) return;
  // One bar per epoch, created when the epoch's first report arrives.
  auto bar = std::make_shared<std::unique_ptr<ProgressBar>>();
  o.on_progress = [bar](const TrainProgress& p) {
    const std::string status =
        fmt::format("loss {:.4f} acc {:.2f}% {:.0f} img/s", p.loss, 100.0 * p.accuracy, p.images_per_second);
    if (!*bar) *bar = std::make_unique<ProgressBar>(fmt::format("epoch {}/{}", p.epoch, p.epochs));
    if (p.epoch_done) {
      (*bar)->finish(status);
      bar->reset();
      return;
    }
    (*bar)->update(p.batch, p.batches, p.elapsed_seconds, status);
  };
  TrainResult r = fit(ctx, model, data.train, data.test, o);
  for (const auto& m : r.epochs) {
    fmt::print("epoch {:>3}: train loss {:.4f} acc {:.2f}% | test loss {:.4f} acc {:.2f}% | {:.1f} s, {:.0f} img/s\n",
               m.epoch, m.train_loss, 100.0 * m.train_accuracy, m.test_loss, 100.0 * m.test_accuracy, m.seconds,
               m.images_per_second);
  }
  if (!r.epochs.empty()) fmt::print("test accuracy: {:.2f}%\n", 100.0 * r.epochs.back().test_accuracy);
  if (!a.save.empty()) fmt::print("saved {}\n", a.save);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "Train a model on a dataset, evaluating on its test split after every epoch");
  add_model_and_data_options(cmd, *a);
  cmd->add_option("--epochs", a->epochs, "Passes over the training set")
      ->transform(whole_number(1, 100000))
      ->capture_default_str();
  cmd->add_option("--optimizer", a->optimizer, "sgd | adam | adamw")
      ->check(CLI::IsMember({"sgd", "adam", "adamw"}))
      ->capture_default_str();
  cmd->add_option("--lr", a->lr, "Learning rate, the peak for onecycle (default: 3e-3 for adam/adamw, 0.05 for sgd)")
      ->transform(finite_float(greater_than(0)));
  cmd->add_option("--momentum", a->momentum, "SGD momentum")
      ->transform(finite_float(between(0, 1)))
      ->capture_default_str();
  cmd->add_flag("--nesterov", a->nesterov, "SGD with Nesterov momentum");
  cmd->add_option("--weight-decay", a->weight_decay, "L2 penalty (decoupled for adamw)")
      ->transform(finite_float(at_least(0)))
      ->capture_default_str();
  cmd->add_option("--schedule", a->schedule, "Learning-rate schedule: none | step | cosine | onecycle")
      ->check(CLI::IsMember({"none", "step", "cosine", "onecycle"}))
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed for initialisation, shuffling and dropout (default on --resume: the run's)")
      ->transform(seed_number())
      ->capture_default_str()
      ->each([a](const std::string&) { a->seed_given = true; });
  cmd->add_option("--save", a->save, "Write a checkpoint (safetensors) here after every epoch");
  cmd->add_option("--resume", a->resume, "Continue the run saved in this checkpoint");
  cmd->add_option("--metrics-json", a->metrics_json, "Write per-epoch metrics as JSON here");
  cmd->add_flag("--augment", a->augment, "Random crops and horizontal flips (CIFAR-10, image folders)");
  add_train_extra_options(cmd, a->extras);
  cmd->callback([a] { run_train(*a); });
}

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto weights = std::make_shared<std::string>();
  auto strict = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("eval", "Evaluate saved weights on a dataset's test split");
  add_model_and_data_options(cmd, *a);
  cmd->add_option("--weights", *weights, "A checkpoint or weights file (safetensors)")->required()->check(input_file());
  add_strict_option(cmd, *strict);
  cmd->callback([a, weights, strict] {
    const std::string kind = a->dataset.empty() ? default_dataset(a->model) : a->dataset;
    DataSplits data = load_dataset(kind, a->data, a->model);
    Context ctx(Device::parse(a->device));
    ctx.set_deterministic(a->deterministic);
    Sequential model = make_model(a->model);
    (void)apply_saved_head(*weights, model);  // a fine-tuned checkpoint's head (models/finetune.hpp)
    model.build(ctx, 0);
    load_weights_reporting_unused(*weights, ctx, model, *strict);
    EvalResult r = evaluate(ctx, model, data.test, a->batch_size);
    // A NaN or inf loss is not an evaluation result: the weights do not work on this data.
    CUDL_CHECK(std::isfinite(r.loss), "eval: the loss of '{}' on the {} test split is {}: the weights are unusable",
               *weights, kind, r.loss);
    fmt::print("{} on {} test split ({} images): loss {:.4f} accuracy {:.2f}%\n", a->model, kind, r.samples, r.loss,
               100.0 * r.accuracy);
  });
}

}  // namespace cudl::cli
