#pragma once
// Layers without parameters: activations, pooling, dropout, flatten.
#include "cudl/layers/layer.hpp"

namespace cudl {

class ActivationLayer final : public Layer {
 public:
  explicit ActivationLayer(Activation kind, float negative_slope = 0.01f) : kind_(kind), alpha_(negative_slope) {}
  std::string type() const override;
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override { return input; }
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  Activation kind() const { return kind_; }
  float negative_slope() const { return alpha_; }

 private:
  Activation kind_;
  float alpha_;
  Tensor x_, y_;
};

inline LayerPtr relu() { return std::make_unique<ActivationLayer>(Activation::relu); }

// What max and average pooling share: square windows (PyTorch's kernel_size, stride, padding),
// the output shape, the description, and the input's shape and format (backward's dx is stored
// as the input was).
class Pool2dLayer : public Layer {
 public:
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override { return pool2d_output_shape(input, params_); }
  const Pool2dParams& params() const { return params_; }

 protected:
  Pool2dLayer(int kernel_size, int stride, int padding);

  Pool2dParams params_;
  Shape input_shape_;
  MemoryFormat input_format_ = MemoryFormat::contiguous;
};

class MaxPool2d final : public Pool2dLayer {
 public:
  explicit MaxPool2d(int kernel_size, int stride = 0, int padding = 0) : Pool2dLayer(kernel_size, stride, padding) {}
  std::string type() const override { return "MaxPool2d"; }
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;

 private:
  Tensor argmax_;
};

class AvgPool2d final : public Pool2dLayer {
 public:
  explicit AvgPool2d(int kernel_size, int stride = 0, int padding = 0) : Pool2dLayer(kernel_size, stride, padding) {}
  std::string type() const override { return "AvgPool2d"; }
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
};

// Inverted dropout: scales kept activations by 1/(1-p) in training, identity in evaluation. Each
// forward draws a fresh mask from Philox(seed, counter), the counter advancing by the element count.
class Dropout final : public Layer {
 public:
  explicit Dropout(float p, std::uint64_t seed = 0) : p_(p), seed_(seed) {}
  std::string type() const override { return "Dropout"; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override { return input; }
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  void initialize(Context& ctx, std::uint64_t seed) override;
  // The mask stream's position: saved in checkpoints so a resumed run draws the same masks.
  std::uint64_t counter() const { return counter_; }
  void set_counter(std::uint64_t counter) {
    counter_ = counter;
    counter_on_device_ = false;  // the next forward copies it to the device
  }
  // A step replayed as a CUDA graph advances the counter on the device (see forward) without
  // running forward on the host: the caller, which knows how far a step advances it, sets the
  // host's copy to `counter`, the value the device already holds.
  void set_counter_held_on_device(std::uint64_t counter) { counter_ = counter; }
  float p() const { return p_; }
  // Data parallel: this layer's batches are rows [begin, begin + rows) of global batches of
  // `global` rows. It then draws the global batch's numbers for its rows and steps past the whole
  // global batch, so N ranks train with the masks one process would. global 0 (the default): each
  // batch is a whole batch. local_shard (models/train/data_parallel.hpp) sets it every step.
  struct GlobalRows {
    std::int64_t begin = 0, global = 0;
  };
  void set_global_rows(GlobalRows rows) { rows_ = rows; }
  GlobalRows global_rows() const { return rows_; }

 private:
  float p_;
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
  // The counter on the device (a u64 as i32 [2]), read and advanced by the dropout op itself so
  // that a replayed graph draws fresh masks; counter_ mirrors it on the host.
  Tensor device_counter_;
  bool counter_on_device_ = false;
  GlobalRows rows_;
  Tensor mask_;
};

// [N, C, H, W] -> [N, C*H*W] (a view; no copy).
class Flatten final : public Layer {
 public:
  std::string type() const override { return "Flatten"; }
  Shape output_shape(const Shape& input) const override;
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;

 private:
  Shape input_shape_;
  MemoryFormat input_format_ = MemoryFormat::contiguous;
};

}  // namespace cudl
