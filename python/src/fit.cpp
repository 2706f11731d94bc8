// Model.fit: training through the library's own loop (cudl::fit) and its option struct
// (FitOptions), with the CLI's training options as keywords. Every use of FitOptions and fit in
// the Python module is in this file, so that a change of the training entry point is one port.
//
// Threads: the GIL is released while fit runs and taken back for Python callbacks (epoch end) and,
// every few steps, to let Python run its signal handlers: Ctrl-C raises KeyboardInterrupt out of
// the training loop between two steps. Checkpoints (save=, save_best=) are written atomically at
// epoch ends only, so the last one on disk stays whole.
#include <cmath>
#include <optional>
#include <utility>

#include "cudl/models/train/trainer.hpp"
#include "python/src/common.hpp"

namespace cudl::python {
namespace {

// Thrown (and caught below) when a callback asks to stop: fit ends after the epoch it reported.
struct StopRequested {};

py::dict epoch_logs(const EpochMetrics& m, bool has_val, bool has_test) {
  py::dict logs;
  logs["loss"] = m.train_loss;
  logs["accuracy"] = m.train_accuracy;
  // The held-out set the library calls "test" is Python's validation set unless test_data was given.
  if (has_test) {
    if (has_val) {
      logs["val_loss"] = m.val_loss;
      logs["val_accuracy"] = m.val_accuracy;
    }
    logs["test_loss"] = m.test_loss;
    logs["test_accuracy"] = m.test_accuracy;
  } else if (has_val) {
    logs["val_loss"] = m.test_loss;
    logs["val_accuracy"] = m.test_accuracy;
  }
  logs["lr"] = m.lr;
  logs["seconds"] = m.seconds;
  return logs;
}

py::dict history(const std::vector<EpochMetrics>& epochs, bool has_val, bool has_test) {
  py::dict h;
  for (const EpochMetrics& m : epochs) {
    for (auto [key, value] : epoch_logs(m, has_val, has_test)) {
      if (!h.contains(key)) h[key] = py::list();
      h[key].cast<py::list>().append(value);
    }
  }
  return h;
}

Augment parse_augment_list(const std::vector<std::string>& names) {
  Augment a;
  for (const auto& n : names) {
    if (n == "crop")
      a.random_crop = true;
    else if (n == "flip")
      a.hflip = true;
    else if (n == "resized-crop")
      a.random_resized_crop = true;
    else
      bad_value("fit: augment '{}': expected a list of crop, flip and resized-crop", n);
  }
  return a;
}

struct FitArgs {
  std::int64_t epochs, batch_size;
  double validation_split;
  std::optional<std::pair<py::array, py::array>> validation_data, test_data;
  py::list callbacks;
  std::string optimizer;
  std::optional<float> lr;
  float momentum;
  bool nesterov;
  float weight_decay;
  std::string schedule;
  std::optional<std::uint64_t> seed;
  std::string save, save_best, resume, metrics_json;
  std::vector<std::string> augment;
  int workers, prefetch;
  std::int64_t early_stopping;
  std::optional<std::pair<std::int64_t, double>> reduce_lr_on_plateau;
  double clip_grad_norm;
  std::int64_t max_steps;
};

FitOptions fit_options(const PyModel& m, const FitArgs& a) {
  if (a.epochs < 1) bad_value("fit: epochs {} must be >= 1", a.epochs);
  if (a.batch_size < 1) bad_value("fit: batch_size {} must be >= 1", a.batch_size);
  if (a.workers < 0 || a.prefetch < 0)
    bad_value("fit: workers ({}) and prefetch ({}) must be >= 0", a.workers, a.prefetch);
  if (a.lr && !(std::isfinite(*a.lr) && *a.lr > 0)) bad_value("fit: lr {} must be a finite number > 0", *a.lr);
  FitOptions o;
  o.model_name = m.name;
  o.epochs = a.epochs;
  o.batch_size = a.batch_size;
  try {
    o.optimizer.kind = parse_optimizer(a.optimizer);
    o.schedule = parse_schedule(a.schedule);
  } catch (const Error& e) {
    throw ValueError(e.what());
  }
  o.optimizer.lr = a.lr.value_or(default_learning_rate(o.optimizer.kind));
  o.optimizer.momentum = a.momentum;
  o.optimizer.nesterov = a.nesterov;
  o.optimizer.weight_decay = a.weight_decay;
  o.seed = a.seed.value_or(m.seed);
  o.save_path = a.save;
  o.save_best_path = a.save_best;
  o.resume_path = a.resume;
  o.metrics_path = a.metrics_json;
  o.augment = parse_augment_list(a.augment);
  o.workers = a.workers;
  o.prefetch = a.prefetch;
  o.early_stopping_patience = a.early_stopping;
  if (a.reduce_lr_on_plateau) {
    o.plateau_patience = a.reduce_lr_on_plateau->first;
    o.plateau_factor = a.reduce_lr_on_plateau->second;
  }
  o.clip_grad_norm = a.clip_grad_norm;
  o.max_steps = a.max_steps;
  o.metadata = model_metadata(m);
  if (!a.resume.empty()) check_input_file("fit: resume", a.resume);
  return o;
}

// Calls each callback's on_epoch_end(epoch, logs) (Keras' signature, 0-based epoch), or the
// callback itself when it is a plain function. A callback returning True stops training.
bool run_callbacks(const py::list& callbacks, std::int64_t epoch, const py::dict& logs) {
  bool stop = false;
  for (const py::handle cb : callbacks) {
    py::object result;
    if (py::hasattr(cb, "on_epoch_end"))
      result = cb.attr("on_epoch_end")(epoch, logs);
    else
      result = cb(epoch, logs);
    stop = stop || (!result.is_none() && result.cast<bool>());
  }
  return stop;
}

py::dict fit(PyModel& m, const py::array& x, const py::array& y, const FitArgs& a) {
  FitOptions o = fit_options(m, a);
  if (!(a.validation_split >= 0 && a.validation_split < 1))
    bad_value("fit: validation_split {} must be in [0, 1)", a.validation_split);
  if (a.validation_split > 0 && a.validation_data) bad_value("fit: give validation_split or validation_data, not both");
  ArrayDataset train = dataset_from_arrays(m, x, y, "fit");
  Dataset validation;
  if (a.validation_split > 0) {
    // The CLI's --val-split: seeded and stratified per class (not Keras' last fraction).
    auto [kept, held] = split_validation(train.data, a.validation_split, o.seed);
    if (held.size() == 0)
      bad_value("fit: validation_split {} holds out no image of {}", a.validation_split, train.data.size());
    train.data = std::move(kept);
    validation = std::move(held);
  }
  std::optional<ArrayDataset> val_arrays, test_arrays;
  if (a.validation_data) {
    val_arrays = dataset_from_arrays(m, a.validation_data->first, a.validation_data->second, "fit: validation_data");
    validation = val_arrays->data;
  }
  if (a.test_data) test_arrays = dataset_from_arrays(m, a.test_data->first, a.test_data->second, "fit: test_data");
  const bool has_val = validation.size() > 0, has_test = test_arrays.has_value();
  // The library's loop evaluates a test split every epoch (the CLI always has one). Python's
  // validation set plays that part when there is no test_data; with neither, one batch of the
  // training data does, and History leaves it out.
  Dataset lib_validation, lib_test;
  if (has_test) {
    lib_validation = validation;
    lib_test = test_arrays->data;
  } else if (has_val) {
    lib_test = validation;
  } else {
    std::vector<std::int64_t> first(static_cast<std::size_t>(std::min(a.batch_size, train.data.size())));
    for (std::size_t i = 0; i < first.size(); ++i) first[i] = static_cast<std::int64_t>(i);
    lib_test = select_samples(train.data, first);
  }

  TrainResult last;  // the epochs so far, kept for a stop requested by a callback
  o.on_epoch_end = [&](const TrainResult& r) {
    last = r;
    py::gil_scoped_acquire gil;
    const EpochMetrics& e = r.epochs.back();
    if (run_callbacks(a.callbacks, e.epoch - 1, epoch_logs(e, has_val, has_test))) throw StopRequested{};
  };
  o.on_progress = [](const TrainProgress&) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // KeyboardInterrupt, usually
  };
  TrainResult r;
  try {
    py::gil_scoped_release release;
    r = cudl::fit(*m.ctx, m.net, train.data, lib_validation, lib_test, o);
  } catch (const StopRequested&) {
    r = std::move(last);
  }
  return history(r.epochs, has_val, has_test);
}

}  // namespace

void bind_fit(py::class_<PyModel>& model) {
  model.def(
      "fit",
      [](PyModel& m, const py::array& x, const py::array& y, std::int64_t epochs, std::int64_t batch_size,
         double validation_split, std::optional<std::pair<py::array, py::array>> validation_data,
         std::optional<std::pair<py::array, py::array>> test_data, py::list callbacks, std::string optimizer,
         std::optional<float> lr, float momentum, bool nesterov, float weight_decay, std::string schedule,
         std::optional<std::uint64_t> seed, std::string save, std::string save_best, std::string resume,
         std::string metrics_json, std::vector<std::string> augment, int workers, int prefetch,
         std::int64_t early_stopping, std::optional<std::pair<std::int64_t, double>> reduce_lr_on_plateau,
         double clip_grad_norm, std::int64_t max_steps) {
        FitArgs a{epochs,
                  batch_size,
                  validation_split,
                  std::move(validation_data),
                  std::move(test_data),
                  callbacks,
                  optimizer,
                  lr,
                  momentum,
                  nesterov,
                  weight_decay,
                  schedule,
                  seed,
                  save,
                  save_best,
                  resume,
                  metrics_json,
                  augment,
                  workers,
                  prefetch,
                  early_stopping,
                  reduce_lr_on_plateau,
                  clip_grad_norm,
                  max_steps};
        return fit(m, x, y, a);
      },
      py::arg("x"), py::arg("y"), py::kw_only(), py::arg("epochs") = 1, py::arg("batch_size") = 128,
      py::arg("validation_split") = 0.0, py::arg("validation_data") = py::none(), py::arg("test_data") = py::none(),
      py::arg("callbacks") = py::list(), py::arg("optimizer") = "adam", py::arg("lr") = py::none(),
      py::arg("momentum") = 0.9f, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f,
      py::arg("schedule") = "onecycle", py::arg("seed") = py::none(), py::arg("save") = "", py::arg("save_best") = "",
      py::arg("resume") = "", py::arg("metrics_json") = "", py::arg("augment") = std::vector<std::string>{},
      py::arg("workers") = 0, py::arg("prefetch") = 0, py::arg("early_stopping") = 0,
      py::arg("reduce_lr_on_plateau") = py::none(), py::arg("clip_grad_norm") = 0.0, py::arg("max_steps") = 0,
      "Trains on float32 images x (N, C, H, W) and int labels y through cudl's training loop, with the CLI's "
      "options; returns the per-epoch metrics as a dict of lists (loss, accuracy, val_*, test_*, lr, seconds).");
}

}  // namespace cudl::python
