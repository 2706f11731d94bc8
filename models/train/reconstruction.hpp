#pragma once
// Training a network to reproduce its input (an autoencoder): `--target input` with a pixel loss
// (`--loss mse|l1`), as a Task of the one training loop. The metrics are the loss, the mean squared
// error and the PSNR, beside the same errors of the mean training image (the prediction that
// ignores its input: a model that does not beat it has learnt nothing about the images).
// Optionally, after every epoch, a PNG grid of test inputs above their reconstructions.
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cudl/engine/io/datasets.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/train/train.hpp"

namespace cudl {

enum class LossKind { cross_entropy, mse, l1 };
LossKind parse_loss(const std::string& name);  // "cross_entropy" | "mse" | "l1"
std::string loss_name(LossKind kind);

// Reconstruction for the training loop (models/train/train.hpp): the pixel loss of the output
// against the input. Each split's metrics are its loss, MSE, L1 and PSNR (extra: mse, l1, psnr);
// every epoch also records the mean training image's errors on the test split (mean_image_mse,
// mean_image_l1, mean_image_psnr). With a validation split, the validation loss picks the best
// epoch. `samples_path`: a PNG grid of test inputs above their reconstructions, rewritten after
// every epoch ("" = none), `samples` columns wide.
class ReconstructionTask final : public Task {
 public:
  explicit ReconstructionTask(LossKind loss, std::string samples_path = {}, int samples = 8);
  Target target() const override { return Target::input; }
  bool has_accuracy() const override { return false; }
  std::pair<std::string, bool> validation_monitor() const override { return {"val_loss", false}; }
  void check(const Sequential& model, const Dataset& data, std::string_view split,
             const std::string& model_name) const override;
  void prepare(Context& ctx, const Dataset& train, const Dataset& test) override;
  Tensor loss_and_gradient(Context& ctx, const Tensor& output, const Batch& batch, float dloss, Tensor& loss,
                           Tensor& accuracy) override;
  SplitScores evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
                       Communicator* comm) override;
  void end_epoch(Context& ctx, Sequential& model, EpochMetrics& m) override;
  void add_checkpoint_metadata(std::map<std::string, std::string>& extra) const override;

 private:
  LossKind loss_;
  std::string samples_path_;
  int samples_;
  std::map<std::string, double> baseline_;  // the mean training image's errors on the test split
  Dataset test_;                            // decoded, for the sample grid
};

// Loads a dataset (mnist, fashion-mnist, cifar10, folder) for the model `model_name` and checks
// only that its images fit the model's input (labels are not used by reconstruction, and a
// fine-tuned head may have another number of classes than the model's spec).
DataSplits load_images_for_model(const std::string& kind, const std::string& dir, const std::string& model_name);

// Per-pixel mean of a dataset's images, [C*H*W] on the host.
std::vector<float> mean_image(const Dataset& data);
// PSNR in dB of a mean squared error on images in [0, 1]: 10 log10(1 / mse).
double psnr(double mse);

// Writes the first `count` images of `data` (top row) above the model's reconstructions (bottom
// row) as one PNG, each cell enlarged to at least 64 pixels high (nearest neighbour).
void write_reconstruction_samples(const std::string& path, Context& ctx, Sequential& model, const Dataset& data,
                                  int count);

}  // namespace cudl
