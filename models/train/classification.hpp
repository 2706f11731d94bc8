#pragma once
// Classification for the training loop (models/train/train.hpp): a fused softmax cross-entropy
// loss over [N, K] logits, accuracy per batch and per split; the best epoch by validation accuracy.
#include <cstdint>
#include <string>
#include <string_view>

#include "cudl/models/train/train.hpp"

namespace cudl {

class ClassificationTask final : public Task {
 public:
  Target target() const override { return Target::labels; }
  bool has_accuracy() const override { return true; }
  std::pair<std::string, bool> validation_monitor() const override { return {"val_accuracy", true}; }
  void check(const Sequential& model, const Dataset& data, std::string_view split,
             const std::string& model_name) const override;
  Tensor loss_and_gradient(Context& ctx, const Tensor& logits, const Batch& batch, float dloss, Tensor& loss,
                           Tensor& accuracy) override;
  SplitScores evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
                       Communicator* comm) override;
};

// The model's number of output classes for data's images: the columns of its [N, K] logits.
// 0 when the model does not end in [N, K] (softmax cross-entropy then rejects it itself).
std::int64_t output_classes(const Sequential& model, const Dataset& data);

// Every label of `data` must be a class of the model, checked here on the host where the labels
// are: on the GPU an out-of-range label can only set the device fault word, reported at a later
// read with no row or value to name (and after a step with a wrong loss and gradients).
void check_labels(const Sequential& model, const Dataset& data, std::string_view split);

}  // namespace cudl
