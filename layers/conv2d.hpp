#pragma once
#include "cudl/layers/layer.hpp"

namespace cudl {

// 2-D convolution (cross-correlation, like torch.nn.Conv2d), weight [K, C/G, R, S] where
// G = params.groups (1 by default; C for a depthwise convolution). C and K must be divisible by G.
class Conv2d final : public Layer {
 public:
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, int kernel_size, Conv2dParams params = {},
         bool bias = true, InitScheme init = InitScheme::pytorch);
  std::string type() const override { return "Conv2d"; }
  bool autocasts() const override { return true; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  std::vector<Parameter*> parameters() override;
  void initialize(Context& ctx, std::uint64_t seed) override;

  const Conv2dParams& params() const { return params_; }
  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }
  // The constructor's arguments, for writing a model back out as a file (models/model_file).
  std::int64_t in_channels() const { return in_channels_; }
  std::int64_t out_channels() const { return out_channels_; }
  int kernel_size() const { return kernel_size_; }
  int groups() const { return params_.groups; }
  bool has_bias() const { return has_bias_; }
  InitScheme init() const { return init_; }

 private:
  std::int64_t in_channels_, out_channels_;
  int kernel_size_;
  Conv2dParams params_;
  bool has_bias_;
  InitScheme init_;
  Parameter weight_, bias_;
  Tensor x_;  // the input in the compute dtype, saved for backward
  DType input_dtype_ = DType::f32;
};

// Transposed 2-D convolution (torch.nn.ConvTranspose2d with groups=1), weight [C_in, C_out, R, S].
class ConvTranspose2d final : public Layer {
 public:
  ConvTranspose2d(std::int64_t in_channels, std::int64_t out_channels, int kernel_size, Conv2dParams params = {},
                  int output_padding = 0, bool bias = true);
  std::string type() const override { return "ConvTranspose2d"; }
  bool autocasts() const override { return true; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  std::vector<Parameter*> parameters() override;
  void initialize(Context& ctx, std::uint64_t seed) override;

  std::int64_t in_channels() const { return in_channels_; }
  std::int64_t out_channels() const { return out_channels_; }
  int kernel_size() const { return kernel_size_; }
  const Conv2dParams& params() const { return params_; }
  int output_padding() const { return output_padding_; }
  bool has_bias() const { return has_bias_; }

 private:
  std::int64_t in_channels_, out_channels_;
  int kernel_size_;
  Conv2dParams params_;
  int output_padding_;
  bool has_bias_;
  Parameter weight_, bias_;
  Tensor x_;
  DType input_dtype_ = DType::f32;
};

}  // namespace cudl
