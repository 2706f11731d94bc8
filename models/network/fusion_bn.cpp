#include "cudl/models/network/fusion_bn.hpp"

#include "cudl/layers/autocast.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/merge.hpp"

namespace cudl {

namespace {

// Who reads each layer's output: how many reads, and the reader when there is exactly one.
struct Readers {
  std::vector<int> count, sole;
};

Readers readers_of(const std::vector<std::vector<int>>& producers) {
  Readers r{std::vector<int>(producers.size(), 0), std::vector<int>(producers.size(), -1)};
  for (std::size_t i = 0; i < producers.size(); ++i)
    for (int p : producers[i])
      if (p >= 0) {
        ++r.count[static_cast<std::size_t>(p)];
        r.sole[static_cast<std::size_t>(p)] = static_cast<int>(i);
      }
  return r;
}

}  // namespace

ConvBnPlan plan_conv_bn(const std::vector<const Layer*>& layers, const std::vector<std::vector<int>>& producers,
                        const std::vector<bool>& tapped) {
  const Readers readers = readers_of(producers);
  const auto at = [](const auto& v, int i) { return v[static_cast<std::size_t>(i)]; };
  // The one layer reading `i` alone (and reading nothing else), when `i` is an intermediate that
  // may disappear into a chain: one reader, not tapped. -1 otherwise.
  const auto sole_reader = [&](int i, bool merge_ok) {
    if (at(readers.count, i) != 1 || at(tapped, i)) return -1;
    const int r = at(readers.sole, i);
    if (!merge_ok && at(producers, r) != std::vector<int>{i}) return -1;
    return r;
  };
  ConvBnPlan plan;
  plan.chain_of.assign(layers.size(), -1);
  for (int i = 0; i < static_cast<int>(layers.size()); ++i) {
    if (dynamic_cast<const Conv2d*>(at(layers, i)) == nullptr || at(plan.chain_of, i) >= 0) continue;
    ConvBnChain c;
    c.conv = i;
    c.bn = sole_reader(i, false);
    if (c.bn < 0 || dynamic_cast<const BatchNorm2d*>(at(layers, c.bn)) == nullptr) continue;
    if (const int add = sole_reader(c.bn, true); add >= 0 && dynamic_cast<const Add*>(at(layers, add)) != nullptr) {
      const std::vector<int>& in = at(producers, add);
      const int slot = in.size() == 2 && in[0] == c.bn ? 0 : 1;
      const int other = in.size() == 2 ? in[1 - static_cast<std::size_t>(slot)] : c.bn;
      // The residual must be ready when the Conv2d runs, and not be the chain itself.
      if (other != c.bn && other < i) {
        c.add = add;
        c.add_slot = slot;
        c.residual = other < 0 ? ConvBnChain::kInput : other;
      }
    }
    if (const int r = sole_reader(c.tail(), false); r >= 0) {
      const auto* a = dynamic_cast<const ActivationLayer*>(at(layers, r));
      if (a != nullptr && a->kind() == Activation::relu) c.relu = r;
    }
    const int index = static_cast<int>(plan.chains.size());
    for (int member : {c.conv, c.bn, c.add, c.relu})
      if (member != ConvBnChain::kNone) plan.chain_of[static_cast<std::size_t>(member)] = index;
    plan.chains.push_back(c);
  }
  return plan;
}

Tensor conv_bn_forward(Context& ctx, Conv2d& conv, const BatchNorm2d& bn, const Tensor& x, const Tensor& residual,
                       bool relu) {
  const Tensor xc = autocast::input(ctx, x);
  Tensor y = Tensor::empty(conv.output_shape(x.shape()), ctx, xc.dtype(), ctx.conv_output_format(xc.dtype()));
  const Tensor bias = conv.has_bias() ? conv.bias().value : Tensor();
  const Tensor w = autocast::weight(ctx, conv.weight(), xc.dtype());
  if (!residual.defined() || residual.dtype() == y.dtype()) {
    ctx.backend().conv2d_bn_forward(ctx, xc, w, bias, bn.running_statistics(), conv.params(), residual, relu, y);
    return y;
  }
  // Add of two dtypes sums in f32 (layers/merge.cpp): the same here, then the ReLU.
  ctx.backend().conv2d_bn_forward(ctx, xc, w, bias, bn.running_statistics(), conv.params(), Tensor(), false, y);
  Tensor sum = y.cast(ctx, DType::f32);
  ctx.backend().axpy(ctx, 1.0f, residual.cast(ctx, DType::f32), sum);
  if (relu) ctx.backend().activation_forward(ctx, Activation::relu, 0.0f, sum, sum);
  return sum;
}

}  // namespace cudl
