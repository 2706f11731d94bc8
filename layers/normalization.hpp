#pragma once
#include <array>

#include "cudl/layers/layer.hpp"

namespace cudl {

// torch.nn.BatchNorm2d: per-channel batch statistics in training, running statistics in
// evaluation; weight (gamma) and bias (beta) trainable, running_mean/var as buffers. A frozen
// layer runs as in evaluation even in training (running statistics, never updated: fine-tuning
// on a small set must not drift the statistics of a frozen backbone) and passes dx down.
class BatchNorm2d final : public Layer {
 public:
  explicit BatchNorm2d(std::int64_t channels, float eps = 1e-5f, float momentum = 0.1f);
  std::string type() const override { return "BatchNorm2d"; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  std::vector<Parameter*> parameters() override;
  void initialize(Context& ctx, std::uint64_t seed) override;
  std::int64_t channels() const { return channels_; }
  float eps() const { return eps_; }
  float momentum() const { return momentum_; }
  // What an inference-time forward normalises with (the running statistics), for the network's
  // fusion of a Conv2d and this layer into one op (models/network/fusion_bn.hpp).
  BatchNormEval running_statistics() const {
    return {weight_.value, bias_.value, running_mean_.value, running_var_.value, eps_};
  }
  // Training forward fused with the ReLU that alone reads this layer (models/network/fusion_bn_relu.hpp):
  // relu(batch norm of x with batch statistics) in one op, the running statistics updated as by
  // forward(ctx, x, true). Not for a frozen layer (that one normalises with its running statistics).
  Tensor forward_relu(Context& ctx, const Tensor& x);
  // The gradient at the ReLU's output through both: the ReLU's mask applied inside the batch norm
  // backward. Parameter gradients accumulate unless frozen; returns dx.
  Tensor backward_relu(Context& ctx, const Tensor& dy);

 private:
  std::int64_t channels_;
  float eps_, momentum_;
  Parameter weight_, bias_, running_mean_, running_var_;
  Tensor x_, save_mean_, save_invstd_;
  Tensor relu_y_;              // forward_relu's output, the ReLU's mask for backward_relu
  bool eval_forward_ = false;  // the saved forward used the running statistics (frozen)
};

// (x - mean[c]) / std[c]: the ImageNet normalisation that VGG applies to RGB input in [0, 1]
// as its first op, so images go in unnormalised and image gradients come out in pixel units.
class Normalize final : public Layer {
 public:
  Normalize(std::array<float, 3> mean, std::array<float, 3> std);
  static std::unique_ptr<Normalize> imagenet();
  std::string type() const override { return "Normalize"; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  const std::array<float, 3>& mean() const { return mean_; }
  const std::array<float, 3>& std() const { return std_; }

 private:
  std::array<float, 3> mean_, std_;
  Tensor scale_, shift_;  // on the device of the last forward
  Device device_;
};

}  // namespace cudl
