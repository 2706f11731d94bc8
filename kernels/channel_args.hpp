#pragma once
// Shape checks shared by the per-channel ops of both backends (channel_affine, batch norm), so a
// bad call fails with the same message on either device. Device and dtype checks stay with each
// backend (kernels/cpu/cpu_args.hpp, kernels/cuda/cuda_args.hpp).
#include <cmath>
#include <initializer_list>
#include <string_view>

#include "engine/check.hpp"

namespace cudl::channel_args {

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

// A per-channel vector (gamma, beta, running/saved statistics, affine scale and shift) is [C].
inline void per_channel(std::string_view op, std::string_view name, const Tensor& t, std::string_view x_name,
                        const Tensor& x) {
  CUDL_CHECK(t.shape() == Shape{x.dim(1)}, "{}: {} has shape {}, expected [{}] (one per channel of {}={})", op, name,
             t.shape(), x.dim(1), x_name, x.shape());
}

// An argument of a batchnorm op besides x: shaped like x (the caller checks that) or one value per
// channel of x.
enum class Role { like_x, per_channel };
struct Arg {
  std::string_view name;
  const Tensor& tensor;
  Role role;
};

// The checks every batchnorm op starts with, in this order: `placed(name, tensor)` (the backend's
// device and dtype check) on x and then on each argument; x has rank >= 2; each per-channel
// argument is [C]. Returns x's layout.
template <class Placed>
ChannelDims batchnorm_args(std::string_view op, const Tensor& x, std::initializer_list<Arg> args, Placed&& placed) {
  placed("x", x);
  for (const Arg& a : args) placed(a.name, a.tensor);
  const ChannelDims d = channel_dims(op, "x", x);
  for (const Arg& a : args)
    if (a.role == Role::per_channel) per_channel(op, a.name, a.tensor, "x", x);
  return d;
}

inline void batchnorm_eps(std::string_view op, float eps) {
  CUDL_CHECK(std::isfinite(eps) && eps >= 0.0f, "{}: eps={} must be finite and >= 0", op, eps);
}

inline void batchnorm_momentum(std::string_view op, float momentum) {
  CUDL_CHECK(momentum >= 0.0f && momentum <= 1.0f, "{}: momentum={} must be in [0, 1]", op, momentum);
}

// Training statistics need two values per channel: the unbiased variance divides by count - 1
// (PyTorch refuses the same case: "Expected more than 1 value per channel when training").
inline void batchnorm_train_count(std::string_view op, const ChannelDims& d, const Tensor& x) {
  CUDL_CHECK(d.per_channel() > 1, "{}: x={} has {} value(s) per channel; training needs more than 1", op, x.shape(),
             d.per_channel());
}

}  // namespace cudl::channel_args
