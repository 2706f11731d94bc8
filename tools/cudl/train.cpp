// `cudl train` and `cudl eval`.
#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cudl/engine/context.hpp"
#include "cudl/engine/cpu_threads.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/checkpoint/saved_run.hpp"
#include "cudl/models/train/curves.hpp"
#include "cudl/models/train/data_parallel.hpp"
#include "cudl/models/train/finetune.hpp"
#include "cudl/models/train/gradient_buckets.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/train_distributed.hpp"
#include "tools/cudl/train_extras.hpp"

namespace cudl::cli {

namespace {

// What train and eval parse that the training loop does not take. The loop's own settings bind
// straight into `fit` (the library's TrainConfig, models/train/train.hpp): adding a training
// option is a field there and one add_option here.
struct TrainArgs {
  std::string model = "mnist_cnn";
  std::string data;
  std::string dataset;
  std::int64_t batch_size = 128;  // eval's too
  std::optional<float> lr;        // default per optimizer: see default_learning_rate
  std::string device = "auto";
  std::string augment;  // empty: none; see parse_augment
  float color_jitter = 0.4f;
  int image_size = 0;  // 0: the model's
  FitOptions fit;
  ComputeOptions compute;
  bool seed_given = false;
  bool model_given = false;  // --model given: else resume and eval take the checkpoint's
  TrainExtras extras;        // fine-tuning and reconstruction (tools/cudl/train_extras.hpp)
};

// The data side of the run: validation and test hold-outs, the subset, the curves, mpirun.
struct RunControlArgs {
  double val_split = 0;
  double test_split = 0;  // a flat DIR/<class>/ folder's held-out test fraction
  std::int64_t subset = 0;
  std::string plot;
  double dist_timeout = 300;  // seconds a rank waits for the others in a collective (mpirun)
};

std::string model_names() {
  std::string names;
  for (const auto& s : model_specs()) names += (names.empty() ? "" : ", ") + s.name;
  return names;
}

void add_model_and_data_options(CLI::App* cmd, TrainArgs& a) {
  cmd->add_option("--model", a.model, "Model: " + model_names() + " (eval, --resume: default the checkpoint's)")
      ->capture_default_str()
      ->each([&a](const std::string&) { a.model_given = true; });
  cmd->add_option("--data", a.data,
                  "Dataset folder (IDX files for MNIST, CIFAR-10 binary batches, or train/ and test/ class folders)")
      ->required();
  cmd->add_option("--dataset", a.dataset,
                  "mnist | fashion-mnist | cifar10 | folder (default: the checkpoint's for eval and --resume, else the "
                  "model's)")
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "cifar10", "folder"}));
  cmd->add_option("--batch-size", a.batch_size, "Images per batch")
      ->transform(whole_number(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--device", a.device, "auto | cpu | cuda | cuda:N")->check(device_name())->capture_default_str();
  cmd->add_option("--image-size", a.image_size,
                  "Image folders: decode at NxN (default: the model's input; another size only when the model's "
                  "layers take it)")
      ->transform(whole_number(1, 8192));
  add_compute_options(cmd, a.compute);
}

// --reduce-lr-on-plateau N[,FACTOR]: patience N in [1, 100000], factor in (0, 1) (default 0.1).
struct PlateauSetting {
  std::int64_t patience = 0;
  double factor = 0.1;
};
std::string parse_plateau(const std::string& text, PlateauSetting& out) {
  const auto comma = text.find(',');
  std::vector<std::int64_t> n;
  try {
    n = parse_whole_number_list("patience", text.substr(0, comma), 1, 100000);
  } catch (const Error&) {
    return fmt::format("'{}' must be N or N,FACTOR with N a whole number in [1, 100000]", text);
  }
  if (n.size() != 1) return fmt::format("'{}' must be N or N,FACTOR with N a whole number in [1, 100000]", text);
  out.patience = n[0];
  if (comma == std::string::npos) return {};
  try {
    const auto f = parse_number_list("factor", text.substr(comma + 1), Bounds{0, 1, true, true});
    if (f.size() == 1) {
      out.factor = f[0];
      return {};
    }
  } catch (const Error&) {
  }
  return fmt::format("'{}': FACTOR must be one finite number in (0, 1)", text);
}

void add_run_control_options(CLI::App* cmd, RunControlArgs& r, FitOptions& o) {
  cmd->add_option("--val-split", r.val_split,
                  "Hold out this fraction of the training images (per class, seeded) for validation after every epoch")
      ->transform(finite_double(Bounds{0, 1, false, true}))
      ->capture_default_str();
  cmd->add_option("--test-split", r.test_split,
                  "A flat DIR/<class>/ folder (no train/ and test/): hold out this fraction of each class (seeded) as "
                  "the test set; recorded in the checkpoint for eval and --resume")
      ->transform(finite_double(Bounds{0, 1, true, true}));
  cmd->add_option("--save-best", o.save_best_path,
                  "Keep the checkpoint of the epoch with the best validation metric (accuracy; loss with --target "
                  "input) here; without --val-split, the lowest training loss (never the test set)");
  cmd->add_option("--early-stopping", o.early_stopping_patience,
                  "Stop after N epochs in a row without a better validation metric (training loss without "
                  "--val-split)")
      ->transform(whole_number(1, 100000));
  cmd->add_option("--reduce-lr-on-plateau",
                  "N[,FACTOR]: multiply the learning rate by FACTOR (default 0.1) after N epochs without a better "
                  "validation metric (training loss without --val-split)")
      ->check(CLI::Validator(
          [](std::string& text) {
            PlateauSetting p;
            return parse_plateau(text, p);
          },
          "N[,FACTOR]"))
      ->each([&o](const std::string& text) {
        PlateauSetting p;
        (void)parse_plateau(text, p);  // validated above
        o.plateau_patience = p.patience;
        o.plateau_factor = p.factor;
      });
  cmd->add_option("--clip-grad-norm", o.clip_grad_norm,
                  "Scale the gradients so their global L2 norm is at most X (computed on the device)")
      ->transform(finite_double(greater_than(0)));
  cmd->add_option("--max-steps", o.max_steps, "Stop after N optimizer steps in all (the schedule spans them)")
      ->transform(whole_number(1, std::int64_t{1} << 50));
  cmd->add_option("--accumulate-steps", o.accumulate_steps,
                  "Sum the gradients of N batches, then take one optimizer step (one all-reduce under mpirun): the "
                  "step of a batch N times --batch-size. --max-steps, the schedule, the progress bar and the "
                  "checkpoints count these steps; an epoch's last group takes the batches that are left")
      ->transform(whole_number(1, 1'000'000))
      ->capture_default_str();
  cmd->add_option("--eval-test-every", o.eval_test_every,
                  "With --val-split: also score the test set every N epochs, for the curves (default: once, at the "
                  "end); without --val-split it is scored every epoch")
      ->transform(whole_number(1, 100000));
  cmd->add_option("--subset", r.subset, "Train on N training images only (per class, seeded), for quick trials")
      ->transform(whole_number(1, std::int64_t{1} << 40));
  cmd->add_option("--plot", r.plot, "Redraw the loss and accuracy curves into this PNG after every epoch");
  cmd->add_option("--bucket-mb", o.bucket_mb,
                  "Under mpirun: all-reduce the gradients in buckets of about this many MB, each as soon as backward "
                  "has produced it, under the rest of backward (0: one all-reduce after backward)")
      ->transform(finite_double(at_least(0)))
      ->capture_default_str();
  cmd->add_option("--shard-update", o.shard_update,
                  "Under mpirun: true: each rank runs the optimizer on its 1/N of the parameters only (ZeRO stage 1: "
                  "the gradients reduce-scattered, the updated pieces all-gathered; the same update, the same bytes "
                  "moved); false: every rank updates all of them after an all-reduce. MPI ranks only; not with "
                  "--clip-grad-norm or --precision fp16, which need the whole gradient")
      ->capture_default_str();
  cmd->add_option("--dist-timeout", r.dist_timeout,
                  "Under mpirun: seconds a rank waits for the others at a step before it stops every rank")
      ->transform(finite_double(greater_than(0)))
      ->capture_default_str();
}

// The progress bar: one per epoch, created when the epoch's first report arrives.
std::function<void(const TrainProgress&)> progress_bars() {
  return epoch_progress_bars([](const TrainProgress& p) {
    const std::string scaling =
        p.loss_scale > 0 ? fmt::format(" scale {:g} skipped {}", p.loss_scale, p.skipped_steps) : std::string();
    return fmt::format("loss {:.4f} acc {:.2f}% lr {:.2e}{} {:.0f} img/s", p.loss, 100.0 * p.accuracy, p.lr, scaling,
                       p.images_per_second);
  });
}

void print_epoch_table(const TrainResult& r) {
  for (const auto& m : r.epochs) {
    const std::string val =
        m.has_val ? fmt::format(" | val loss {:.4f} acc {:.2f}%", m.val_loss, 100.0 * m.val_accuracy) : std::string();
    // The test split is scored every epoch without a validation split, else at the end (and every
    // --eval-test-every epochs).
    const std::string test = m.has_test
                                 ? fmt::format(" | test loss {:.4f} acc {:.2f}%", m.test_loss, 100.0 * m.test_accuracy)
                                 : std::string();
    fmt::print("epoch {:>3}: train loss {:.4f} acc {:.2f}%{}{} | lr {:.2e}{} | {:.1f} s, {:.0f} img/s{}\n", m.epoch,
               m.train_loss, 100.0 * m.train_accuracy, val, test, m.lr,
               m.loss_scale > 0 ? fmt::format(" | loss scale {:g}, {} steps skipped", m.loss_scale, m.skipped_steps)
                                : std::string(),
               m.seconds, m.images_per_second, m.epoch == r.best_epoch ? " *" : "");
  }
}

// Why the run ended, the best epoch, wall time, throughput and the pool's peak, then the test
// result: the best checkpoint's for a save-best run (`save_best`), else the last epoch's.
void print_summary(const TrainResult& r, const FitOptions& o, const std::string& loss, bool reconstruction) {
  const std::int64_t patience = o.early_stopping_patience;
  const bool save_best = !o.save_best_path.empty();
  if (r.stopped == "early_stopping")
    fmt::print("early stopping: no better {} for {} epochs since epoch {}\n", r.monitor, patience, r.best_epoch);
  if (r.stopped == "max_steps" && !r.epochs.empty())
    fmt::print("stopped at --max-steps {} (epoch {})\n", o.max_steps, r.epochs.back().epoch);
  const EpochMetrics* best = r.best();
  if (best && !reconstruction) {
    const std::string by = best->has_val ? fmt::format("val accuracy {:.2f}%", 100.0 * best->val_accuracy)
                                         : fmt::format("train loss {:.4f}", best->train_loss);
    fmt::print("best epoch {} of {}: {}{}\n", best->epoch, r.epochs.size(), by,
               best->has_test ? fmt::format(", test accuracy {:.2f}%", 100.0 * best->test_accuracy) : std::string());
  }
  fmt::print("wall time {:.1f} s, {:.0f} img/s trained, memory pool peak {:.1f} MiB\n", r.wall_seconds,
             static_cast<double>(r.images_trained) / std::max(r.wall_seconds, 1e-9),
             static_cast<double>(r.pool_peak_bytes) / (1 << 20));
  if (r.epochs.empty()) return;
  const bool from_best = save_best && best && best->has_test;
  const EpochMetrics& shown = from_best ? *best : r.epochs.back();
  if (reconstruction)
    print_reconstruction_result(shown, loss, from_best);
  else if (from_best)
    fmt::print("test accuracy of the best checkpoint (epoch {}): {:.2f}%\n", shown.epoch, 100.0 * shown.test_accuracy);
  else
    fmt::print("test accuracy: {:.2f}%\n", 100.0 * shown.test_accuracy);
}

// What train and eval read: the dataset's tree, and the files they load.
std::vector<PathUse> train_inputs(const TrainArgs& a) {
  return {{"--data", a.data, PathUse::Kind::tree},
          {"--model", a.model.ends_with(".json") || a.model.ends_with(".onnx") ? a.model : std::string()},
          {"--resume", a.fit.resume_path},
          {"--init-from", a.extras.init_from}};
}

void train_ranks(TrainArgs a, const RunControlArgs& c, DistributedRun& dist) {
  std::string saved_dataset, recorded_model;
  double test_split = c.test_split;
  if (!a.fit.resume_path.empty()) {
    // The model and the dataset kind come from the checkpoint unless given (models/checkpoint/saved_run.hpp).
    check_input_file("--resume", a.fit.resume_path);
    const SavedRun saved = read_saved_run(a.fit.resume_path);
    a.model = resolve_model("--resume", a.model_given ? a.model : std::string(), a.fit.resume_path, saved);
    saved_dataset = saved.dataset;
    recorded_model = saved.model;
    if (test_split == 0) test_split = saved.test_split;  // the same held-out test set
  }
  (void)model_spec(a.model);
  // Every output is checked writable before the data is read: a run must not fail at its end.
  // Only the writing rank writes (and checks); the others keep no outputs.
  if (!dist.writer()) a.fit.save_path = a.fit.metrics_path = a.fit.save_best_path = {};
  const std::string& save_best = a.fit.save_best_path;
  const std::string plot = dist.writer() ? c.plot : std::string();
  check_outputs_spare_inputs(train_inputs(a),
                             {{"--save", a.fit.save_path},
                              {"--save-best", save_best},
                              {"--metrics-json", a.fit.metrics_path},
                              {"--plot", plot},
                              {"--samples", a.extras.samples}},
                             {{"--save", "--resume"}});  // resuming in place continues the run
  check_writable_output("--save", a.fit.save_path);
  check_writable_output("--metrics-json", a.fit.metrics_path);
  check_writable_output("--save-best", save_best);
  check_writable_output("--plot", plot);
  check_image_output("--plot", plot);
  check_train_extras(a.extras, a.model, a.fit.optimizer.weight_decay, !a.fit.resume_path.empty());
  if (!a.fit.resume_path.empty()) {
    // The resume file's metadata is checked before the data is read (its tensors when fit loads them).
    check_input_file("--resume", a.fit.resume_path);
    const CheckpointInfo info = read_checkpoint_info(a.fit.resume_path);
    CUDL_CHECK(same_model_name(info, a.model), "--resume: '{}' holds a {} checkpoint, but --model is {}",
               a.fit.resume_path, info.model, a.model);
    CUDL_CHECK(
        info.epoch < a.fit.epochs,
        "--resume: '{}' is at epoch {} already; --epochs {} asks for no more: give --epochs above {} to train on",
        a.fit.resume_path, info.epoch, a.fit.epochs, info.epoch);
    if (dist.writer())
      fmt::print("resuming '{}' at epoch {} (step {}): training epochs {} to {}\n", a.fit.resume_path, info.epoch,
                 info.step, info.epoch + 1, a.fit.epochs);
    // Dropout's mask streams derive from the build seed: resume with the run's own.
    if (!a.seed_given) a.fit.seed = info.seed;
  }
  const std::string kind = !a.dataset.empty()       ? a.dataset
                           : !saved_dataset.empty() ? saved_dataset
                                                    : default_dataset(a.model);
  const Augment augment = parse_augment(a.augment, a.color_jitter);
  DataSplits data = load_train_data(a.extras, kind, a.data, a.model, a.image_size);
  hold_out_test(data, test_split, a.fit.seed, a.data);  // a flat folder's test set, seeded by the run's seed
  // The subset, then the hold-out, both seeded by the run's seed: a resumed run (same seed)
  // trains and validates on the same images.
  if (c.subset > 0) data.train = stratified_subset(data.train, c.subset, a.fit.seed);
  auto [train, validation] = split_validation(data.train, c.val_split, a.fit.seed);
  Context ctx(dist.device(a.device));
  apply_compute_options(ctx, a.compute);
  Communicator* comm = dist.connect(ctx, c.dist_timeout);
  Sequential model = make_model(a.model);
  const std::string new_head = prepare_model(a.extras, model);
  model.build(ctx, a.fit.seed);
  finish_model(a.extras, ctx, model, new_head);
  const ParameterCounts counts = count_parameters(model);
  if (dist.writer())
    fmt::print("training {} ({} params: {} trainable, {} frozen) on {} ({} train{} / {} test images) on {}\n", a.model,
               counts.trainable + counts.frozen, counts.trainable, counts.frozen, kind, train.size(),
               validation.size() > 0 ? fmt::format(" / {} validation", validation.size()) : "", data.test.size(),
               ctx.device());
  // Which path feeds the batches (the loader decides the same way; forcing an impossible one fails here).
  const ResidentChoice resident =
      choose_resident(train, ctx.device(), augment, a.fit.resident_data, kWholeEpochStagingLimit);
  if (dist.writer()) fmt::print("training data: {}\n", resident.reason);
  if (a.fit.accumulate_steps > 1 && dist.writer())
    fmt::print("gradient accumulation: one optimizer step per {} batches of {} ({} images)\n", a.fit.accumulate_steps,
               a.batch_size, a.fit.accumulate_steps * a.batch_size);
  if (comm && dist.writer()) {
    const std::int64_t buckets = bucket_count(counts.trainable, bucket_elements_for_mb(a.fit.bucket_mb));
    const bool sharded = shards_update(a.fit, *comm, ctx.precision());
    fmt::print("data-parallel: {} ranks over {}, global batch {} ({} per rank); gradients {} {}{}\n", comm->size(),
               comm->name(), a.batch_size, a.batch_size / comm->size(), sharded ? "reduce-scattered" : "all-reduced",
               buckets > 1 ? fmt::format("in {} buckets of {:g} MB under backward", buckets, a.fit.bucket_mb)
                           : std::string("in one piece after backward"),
               sharded ? fmt::format(", each rank updating its 1/{} of the parameters", comm->size()) : "");
  }

  // The loop's settings as parsed (bound straight into a.fit), and what only this run knows.
  FitOptions o = a.fit;
  // A model file keeps its recorded name in a resumed run's checkpoints, even when it was rebuilt
  // from the copy the checkpoint holds.
  o.model_name = !recorded_model.empty() && is_model_file(recorded_model) ? recorded_model : a.model;
  o.batch_size = a.batch_size;
  o.optimizer.lr = a.lr.value_or(default_learning_rate(o.optimizer.kind));
  o.augment = augment;
  o.comm = comm;
  if (dist.writer()) o.on_progress = progress_bars();
  if (!plot.empty()) {
    o.on_epoch_end = [plot](const TrainResult& r) {
      write_training_curves(metrics_document(r), "the run's metrics", plot);
    };
  }
  add_metadata(a.extras, a.model, kind, data, o);
  if (test_split > 0) o.metadata[kTestSplitKey] = fmt::format("{}", test_split);
  // One loop for every task (models/train/train.hpp): classification or reconstruction.
  const std::unique_ptr<Task> task = make_task(a.extras);
  const bool reconstruction = a.extras.target == Target::input;
  if (reconstruction && dist.writer()) {
    o.on_progress = reconstruction_progress_bars();
    const auto curves = o.on_epoch_end;
    const std::string loss = loss_name(a.extras.loss);
    o.on_epoch_end = [curves, loss](const TrainResult& r) {
      print_reconstruction_epoch(r.epochs.back(), loss);
      if (curves) curves(r);
    };
  }
  const OtherLoadMeter other_load;  // flags img/s measured on a busy machine
  TrainResult r = cudl::train(ctx, model, *task, TrainData{train, validation, data.test}, o);
  if (!dist.writer()) return;
  if (comm) {
    fmt::print("data-parallel: rank 0 waited {:.2f} s of the run's {:.2f} s in the gradient all-reduce ({:.1f}%)\n",
               comm->allreduce_seconds(), r.wall_seconds,
               100.0 * comm->allreduce_seconds() / std::max(r.wall_seconds, 1e-9));
  }
  if (!reconstruction) print_epoch_table(r);
  print_summary(r, o, loss_name(a.extras.loss), reconstruction);
  if (const double busy = other_load.busy_cores(); ctx.device().is_cpu() && busy > 0.25)
    fmt::print(
        "under load: other processes kept {:.1f} of {} cores busy during the run (host threads here at the "
        "end: {}): img/s is not this machine's quiet number\n",
        busy, available_cpus(), cpu_threads());
  if (!a.fit.save_path.empty()) fmt::print("saved {}\n", a.fit.save_path);
  if (!save_best.empty() && r.best_epoch > 0) fmt::print("best checkpoint (epoch {}): {}\n", r.best_epoch, save_best);
  if (!a.extras.samples.empty()) fmt::print("samples in {}\n", a.extras.samples);
  if (!plot.empty()) fmt::print("curves: {}\n", plot);
}

void run_train(const TrainArgs& a, const RunControlArgs& c) {
  DistributedRun dist;
  try {
    train_ranks(a, c, dist);
  } catch (const std::exception& e) {
    dist.fail(e.what());  // several ranks: print, stop them all (does not return)
    throw;                // one process: main() prints it
  }
}

// ---------------------------------------------------------------- eval

struct EvalArgs {
  std::string weights, labels, json;
  bool strict = false;
};

// The aligned report: totals, per-class accuracy and (up to 20 classes) the confusion matrix.
void print_report(const EvalReport& r, const std::vector<std::string>& names, const std::string& header) {
  fmt::print("{} ({} images): loss {:.4f} top-1 {:.2f}% top-{} {:.2f}%\n", header, r.samples, r.loss, 100.0 * r.top1,
             r.k, 100.0 * r.topk);
  std::size_t width = 5;
  for (const auto& n : names) width = std::max(width, n.size());
  const int index_width = fmt::formatted_size("{}", std::max(r.classes - 1, 0));
  fmt::print("\nper-class accuracy:\n");
  for (int c = 0; c < r.classes; ++c) {
    const auto u = static_cast<std::size_t>(c);
    std::int64_t count = 0;
    for (auto v : r.confusion[u]) count += v;
    if (count == 0) continue;  // a class of the model that the data does not have
    fmt::print("  {:>{}} {:<{}} {:>7.2f}%  ({} of {})\n", c, index_width, names[u], width,
               100.0 * r.per_class_accuracy[u], r.confusion[u][u], count);
  }
  if (r.classes > 20) {
    fmt::print("\n(confusion matrix of {} classes: see --json)\n", r.classes);
    return;
  }
  std::int64_t largest = 1;
  for (const auto& row : r.confusion)
    for (auto v : row) largest = std::max(largest, v);
  const int cell = std::max<int>(static_cast<int>(fmt::formatted_size("{}", largest)), index_width) + 1;
  fmt::print("\nconfusion matrix (rows: true class, columns: predicted class):\n");
  fmt::print("  {:>{}} {:<{}}", "", index_width, "", width);
  for (int c = 0; c < r.classes; ++c) fmt::print("{:>{}}", c, cell);
  fmt::print("\n");
  for (int t = 0; t < r.classes; ++t) {
    fmt::print("  {:>{}} {:<{}}", t, index_width, names[static_cast<std::size_t>(t)], width);
    for (int p = 0; p < r.classes; ++p)
      fmt::print("{:>{}}", r.confusion[static_cast<std::size_t>(t)][static_cast<std::size_t>(p)], cell);
    fmt::print("\n");
  }
}

nlohmann::json report_json(const EvalReport& r, const std::vector<std::string>& names, const std::string& model,
                           const std::string& kind, const std::string& weights) {
  nlohmann::json per_class = nlohmann::json::array();
  for (int c = 0; c < r.classes; ++c) {
    const auto u = static_cast<std::size_t>(c);
    std::int64_t count = 0;
    for (auto v : r.confusion[u]) count += v;
    nlohmann::json entry = {{"class", c}, {"name", names[u]}, {"images", count}};
    entry["accuracy"] = count > 0 ? nlohmann::json(r.per_class_accuracy[u]) : nlohmann::json(nullptr);
    per_class.push_back(entry);
  }
  return {{"model", model},
          {"dataset", kind},
          {"weights", weights},
          {"images", r.samples},
          {"loss", r.loss},
          {"top1", r.top1},
          {fmt::format("top{}", r.k), r.topk},
          {"class_names", std::vector<std::string>(names.begin(), names.begin() + r.classes)},
          {"per_class", per_class},
          {"confusion", r.confusion}};
}

void run_eval(const TrainArgs& a, const EvalArgs& args) {
  EvalArgs e = args;
  e.weights = resolve_onnx_weights("eval", a.model_given ? a.model : std::string(), e.weights);
  CUDL_CHECK(!e.weights.empty(),
             "eval: --weights is required (a checkpoint or weights file), unless --model is an ONNX file");
  std::vector<PathUse> inputs = train_inputs(a);
  inputs.push_back({"--weights", args.weights});
  inputs.push_back({"--labels", e.labels});
  check_outputs_spare_inputs(inputs, {{"--json", e.json}});
  check_writable_output("--json", e.json);
  // The model, dataset kind, class names, input size and head from the checkpoint, unless given.
  const SavedRun saved = read_saved_run(e.weights);
  const std::string model_name = resolve_model("eval", a.model_given ? a.model : std::string(), e.weights, saved);
  const std::string kind = !a.dataset.empty()       ? a.dataset
                           : !saved.dataset.empty() ? saved.dataset
                                                    : default_dataset(model_name);
  Sequential model = make_model(model_name);
  const ModelSpec spec = model_spec(model_name);
  const bool new_head =
      apply_saved_head(e.weights, model);  // a fine-tuned checkpoint's head (models/train/finetune.hpp)
  const int outputs = new_head ? saved.num_classes : 0;
  int image_size = a.image_size;
  if (image_size == 0 && kind == "folder" && saved.preprocess && saved.preprocess->crop_height != spec.input[1])
    image_size = saved.preprocess->crop_height;  // trained with --image-size
  DataSplits data = load_dataset(kind, a.data, model_name, image_size, outputs);
  if (data.flat) {
    // A flat folder: the test images the training run held out (its fraction and seed).
    CUDL_CHECK(saved.test_split > 0,
               "eval: '{}' is a flat folder (<class>/ folders, no train/ and test/), and '{}' records no --test-split "
               "to take its test images from",
               a.data, e.weights);
    hold_out_test(data, saved.test_split, saved.seed, a.data);
  }
  const int classes = outputs > 0 ? outputs : spec.num_classes;
  std::vector<std::string> names;
  if (!e.labels.empty())
    names =
        read_label_file("--labels", e.labels, static_cast<std::size_t>(std::max(data.test.num_classes, 0)), "the data");
  else if (static_cast<int>(saved.classes.size()) == classes)
    names = saved.classes;
  else
    names = class_names(kind, data.test);
  Context ctx(Device::parse(a.device));
  apply_compute_options(ctx, a.compute);
  model.build(ctx, 0);
  load_weights_reporting_unused(e.weights, ctx, model, e.strict);
  const EvalReport r = evaluate_report(ctx, model, data.test, a.batch_size);
  // A NaN or inf loss is not an evaluation result: the weights do not work on this data.
  CUDL_CHECK(std::isfinite(r.loss), "eval: the loss of '{}' on the {} test split is {}: the weights are unusable",
             e.weights, kind, r.loss);
  // Classes of the model beyond the names known (a folder with fewer classes) go by number.
  for (auto c = static_cast<int>(names.size()); c < r.classes; ++c) names.push_back(std::to_string(c));
  print_report(r, names, fmt::format("{} on {} test split", model_name, kind));
  if (!e.json.empty()) {
    write_file_atomically(e.json, report_json(r, names, model_name, kind, e.weights)
                                          .dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
                                      "\n");
    fmt::print("\nwrote {}\n", e.json);
  }
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto c = std::make_shared<RunControlArgs>();
  auto* cmd = app.add_subcommand("train", "Train a model on a dataset, evaluating on its test split after every epoch");
  add_model_and_data_options(cmd, *a);
  FitOptions& fit = a->fit;
  cmd->add_option("--epochs", fit.epochs, "Passes over the training set")
      ->transform(whole_number(1, 100000))
      ->capture_default_str();
  cmd->add_option("--optimizer", fit.optimizer.kind, "sgd | adam | adamw")
      ->transform(named_enum({OptimizerKind::sgd, OptimizerKind::adam, OptimizerKind::adamw}, optimizer_name))
      ->default_str(optimizer_name(fit.optimizer.kind));
  cmd->add_option("--lr", a->lr, "Learning rate, the peak for onecycle (default: 3e-3 for adam/adamw, 0.05 for sgd)")
      ->transform(finite_float(greater_than(0)));
  cmd->add_option("--momentum", fit.optimizer.momentum, "SGD momentum")
      ->transform(finite_float(between(0, 1)))
      ->capture_default_str();
  cmd->add_flag("--nesterov", fit.optimizer.nesterov, "SGD with Nesterov momentum");
  cmd->add_option("--weight-decay", fit.optimizer.weight_decay, "L2 penalty (decoupled for adamw)")
      ->transform(finite_float(at_least(0)))
      ->capture_default_str();
  cmd->add_option("--schedule", fit.schedule, "Learning-rate schedule: none | step | cosine | onecycle")
      ->transform(named_enum({Schedule::none, Schedule::step, Schedule::cosine, Schedule::onecycle}, schedule_name))
      ->default_str(schedule_name(fit.schedule));
  cmd->add_option("--seed", fit.seed,
                  "Seed for initialisation, shuffling, dropout, --val-split and --subset (default on --resume: the "
                  "run's)")
      ->transform(seed_number())
      ->capture_default_str()
      ->each([a](const std::string&) { a->seed_given = true; });
  cmd->add_option("--save", fit.save_path, "Write a checkpoint (safetensors) here after every epoch");
  cmd->add_option("--resume", fit.resume_path, "Continue the run saved in this checkpoint");
  cmd->add_option("--metrics-json", fit.metrics_path, "Write per-epoch metrics as JSON here");
  cmd->add_option(
         "--augment", a->augment,
         "Training augmentation, seeded per (seed, epoch, image): a comma-separated list of crop (pad 4 and "
         "crop), random-resized-crop (scale 0.08-1, ratio 3/4-4/3), flip, color-jitter; given bare: crop,flip; not "
         "given: none")
      ->expected(0, 1)
      ->default_str("default");
  cmd->add_option("--workers", fit.workers,
                  "Image folders and augmentation: threads that decode and augment batches ahead of the step (0: "
                  "min(4, hardware threads))")
      ->transform(whole_number(0, 256))
      ->capture_default_str();
  cmd->add_option("--prefetch", fit.prefetch,
                  "Batches staged ahead of the step; bounds the pipeline's memory (0: 2 per worker)")
      ->transform(whole_number(0, 4096))
      ->capture_default_str();
  cmd->add_option_function<std::string>(
         "--resident-data", [f = &fit](const std::string& v) { f->resident_data = parse_resident_data(v); },
         "true: copy the training set to the device once and gather each batch there (one small copy of the "
         "order per epoch, no host work per step; the same batches); false: stage it on the host each epoch; "
         "auto: true on a GPU when it takes under a quarter of the free memory (no augmentation, not a listed "
         "folder)")
      ->check(CLI::IsMember({"auto", "true", "false"}))
      ->default_str("auto");
  cmd->add_option("--color-jitter", a->color_jitter,
                  "Strength S of --augment color-jitter: brightness, contrast and saturation factors in [1-S, 1+S] "
                  "(no hue)")
      ->transform(finite_float(between(0, 1)))
      ->capture_default_str();
  add_run_control_options(cmd, *c, fit);
  add_train_extra_options(cmd, a->extras);
  cmd->callback([a, c] { run_train(*a, *c); });
}

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  a->model.clear();  // the checkpoint's unless given
  auto e = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand(
      "eval", "Evaluate saved weights on a dataset's test split: top-1/top-5, per-class accuracy, confusion matrix");
  add_model_and_data_options(cmd, *a);
  cmd->add_option("--weights", e->weights,
                  "A checkpoint or weights file (safetensors), or an ONNX model; required unless --model is NAME.onnx")
      ->check(input_file());
  cmd->add_option("--labels", e->labels, "Class names, one per line (default: the dataset's)")->check(input_file());
  cmd->add_option("--json", e->json, "Also write the report (accuracies, per class, confusion matrix) as JSON here");
  add_strict_option(cmd, e->strict);
  cmd->callback([a, e] { run_eval(*a, *e); });
}

}  // namespace cudl::cli
