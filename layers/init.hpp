#pragma once
// Weight initialisation shared by the layers (seeded, identical on every backend).
#include <cmath>
#include <cstdint>

#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"
#include "cudl/layers/layer.hpp"

namespace cudl::init {

// U(-bound, bound) with bound = 1/sqrt(fan_in): PyTorch's default for Conv2d/Linear weights
// (kaiming_uniform_ with a=sqrt(5)) and biases.
inline void pytorch_uniform(Context& ctx, Tensor& t, std::int64_t fan_in, std::uint64_t seed) {
  const float bound = fan_in > 0 ? 1.0f / std::sqrt(static_cast<float>(fan_in)) : 0.0f;
  ctx.backend().fill_uniform(ctx, t, -bound, bound, seed, 0);
}

// N(0, sqrt(2/fan_out)): kaiming_normal_(mode='fan_out', nonlinearity='relu'), torchvision's VGG convs.
inline void kaiming_normal_fan_out(Context& ctx, Tensor& t, std::int64_t fan_out, std::uint64_t seed) {
  ctx.backend().fill_normal(ctx, t, 0.0f, std::sqrt(2.0f / static_cast<float>(fan_out)), seed, 0);
}

// A distinct stream of random numbers per (seed, parameter) pair.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace cudl::init
