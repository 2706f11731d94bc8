#pragma once
// Supervised training and evaluation of a classifier: seeded shuffling and batching, a fused
// softmax cross-entropy loss, one optimizer step over the whole parameter block, evaluation on
// the test split after each epoch, atomic checkpoints after each epoch and resumption from one.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/io/datasets.hpp"
#include "layers/optimizer.hpp"
#include "models/sequential.hpp"

namespace cudl {

struct EpochMetrics {
  std::int64_t epoch = 0;  // 1-based
  double train_loss = 0, train_accuracy = 0;
  double test_loss = 0, test_accuracy = 0;
  double seconds = 0, images_per_second = 0;
};

// What the progress display needs, reported every few steps and at the end of each epoch.
struct TrainProgress {
  std::int64_t epoch = 0, epochs = 0;
  std::int64_t batch = 0, batches = 0;  // batches done in this epoch, of
  double loss = 0, accuracy = 0;        // running means over this epoch
  double images_per_second = 0;
  double elapsed_seconds = 0;
  bool epoch_done = false;
};

struct FitOptions {
  std::string model_name;
  std::int64_t epochs = 10;
  std::int64_t batch_size = 128;
  OptimizerConfig optimizer;
  Schedule schedule = Schedule::onecycle;
  std::uint64_t seed = 1;
  std::string save_path;     // checkpoint written atomically after every epoch
  std::string resume_path;   // continue from this checkpoint
  std::string metrics_path;  // JSON rewritten atomically after every epoch
  bool augment = false;      // random crop + horizontal flip (CIFAR-10 and image folders)
  std::map<std::string, std::string> metadata;  // saved with every checkpoint as extra.<key> (models/preprocess.hpp)
  std::function<void(const TrainProgress&)> on_progress;
};

struct EvalResult {
  double loss = 0, accuracy = 0;
  std::int64_t samples = 0;
};

struct TrainResult {
  std::vector<EpochMetrics> epochs;
  std::int64_t params = 0;
  std::string device;
};

// Trains `model` (built on ctx's device) on `train`, evaluating on `test` after each epoch.
TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& test, const FitOptions& options);
EvalResult evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size);

// The dataset a model trains on by default: mnist for mlp/mnist_cnn, cifar10 for *_cifar, folder otherwise.
std::string default_dataset(const std::string& model_name);
// Loads `kind` (mnist, fashion-mnist, cifar10, folder) from `dir`, checking it fits the model's input.
DataSplits load_dataset(const std::string& kind, const std::string& dir, const std::string& model_name);

}  // namespace cudl
