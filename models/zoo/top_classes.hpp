#pragma once
// The k most probable classes of one image's logits, ranked where the logits are (Backend::top_k):
// classify and predict copy k indices and probabilities to the host, not all K probabilities.
#include <cstdint>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

struct RankedClass {
  std::int32_t index = 0;
  float probability = 0;
};

struct TopClasses {
  std::vector<RankedClass> ranked;  // most probable first; equal probabilities by lower index
  // Σ softmax(logits): about 1, and finite exactly when every probability is (a NaN anywhere makes
  // it NaN), so one number read back tells the caller whether the weights gave usable output.
  float total = 0;
};

// logits [1, K] (any float dtype); k is clamped to [1, K].
TopClasses top_classes(Context& ctx, const Tensor& logits, int k);

}  // namespace cudl
