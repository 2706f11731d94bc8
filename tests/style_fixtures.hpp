#pragma once
// Shared by the style-transfer tests: a tiny smooth VGG-like chain (tanh, average pooling: no
// kinks for the finite differences), frozen and differentiable in its input, and random images.
#include <cstdint>
#include <memory>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/models/network/sequential.hpp"

namespace cudl::testing {

inline Sequential tiny_style_net(Context& ctx) {
  Sequential net;
  net.add("conv1", std::make_unique<Conv2d>(3, 4, 3, Conv2dParams{1, 1}));
  net.add("act1", std::make_unique<ActivationLayer>(Activation::tanh));
  net.add("pool1", std::make_unique<AvgPool2d>(2));
  net.add("conv2", std::make_unique<Conv2d>(4, 6, 3, Conv2dParams{1, 1}));
  net.add("act2", std::make_unique<ActivationLayer>(Activation::tanh));
  net.build(ctx, 7);
  net.set_frozen(true);
  net.set_input_grad(true);
  return net;
}

// [1, 3, h, w], uniform in [0, 1).
inline Tensor random_image(Context& ctx, int h, int w, std::uint64_t seed) {
  Tensor t = Tensor::empty(Shape{1, 3, h, w}, ctx);
  ctx.backend().fill_uniform(ctx, t, 0.0f, 1.0f, seed, 0);
  return t;
}

}  // namespace cudl::testing
