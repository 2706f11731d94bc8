#pragma once
// Layers that join branches of a network graph (models/network/sequential.hpp: a layer may name its
// inputs): Add (a residual connection) and Concat (channels), and the global average pooling
// that ends a ResNet. A merge layer takes several inputs and returns one gradient per input.
#include <vector>

#include "cudl/layers/layer.hpp"

namespace cudl {

class MergeLayer : public Layer {
 public:
  virtual Shape output_shape(const std::vector<Shape>& inputs) const = 0;
  virtual Tensor forward(Context& ctx, const std::vector<Tensor>& inputs, bool train) = 0;
  // The gradient of each input, in the inputs' order and dtypes. Entries may share storage (Add
  // returns dy itself for every input of dy's dtype): callers copy before accumulating into one.
  virtual std::vector<Tensor> backward_inputs(Context& ctx, const Tensor& dy) = 0;

  // The one-input Layer interface, for a merge that is given one input.
  Shape output_shape(const Shape& input) const override { return output_shape(std::vector<Shape>{input}); }
  Tensor forward(Context& ctx, const Tensor& x, bool train) override {
    return forward(ctx, std::vector<Tensor>{x}, train);
  }
  Tensor backward(Context& ctx, const Tensor& dy) override { return backward_inputs(ctx, dy).front(); }
};

// y = x_1 + ... + x_n, all of one shape. Inputs of different dtypes (a half branch beside an f32
// one under autocast) add in f32, as PyTorch promotes them; otherwise in their own dtype.
class Add final : public MergeLayer {
 public:
  std::string type() const override { return "Add"; }
  std::string describe() const override { return "Add()"; }
  using MergeLayer::forward;
  using MergeLayer::output_shape;
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(Context& ctx, const std::vector<Tensor>& inputs, bool train) override;
  std::vector<Tensor> backward_inputs(Context& ctx, const Tensor& dy) override;

 private:
  std::vector<DType> input_dtypes_;
};

// Joins [N, C_i, H, W] inputs along the channels into [N, sum C_i, H, W] (dtypes promoted as Add).
class Concat final : public MergeLayer {
 public:
  std::string type() const override { return "Concat"; }
  std::string describe() const override { return "Concat(dim=1)"; }
  using MergeLayer::forward;
  using MergeLayer::output_shape;
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(Context& ctx, const std::vector<Tensor>& inputs, bool train) override;
  std::vector<Tensor> backward_inputs(Context& ctx, const Tensor& dy) override;

 private:
  std::vector<Shape> input_shapes_;
  std::vector<DType> input_dtypes_;
};

// [N, C, H, W] -> [N, C, 1, 1], the mean over each plane (PyTorch's AdaptiveAvgPool2d(1)).
class GlobalAvgPool2d final : public Layer {
 public:
  std::string type() const override { return "GlobalAvgPool2d"; }
  std::string describe() const override { return "AdaptiveAvgPool2d(output_size=1)"; }
  Shape output_shape(const Shape& input) const override;
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;

 private:
  Shape input_shape_;
  MemoryFormat input_format_ = MemoryFormat::contiguous;
};

// The dtype inputs of `dtypes` are joined in: theirs when they agree, else f32.
DType merged_dtype(const std::vector<DType>& dtypes);

}  // namespace cudl
