#pragma once
// Supervised training and evaluation of a classifier: seeded shuffling and batching, a fused
// softmax cross-entropy loss, one optimizer step over the whole parameter block, evaluation on
// a validation and the test split after each epoch, atomic checkpoints after each epoch (and of
// the best epoch) and resumption from one; early stopping, reduce-on-plateau, gradient-norm
// clipping and a guard that stops a run whose loss or parameters stop being finite.
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cudl/engine/distributed.hpp"
#include "cudl/engine/io/augment.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/layers/loss_scaler.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/sequential.hpp"

namespace cudl {

struct EpochMetrics {
  std::int64_t epoch = 0;  // 1-based
  double train_loss = 0, train_accuracy = 0;
  bool has_val = false;  // a validation split was held out
  double val_loss = 0, val_accuracy = 0;
  double test_loss = 0, test_accuracy = 0;
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
  std::int64_t batch = 0, batches = 0;  // batches done in this epoch, of
  double loss = 0, accuracy = 0;        // running means over this epoch
  double images_per_second = 0;
  double elapsed_seconds = 0;
  double lr = 0;                   // the learning rate of the last step
  double loss_scale = 0;           // fp16: the current loss scale (0: no loss scaling)
  std::int64_t skipped_steps = 0;  // fp16: steps skipped in this epoch (gradients overflowed)
  bool epoch_done = false;
};

struct TrainResult;

struct FitOptions {
  std::string model_name;
  std::int64_t epochs = 10;
  std::int64_t batch_size = 128;
  OptimizerConfig optimizer;
  Schedule schedule = Schedule::onecycle;
  std::uint64_t seed = 1;
  std::string save_path;                        // checkpoint written atomically after every epoch
  std::string resume_path;                      // continue from this checkpoint
  std::string metrics_path;                     // JSON rewritten atomically after every epoch
  Augment augment;                              // training-time augmentation (engine/io/augment.hpp); none by default
  int workers = 0;                              // the training loader's threads (0: default_loader_workers())
  int prefetch = 0;                             // batches staged ahead of the step (0: the loader's default)
  std::map<std::string, std::string> metadata;  // saved with every checkpoint as extra.<key> (models/preprocess.hpp)
  std::function<void(const TrainProgress&)> on_progress;

  // The epoch with the best monitored accuracy (validation, or test without a validation split)
  // is saved here, atomically; its checkpoint's metadata names the epoch (extra.best_epoch).
  std::string save_best_path;
  // Stop after this many epochs in a row without a better monitored accuracy (0: never).
  std::int64_t early_stopping_patience = 0;
  // Multiply the learning rate by plateau_factor after this many epochs in a row without a better
  // monitored accuracy (0: never), then wait as many again (Keras' ReduceLROnPlateau, cooldown 0).
  std::int64_t plateau_patience = 0;
  double plateau_factor = 0.1;
  // Scale the gradient block so its global L2 norm is at most this (0: no clipping), on the device.
  double clip_grad_norm = 0;
  // Stop after this many optimizer steps in all (0: epochs * batches); the schedule spans them.
  std::int64_t max_steps = 0;
  // Steps between host reads of the non-finite guard (0: 1 on the CPU, kGpuFiniteCheckEvery on a
  // GPU, where each read waits for the device). The step it names is exact either way.
  std::int64_t finite_check_every = 0;
  // Called after each epoch's metrics JSON and checkpoints are written (curves, logs).
  std::function<void(const TrainResult&)> on_epoch_end;
  // fp16 (ctx.precision()): dynamic loss scaling's settings; unused in other precisions.
  LossScalerConfig loss_scaling;
  // Data-parallel training (models/data_parallel.hpp): this process is one of comm->size() ranks,
  // each training on its shard of every global batch of batch_size images. nullptr: one process.
  // Writers (save paths, metrics, callbacks) are the caller's to give to one rank only.
  Communicator* comm = nullptr;
};

// How often the guard reads the device on a GPU, in steps (also the progress bar's interval).
constexpr std::int64_t kGpuFiniteCheckEvery = 20;

struct EvalResult {
  double loss = 0, accuracy = 0;
  std::int64_t samples = 0;
};

struct TrainResult {
  std::vector<EpochMetrics> epochs;
  std::int64_t params = 0;
  std::string device;
  std::string model;
  std::string precision = "fp32";  // ctx.precision() of the run
  std::int64_t train_size = 0, val_size = 0, test_size = 0;
  std::int64_t best_epoch = 0;  // by the monitored accuracy (0: none yet)
  std::string monitor;          // "val_accuracy" or "test_accuracy"
  std::string stopped;          // why the run ended early: "early_stopping", "max_steps" (empty: it did not)
  double wall_seconds = 0;      // this invocation of fit
  std::int64_t images_trained = 0;
  std::size_t pool_peak_bytes = 0;  // the device allocator's peak allocated bytes
};

// The metrics file `--metrics-json` writes and `cudl plot` reads: model, device, params, the split
// sizes, the monitored metric, the best epoch and every epoch's metrics.
nlohmann::json metrics_document(const TrainResult& result);

// The training loader's settings: shuffled, seeded, augmented and threaded as `options` say.
LoaderOptions training_loader_options(const FitOptions& options);

// Trains `model` (built on ctx's device) on `train`, evaluating on `validation` (when it holds
// images) and `test` after each epoch.
TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& validation, const Dataset& test,
                const FitOptions& options);
TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& test, const FitOptions& options);
EvalResult evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size);

// A seeded, class-stratified hold-out: `fraction` of each class's images (rounded) go to the
// second dataset, the rest to the first, both in their original order. 0 <= fraction < 1.
std::pair<Dataset, Dataset> split_validation(const Dataset& data, double fraction, std::uint64_t seed);
// A flat image folder (DataSplits::flat) gets its test split here: `fraction` of each class's
// images, seeded (split_validation). Throws naming `dir` when a flat folder has no fraction, and
// when a dataset with its own test split (test/, the test files) is given one.
void hold_out_test(DataSplits& data, double fraction, std::uint64_t seed, const std::string& dir);
// A seeded, class-stratified subset of `count` images (all of them when count >= the size), in
// their original order: each class keeps its share, the rounding remainder going to the largest.
Dataset stratified_subset(const Dataset& data, std::int64_t count, std::uint64_t seed);

// Top-1 and top-k accuracy, per-class accuracy and the confusion matrix of a classifier.
struct EvalReport {
  double loss = 0;
  double top1 = 0, topk = 0;
  int k = 5;
  std::int64_t samples = 0;
  int classes = 0;
  std::vector<std::vector<std::int64_t>> confusion;  // [true class][predicted class]
  std::vector<double> per_class_accuracy;            // NaN for a class with no sample
};
EvalReport evaluate_report(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size, int k = 5);

// Names of a dataset's classes: the folders' names for an image folder, the ten known names of
// Fashion-MNIST and CIFAR-10, the digits for MNIST, else the class numbers.
std::vector<std::string> class_names(const std::string& kind, const Dataset& data);

// The dataset a model trains on by default: mnist for mlp/mnist_cnn, cifar10 for *_cifar, folder otherwise.
std::string default_dataset(const std::string& model_name);
// Loads `kind` (mnist, fashion-mnist, cifar10, folder) from `dir`, checking it fits the model's input.
// A folder is listed, not decoded (the DataLoader decodes each batch), at folder_image_size.
// `outputs`: the model's class count when it is not the spec's (a checkpoint with a new head).
DataSplits load_dataset(const std::string& kind, const std::string& dir, const std::string& model_name,
                        int image_size = 0, int outputs = 0);
// The side of the square RGB images a folder dataset gives the model: the model's own input size
// without `requested` (0); `requested` when the model's layers take that size too (a fully
// convolutional net); else an Error naming both sizes and why the model refuses the other.
int folder_image_size(const std::string& model_name, int requested);

}  // namespace cudl
