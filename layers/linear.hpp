#pragma once
#include "cudl/layers/layer.hpp"

namespace cudl {

// y = x Wᵀ + b with weight [out, in] (torch.nn.Linear), x [N, in].
class Linear final : public Layer {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, InitScheme init = InitScheme::pytorch);
  std::string type() const override { return "Linear"; }
  bool autocasts() const override { return true; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  Tensor forward(Context& ctx, const Tensor& x, bool train) override;
  Tensor backward(Context& ctx, const Tensor& dy) override;
  std::vector<Parameter*> parameters() override;
  void initialize(Context& ctx, std::uint64_t seed) override;

  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }
  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  bool has_bias() const { return has_bias_; }
  InitScheme init() const { return init_; }

 private:
  std::int64_t in_features_, out_features_;
  bool has_bias_;
  InitScheme init_;
  Parameter weight_, bias_;
  Tensor x_;  // the input in the compute dtype, saved for backward
  DType input_dtype_ = DType::f32;
};

}  // namespace cudl
