// Grouped and depthwise convolution (Conv2dParams::groups): forward, data and filter gradients
// against a direct loop written here, on every backend and, on the CPU, under each convolution
// policy (oneDNN's kernels, Winograd allowed or not, and im2col + OpenBLAS); finite-difference
// checks of both gradients; shapes that do not split into groups refused in one line.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/ops.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;  // BackendTest, expect_close, expect_error, random_values, zeros

namespace {

struct GroupCase {
  std::int64_t n, c, h, w, k, r, s;
  Conv2dParams p;
  std::string name;
  Shape x() const { return {n, c, h, w}; }
  Shape wt() const { return {k, c / p.groups, r, s}; }
};

Conv2dParams params(int pad, int stride, int groups, int dilation = 1) {
  return {pad, pad, stride, stride, dilation, dilation, groups};
}

std::vector<GroupCase> group_cases() {
  return {
      {2, 4, 7, 7, 6, 3, 3, params(1, 1, 1), "groups=1 (the ungrouped path)"},
      {2, 4, 7, 8, 6, 3, 3, params(1, 2, 2), "groups=2, stride 2, pad 1"},
      {1, 6, 9, 9, 4, 3, 3, params(0, 1, 2), "groups=2, no padding"},
      {2, 8, 9, 9, 8, 3, 3, params(1, 1, 8), "depthwise"},
      {2, 6, 10, 10, 6, 3, 3, params(1, 2, 6), "depthwise, stride 2 (MobileNet's downsampling)"},
      {1, 3, 8, 8, 6, 3, 3, params(1, 1, 3), "depthwise, 2 outputs per channel"},
      {1, 4, 9, 8, 4, 3, 2, {2, 1, 1, 2, 2, 1, 4}, "depthwise, non-square, dilated"},
      {2, 32, 14, 14, 32, 3, 3, params(1, 1, 32), "depthwise, 32 channels (oneDNN's blocked kernels)"},
      {2, 32, 8, 8, 32, 3, 3, params(1, 1, 2), "groups=2 of 16 channels (blocked layouts)"},
      {2, 4, 6, 6, 8, 1, 1, params(0, 1, 4), "grouped pointwise"},
  };
}

// Calls f(n, k, c, ci, oh, ow, r, s, ih, iw) for every tap that reads a real (unpadded) pixel: c is
// the channel within the group (the weight's dim 1), ci = group * C/G + c the input channel.
template <class F>
void for_each_tap(const GroupCase& gc, const Shape& y, F f) {
  const std::int64_t cg = gc.c / gc.p.groups, kg = gc.k / gc.p.groups;
  for (std::int64_t n = 0; n < gc.n; ++n)
    for (std::int64_t k = 0; k < gc.k; ++k)
      for (std::int64_t c = 0; c < cg; ++c)
        for (std::int64_t oh = 0; oh < y[2]; ++oh)
          for (std::int64_t ow = 0; ow < y[3]; ++ow)
            for (std::int64_t r = 0; r < gc.r; ++r)
              for (std::int64_t s = 0; s < gc.s; ++s) {
                const std::int64_t ih = oh * gc.p.stride_h - gc.p.pad_h + r * gc.p.dilation_h;
                const std::int64_t iw = ow * gc.p.stride_w - gc.p.pad_w + s * gc.p.dilation_w;
                if (ih >= 0 && ih < gc.h && iw >= 0 && iw < gc.w) f(n, k, c, (k / kg) * cg + c, oh, ow, r, s, ih, iw);
              }
}

std::size_t at(const Shape& s, std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
  return static_cast<std::size_t>(((a * s[1] + b) * s[2] + c) * s[3] + d);
}

}  // namespace

class GroupedConvTest : public BackendTest {
 protected:
  // The CPU's three convolution policies (each a different kernel family), or the one CUDA path.
  std::vector<CpuConv> policies() {
    if (!ctx().device().is_cpu()) return {ctx().cpu_conv()};
    return {CpuConv::fastest, CpuConv::direct, CpuConv::im2col};
  }
  std::string label(const GroupCase& gc) {
    return gc.name + (ctx().device().is_cpu() ? " [" + std::string(cpu_conv_name(ctx().cpu_conv())) + "]" : "");
  }
};

TEST_P(GroupedConvTest, ForwardMatchesDirectLoop) {
  for (const CpuConv policy : policies()) {
    ctx().set_cpu_conv(policy);
    unsigned seed = 100;
    for (const auto& gc : group_cases()) {
      const Shape ys = conv2d_output_shape(gc.x(), gc.wt(), gc.p);
      const auto xv = random_values(gc.x().numel(), seed++);
      const auto wv = random_values(gc.wt().numel(), seed++);
      auto x = make(xv, gc.x());
      auto w = make(wv, gc.wt());
      auto y = make(random_values(ys.numel(), seed++), ys);  // garbage: the op overwrites
      backend().conv2d_forward(ctx(), x, w, gc.p, y);
      std::vector<double> expected(static_cast<std::size_t>(ys.numel()), 0.0);
      for_each_tap(gc, ys, [&](auto n, auto k, auto c, auto ci, auto oh, auto ow, auto r, auto s, auto ih, auto iw) {
        expected[at(ys, n, k, oh, ow)] += double(xv[at(gc.x(), n, ci, ih, iw)]) * wv[at(gc.wt(), k, c, r, s)];
      });
      expect_close(host(y), expected, "conv2d_forward " + label(gc));
    }
  }
}

TEST_P(GroupedConvTest, BackwardDataMatchesDirectLoop) {
  for (const CpuConv policy : policies()) {
    ctx().set_cpu_conv(policy);
    unsigned seed = 200;
    for (const auto& gc : group_cases()) {
      const Shape ys = conv2d_output_shape(gc.x(), gc.wt(), gc.p);
      const auto dyv = random_values(ys.numel(), seed++);
      const auto wv = random_values(gc.wt().numel(), seed++);
      auto dy = make(dyv, ys);
      auto w = make(wv, gc.wt());
      auto dx = make(random_values(gc.x().numel(), seed++), gc.x());
      backend().conv2d_backward_data(ctx(), dy, w, gc.p, dx);
      std::vector<double> expected(static_cast<std::size_t>(gc.x().numel()), 0.0);
      for_each_tap(gc, ys, [&](auto n, auto k, auto c, auto ci, auto oh, auto ow, auto r, auto s, auto ih, auto iw) {
        expected[at(gc.x(), n, ci, ih, iw)] += double(dyv[at(ys, n, k, oh, ow)]) * wv[at(gc.wt(), k, c, r, s)];
      });
      expect_close(host(dx), expected, "conv2d_backward_data " + label(gc));
    }
  }
}

TEST_P(GroupedConvTest, BackwardFilterMatchesDirectLoopAndAccumulates) {
  for (const CpuConv policy : policies()) {
    ctx().set_cpu_conv(policy);
    unsigned seed = 300;
    for (const auto& gc : group_cases()) {
      for (const bool accumulate : {false, true}) {
        const Shape ys = conv2d_output_shape(gc.x(), gc.wt(), gc.p);
        const auto xv = random_values(gc.x().numel(), seed++);
        const auto dyv = random_values(ys.numel(), seed++);
        const auto init = random_values(gc.wt().numel(), seed++);
        auto x = make(xv, gc.x());
        auto dy = make(dyv, ys);
        auto dw = make(init, gc.wt());
        backend().conv2d_backward_filter(ctx(), x, dy, gc.p, dw, accumulate);
        std::vector<double> expected(static_cast<std::size_t>(gc.wt().numel()), 0.0);
        if (accumulate) expected.assign(init.begin(), init.end());
        for_each_tap(gc, ys, [&](auto n, auto k, auto c, auto ci, auto oh, auto ow, auto r, auto s, auto ih, auto iw) {
          expected[at(gc.wt(), k, c, r, s)] += double(xv[at(gc.x(), n, ci, ih, iw)]) * dyv[at(ys, n, k, oh, ow)];
        });
        expect_close(host(dw), expected,
                     "conv2d_backward_filter " + label(gc) + (accumulate ? " (accumulate)" : " (overwrite)"));
      }
    }
  }
}

// Held weights (Backend::hold_constant, inference and style transfer) in the grouped layouts: the
// CPU's re-laid-out copy (oneDNN's blocked goihw) gives bit-for-bit the results of weights read
// afresh, for 2 groups and depthwise, forward and backward-data.
TEST_P(GroupedConvTest, HeldGroupedWeightsGiveTheSameResults) {
  for (const GroupCase& gc : {GroupCase{2, 32, 9, 7, 32, 3, 3, params(1, 1, 2), "held, 2 groups"},
                              GroupCase{2, 32, 9, 7, 32, 3, 3, params(1, 2, 32), "held, depthwise"}}) {
    const Shape ys = conv2d_output_shape(gc.x(), gc.wt(), gc.p);
    auto x = make(random_values(gc.x().numel(), 41), gc.x());
    auto dy = make(random_values(ys.numel(), 42), ys);
    auto w = make(random_values(gc.wt().numel(), 43), gc.wt());
    auto run = [&] {
      auto y = make(std::vector<float>(static_cast<std::size_t>(ys.numel()), 0.0f), ys);
      auto dx = make(std::vector<float>(static_cast<std::size_t>(gc.x().numel()), 0.0f), gc.x());
      backend().conv2d_forward(ctx(), x, w, gc.p, y);
      backend().conv2d_backward_data(ctx(), dy, w, gc.p, dx);
      return std::make_pair(host(y), host(dx));
    };
    const auto fresh = run();
    const ConstantHold hold = backend().hold_constant(ctx(), w);
    EXPECT_EQ(run(), fresh) << gc.name;  // the first call makes the held copies
    EXPECT_EQ(run(), fresh) << gc.name;  // the second reuses them
  }
}

// Shapes that do not split into the groups are refused by every direction, in one line naming the
// op, the shapes and the group count.
TEST_P(GroupedConvTest, ShapesThatDoNotSplitIntoGroupsAreRefused) {
  auto x = make(random_values(1 * 4 * 5 * 5, 1), {1, 4, 5, 5});
  // Input channels: w [6, 2, 3, 3] with groups=3 expects 6 input channels, x has 4.
  auto w = make(random_values(6 * 2 * 9, 2), {6, 2, 3, 3});
  auto y = make(random_values(6 * 9, 3), {1, 6, 3, 3});
  expect_error([&] { backend().conv2d_forward(ctx(), x, w, params(0, 1, 3), y); },
               {"conv2d", "x=[1,4,5,5]", "w=[6,2,3,3]", "groups=3", "expects 6"});
  expect_error([&] { backend().conv2d_backward_data(ctx(), y, w, params(0, 1, 3), x); },
               {"conv2d_backward_data", "[1,4,5,5]", "[6,2,3,3]", "groups=3"});
  expect_error([&] { backend().conv2d_backward_filter(ctx(), x, y, params(0, 1, 3), w, false); },
               {"conv2d_backward_filter", "[1,4,5,5]", "[6,2,3,3]", "groups=3"});
  // Output channels: 6 is not divisible by 4 (though C/G * G = 4 matches x).
  auto w4 = make(random_values(6 * 9, 4), {6, 1, 3, 3});
  expect_error([&] { backend().conv2d_forward(ctx(), x, w4, params(0, 1, 4), y); },
               {"conv2d", "w=[6,1,3,3]", "6 output channels", "groups=4"});
  expect_error([&] { backend().conv2d_backward_filter(ctx(), x, y, params(0, 1, 4), w4, false); },
               {"conv2d_backward_filter", "[6,1,3,3]", "6 output channels", "groups=4"});
  // A group count below one.
  auto w1 = make(random_values(6 * 4 * 9, 5), {6, 4, 3, 3});
  expect_error([&] { backend().conv2d_forward(ctx(), x, w1, params(0, 1, 0), y); }, {"conv2d", "groups", "got 0"});
  expect_error([&] { backend().conv2d_backward_data(ctx(), y, w1, params(0, 1, -2), x); },
               {"conv2d_backward_data", "groups", "got -2"});
  // The transposed convolution is groups=1 only.
  auto xt = make(random_values(1 * 4 * 3 * 3, 6), {1, 4, 3, 3});
  auto wt = make(random_values(4 * 2 * 9, 7), {4, 2, 3, 3});
  auto yt = make(random_values(4 * 25, 8), {1, 4, 5, 5});
  expect_error([&] { conv_transpose2d_forward(ctx(), xt, wt, params(0, 1, 2), yt); },
               {"conv_transpose2d", "groups=2", "only groups=1"});
}

CUDL_INSTANTIATE_BACKENDS(GroupedConvTest);

// ---- gradient checks (CPU, finite differences) ----

namespace {

void check_grouped_gradients(const GroupCase& gc, CpuConv policy, unsigned seed) {
  Context ctx;
  ctx.set_cpu_conv(policy);
  Backend& be = ctx.backend();
  const Shape ys = conv2d_output_shape(gc.x(), gc.wt(), gc.p);
  auto x = Tensor::from_host(random_values(gc.x().numel(), seed), gc.x(), ctx);
  auto w = Tensor::from_host(random_values(gc.wt().numel(), seed + 1), gc.wt(), ctx);
  const auto weights = random_values(ys.numel(), seed + 2);
  auto g = Tensor::from_host(weights, ys, ctx);
  auto y = zeros(ys, ctx);
  auto loss = [&] {
    be.conv2d_forward(ctx, x, w, gc.p, y);
    return cudl::testing::weighted_sum(y.to_vector(ctx), weights);
  };
  auto dx = zeros(gc.x(), ctx);
  auto dw = zeros(gc.wt(), ctx);
  be.conv2d_backward_data(ctx, g, w, gc.p, dx);
  be.conv2d_backward_filter(ctx, x, g, gc.p, dw, false);
  const std::string what = gc.name + " [" + std::string(cpu_conv_name(policy)) + "]";
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "conv2d dx " + what);
  cudl::testing::expect_gradient_matches(ctx, w, dw, loss, "conv2d dw " + what);
}

}  // namespace

TEST(GradientGroupedConv2d, TwoGroupsStridePadding) {
  for (const CpuConv policy : {CpuConv::fastest, CpuConv::im2col})
    check_grouped_gradients({2, 4, 6, 5, 6, 3, 3, params(1, 2, 2), "groups=2 s2p1"}, policy, 11);
}

TEST(GradientGroupedConv2d, Depthwise) {
  for (const CpuConv policy : {CpuConv::fastest, CpuConv::im2col})
    check_grouped_gradients({2, 3, 6, 6, 3, 3, 3, params(1, 1, 3), "depthwise p1"}, policy, 21);
}

TEST(GradientGroupedConv2d, DepthwiseStridedWithChannelMultiplier) {
  for (const CpuConv policy : {CpuConv::fastest, CpuConv::im2col})
    check_grouped_gradients({1, 2, 7, 7, 4, 3, 3, params(1, 2, 2), "depthwise x2 s2p1"}, policy, 31);
}
