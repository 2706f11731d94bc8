#pragma once
// Training and evaluation of a classifier: fit() is the training loop (models/train/train.hpp)
// with a ClassificationTask; evaluation, top-k reports, seeded splits and the datasets a model
// trains on by default.
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
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/train/classification.hpp"
#include "cudl/models/train/train.hpp"

namespace cudl {

struct EvalResult {
  double loss = 0, accuracy = 0;
  std::int64_t samples = 0;
};

// train() with a ClassificationTask (models/train/): `model` (built on ctx's device) trained on
// `train`, evaluated on `validation` (when it holds images) and `test` as FitOptions says.
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

// The dataset a model trains on by default: mnist for mlp, mnist_cnn and *_mnist, cifar10 for *_cifar,
// folder otherwise.
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
