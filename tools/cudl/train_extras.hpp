#pragma once
// `cudl train`'s options beyond classification from scratch: fine-tuning (--init-from,
// --num-classes, --freeze) and reconstruction (--target input, --loss mse|l1, --samples: the task
// the one training loop runs). They live here, apart from train.cpp, which only registers them
// and calls these hooks in order.
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "cudl/engine/io/datasets.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/train/reconstruction.hpp"
#include "cudl/models/train/trainer.hpp"

namespace cudl::cli {

struct TrainExtras {
  LossKind loss = LossKind::cross_entropy;
  Target target = Target::labels;
  std::string samples;
  std::string init_from;
  std::string freeze;
  int num_classes = 0;  // 0: keep the model's head
};

void add_train_extra_options(CLI::App* cmd, TrainExtras& e);
// Refuses contradictory combinations before any data is read.
void check_train_extras(const TrainExtras& e, const std::string& model, float weight_decay, bool resuming);
// --augment [LIST]: comma-separated crop (pad 4 and crop, CIFAR's recipe), random-resized-crop,
// flip, color-jitter (strength `jitter`); "default" (the bare flag) is crop,flip; empty: none.
Augment parse_augment(const std::string& list, float jitter);
// The dataset: load_dataset's checks for plain classification; for reconstruction or a new head,
// only the input shape is checked (fit checks every label against the model's outputs).
// `image_size`: --image-size for a folder (0: the model's).
DataSplits load_train_data(const TrainExtras& e, const std::string& kind, const std::string& dir,
                           const std::string& model, int image_size);
// Before build: the new head. Returns its layer's name (empty: the model's own head).
std::string prepare_model(const TrainExtras& e, Sequential& model);
// After build: weights from --init-from (never into `new_head`, which keeps its fresh
// initialisation), then --freeze. Prints what was skipped and frozen.
void finish_model(const TrainExtras& e, Context& ctx, Sequential& model, const std::string& new_head);
// Metadata saved with the checkpoints (preprocessing, class names, the new head's size, the
// dataset kind and a model file's text: models/checkpoint/saved_run.hpp reads them back).
void add_metadata(const TrainExtras& e, const std::string& model, const std::string& kind, const DataSplits& data,
                  FitOptions& o);
// A progress bar per epoch on stderr, its status text from `status` (classification and
// reconstruction report different metrics).
std::function<void(const TrainProgress&)> epoch_progress_bars(std::function<std::string(const TrainProgress&)> status);

// The task --target names: classification (labels) or reconstruction (input, with --loss and --samples).
std::unique_ptr<Task> make_task(const TrainExtras& e);
// Reconstruction's progress bars (loss and speed; there is no accuracy).
std::function<void(const TrainProgress&)> reconstruction_progress_bars();
// One line per reconstruction epoch: the train loss, the validation and test errors and PSNR
// (where scored), the mean image's; `loss`: mse or l1.
void print_reconstruction_epoch(const EpochMetrics& m, const std::string& loss);
// The run's test result beside the mean image's (`best`: m is the best checkpoint's epoch).
void print_reconstruction_result(const EpochMetrics& m, const std::string& loss, bool best);

}  // namespace cudl::cli
