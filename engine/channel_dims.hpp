#pragma once
// The per-channel layout shared by the per-channel ops of both backends (bias, channel_affine,
// batch norm): x viewed as [outer, channels, inner] around dim 1. Their argument checks live in
// the op interface's front (engine/backend.cpp).
#include <string_view>

#include "cudl/engine/check.hpp"

namespace cudl {

// x viewed as [outer, channels, inner] around dim 1: [N, C] has inner 1, [N, C, H, W] inner H*W.
struct ChannelDims {
  std::int64_t outer = 0, channels = 0, inner = 1;
  std::int64_t per_channel() const { return outer * inner; }  // elements that share one channel
};

inline ChannelDims channel_dims(std::string_view op, std::string_view name, const Tensor& x) {
  CUDL_CHECK(x.rank() >= 2, "{}: {} must have rank >= 2 ([N, C] or [N, C, H, W]), got shape {}", op, name, x.shape());
  ChannelDims d;
  d.outer = x.dim(0);
  d.channels = x.dim(1);
  for (int i = 2; i < x.rank(); ++i) d.inner *= x.dim(i);
  return d;
}

}  // namespace cudl
