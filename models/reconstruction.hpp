#pragma once
// Training a network to reproduce its input (an autoencoder): `--target input` with a pixel loss
// (`--loss mse|l1`). The metrics are the loss, the mean squared error and the PSNR on the test
// split, beside the same errors of the mean training image (the prediction that ignores its input:
// a model that does not beat it has learnt nothing about the images). Optionally, after every
// epoch, a PNG grid of test inputs above their reconstructions.
#include <functional>
#include <string>
#include <vector>

#include "cudl/engine/io/datasets.hpp"
#include "cudl/models/sequential.hpp"
#include "cudl/models/trainer.hpp"

namespace cudl {

enum class LossKind { cross_entropy, mse, l1 };
LossKind parse_loss(const std::string& name);  // "cross_entropy" | "mse" | "l1"
std::string loss_name(LossKind kind);

struct ReconstructionMetrics {
  std::int64_t epoch = 0;  // 1-based
  double train_loss = 0;
  double test_loss = 0, test_mse = 0, test_l1 = 0, test_psnr = 0;
  double mean_image_mse = 0, mean_image_l1 = 0, mean_image_psnr = 0;  // the mean training image as the prediction
  bool has_val = false;                                               // a validation split was held out (--val-split)
  double val_loss = 0, val_psnr = 0;
  double seconds = 0, images_per_second = 0;
};

struct ReconstructionOptions {
  FitOptions fit;                 // epochs, batch size, optimizer, schedule, seed, save/resume/metrics paths
  LossKind loss = LossKind::mse;  // mse or l1
  std::string samples_path;       // PNG grid written atomically after every epoch ("" = none)
  int samples = 8;                // columns of the grid
  std::function<void(const ReconstructionMetrics&)> on_epoch;
};

// Loads a dataset (mnist, fashion-mnist, cifar10, folder) for the model `model_name` and checks
// only that its images fit the model's input (labels are not used by reconstruction, and a
// fine-tuned head may have another number of classes than the model's spec).
DataSplits load_images_for_model(const std::string& kind, const std::string& dir, const std::string& model_name);

// Trains `model` (built on ctx's device; its output must have its input's shape) to reproduce
// its input. Checkpoints and resumption as fit() does them.
std::vector<ReconstructionMetrics> fit_reconstruction(Context& ctx, Sequential& model, const Dataset& train,
                                                      const Dataset& test, const ReconstructionOptions& options);
// The same, also evaluating on `validation` after each epoch when it holds images.
std::vector<ReconstructionMetrics> fit_reconstruction(Context& ctx, Sequential& model, const Dataset& train,
                                                      const Dataset& validation, const Dataset& test,
                                                      const ReconstructionOptions& options);

// The errors of `model` on `data`, and of `mean_image` ([C, H, W] on the host) as the prediction.
ReconstructionMetrics evaluate_reconstruction(Context& ctx, Sequential& model, const Dataset& data,
                                              std::int64_t batch_size, LossKind loss,
                                              const std::vector<float>& mean_image);
// Per-pixel mean of a dataset's images, [C*H*W] on the host.
std::vector<float> mean_image(const Dataset& data);
// PSNR in dB of a mean squared error on images in [0, 1]: 10 log10(1 / mse).
double psnr(double mse);

// Writes the first `count` images of `data` (top row) above the model's reconstructions (bottom
// row) as one PNG, each cell enlarged to at least 64 pixels high (nearest neighbour).
void write_reconstruction_samples(const std::string& path, Context& ctx, Sequential& model, const Dataset& data,
                                  int count);

}  // namespace cudl
