// conv2d (forward, data and filter gradients) and the composite transposed convolution against
// hand-computed cases and naive loops on every backend; finite-difference checks on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/ops.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;  // BackendTest, expect_close, expect_error, random_values, zeros

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "conv2d");

struct ConvCase {
  std::int64_t n, c, h, w, k, r, s;
  Conv2dParams p;
  std::string name;
  Shape x() const { return {n, c, h, w}; }
  Shape wt() const { return {k, c, r, s}; }
};

Conv2dParams params(int ph, int pw, int sh, int sw, int dh, int dw) { return {ph, pw, sh, sw, dh, dw}; }

std::vector<ConvCase> conv_cases() {
  return {
      {1, 1, 4, 4, 1, 3, 3, {}, "plain 3x3"},
      {2, 3, 5, 6, 4, 3, 3, params(1, 1, 1, 1, 1, 1), "pad 1, N=2"},
      {2, 2, 7, 7, 3, 3, 3, params(1, 1, 2, 2, 1, 1), "stride 2, pad 1"},
      {1, 2, 9, 8, 2, 3, 2, params(2, 1, 1, 1, 2, 2), "dilation 2"},
      {3, 4, 5, 5, 2, 1, 1, {}, "pointwise"},
      {2, 3, 6, 5, 2, 2, 3, params(0, 1, 2, 1, 1, 2), "non-square everything"},
      {2, 2, 6, 7, 3, 3, 3, params(2, 1, 2, 3, 2, 1), "stride 2x3, dilation 2x1, pad 2x1"},
      {4, 8, 16, 16, 8, 3, 3, params(1, 1, 1, 1, 1, 1), "large enough for the parallel path"},
      // The stride never reaches the last row and column: the exact bottom/right padding is -1,
      // which oneDNN gets as 0 (the same output size and windows).
      {2, 3, 6, 6, 4, 3, 3, params(0, 0, 2, 2, 1, 1), "stride 2 skips the last row"},
      // On the CPU this one runs oneDNN's Winograd F(4x4,3x3) kernels in all three directions
      // (ONEDNN_VERBOSE shows jit_wino_4x3), held to the same tolerance as the direct ones.
      {2, 16, 12, 12, 32, 3, 3, params(1, 1, 1, 1, 1, 1), "16->32 channels (oneDNN's blocked layouts)"},
  };
}

// Calls f(n, k, c, oh, ow, r, s, ih, iw) for every tap that reads a real (unpadded) pixel.
template <class F>
void for_each_tap(const ConvCase& cc, const Shape& y, F f) {
  for (std::int64_t n = 0; n < cc.n; ++n)
    for (std::int64_t k = 0; k < cc.k; ++k)
      for (std::int64_t c = 0; c < cc.c; ++c)
        for (std::int64_t oh = 0; oh < y[2]; ++oh)
          for (std::int64_t ow = 0; ow < y[3]; ++ow)
            for (std::int64_t r = 0; r < cc.r; ++r)
              for (std::int64_t s = 0; s < cc.s; ++s) {
                const std::int64_t ih = oh * cc.p.stride_h - cc.p.pad_h + r * cc.p.dilation_h;
                const std::int64_t iw = ow * cc.p.stride_w - cc.p.pad_w + s * cc.p.dilation_w;
                if (ih >= 0 && ih < cc.h && iw >= 0 && iw < cc.w) f(n, k, c, oh, ow, r, s, ih, iw);
              }
}

std::size_t at(const Shape& s, std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
  return static_cast<std::size_t>(((a * s[1] + b) * s[2] + c) * s[3] + d);
}

}  // namespace

class ConvTest : public BackendTest {};

TEST_P(ConvTest, HandComputed) {
  // x = 1..9 as 3x3, w = [1,2;3,4]: y[p,q] = x[p,q] + 2x[p,q+1] + 3x[p+1,q] + 4x[p+1,q+1].
  auto x = make({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  auto w = make({1, 2, 3, 4}, {1, 1, 2, 2});
  auto y = make({0, 0, 0, 0}, {1, 1, 2, 2});
  backend().conv2d_forward(ctx(), x, w, {}, y);
  EXPECT_EQ(host(y), (std::vector<float>{37, 47, 67, 77}));

  auto dy = make({1, 1, 1, 1}, {1, 1, 2, 2});
  auto dx = make(std::vector<float>(9, 5.0f), {1, 1, 3, 3});
  backend().conv2d_backward_data(ctx(), dy, w, {}, dx);
  EXPECT_EQ(host(dx), (std::vector<float>{1, 3, 2, 4, 10, 6, 3, 7, 4}));

  auto dw = make({1, 1, 1, 1}, {1, 1, 2, 2});
  backend().conv2d_backward_filter(ctx(), x, dy, {}, dw, false);
  EXPECT_EQ(host(dw), (std::vector<float>{12, 16, 24, 28}));
  backend().conv2d_backward_filter(ctx(), x, dy, {}, dw, true);
  EXPECT_EQ(host(dw), (std::vector<float>{24, 32, 48, 56}));

  // Padding 1, stride 2 on a 2x2 input of ones with a 3x3 kernel of ones: each output counts the
  // real pixels its window covers.
  auto x1 = make({1, 1, 1, 1}, {1, 1, 2, 2});
  auto w1 = make(std::vector<float>(9, 1.0f), {1, 1, 3, 3});
  auto y1 = make({0}, {1, 1, 1, 1});
  backend().conv2d_forward(ctx(), x1, w1, params(1, 1, 2, 2, 1, 1), y1);
  EXPECT_EQ(host(y1), (std::vector<float>{4}));
}

TEST_P(ConvTest, ForwardMatchesNaive) {
  unsigned seed = 10;
  for (const auto& cc : conv_cases()) {
    const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
    const auto xv = random_values(cc.x().numel(), seed++);
    const auto wv = random_values(cc.wt().numel(), seed++);
    auto x = make(xv, cc.x());
    auto w = make(wv, cc.wt());
    auto y = make(random_values(ys.numel(), seed++), ys);  // garbage: the op overwrites
    backend().conv2d_forward(ctx(), x, w, cc.p, y);
    std::vector<double> expected(static_cast<std::size_t>(ys.numel()), 0.0);
    for_each_tap(cc, ys, [&](auto n, auto k, auto c, auto oh, auto ow, auto r, auto s, auto ih, auto iw) {
      expected[at(ys, n, k, oh, ow)] += double(xv[at(cc.x(), n, c, ih, iw)]) * wv[at(cc.wt(), k, c, r, s)];
    });
    expect_close(host(y), expected, "conv2d_forward " + cc.name);
  }
}

// Held weights (Backend::hold_constant) give bit-for-bit the results of weights read afresh, in
// both directions that read them; once the hold is gone a change of the weights shows again.
TEST_P(ConvTest, HeldWeightsGiveTheSameResults) {
  const ConvCase cc{2, 16, 9, 7, 32, 3, 3, params(1, 1, 1, 1, 1, 1), "held"};
  const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
  auto x = make(random_values(cc.x().numel(), 31), cc.x());
  auto dy = make(random_values(ys.numel(), 32), ys);
  auto w = make(random_values(cc.wt().numel(), 33), cc.wt());
  auto run = [&] {
    auto y = make(std::vector<float>(static_cast<std::size_t>(ys.numel()), 0.0f), ys);
    auto dx = make(std::vector<float>(static_cast<std::size_t>(cc.x().numel()), 0.0f), cc.x());
    backend().conv2d_forward(ctx(), x, w, cc.p, y);
    backend().conv2d_backward_data(ctx(), dy, w, cc.p, dx);
    return std::make_pair(host(y), host(dx));
  };
  const auto fresh = run();
  {
    const ConstantHold hold = backend().hold_constant(ctx(), w);
    EXPECT_EQ(run(), fresh);  // the first call makes the held copies
    EXPECT_EQ(run(), fresh);  // the second reuses them
    if (ctx().device().is_cpu() && cpu::onednn_conv_enabled(ctx().cpu_conv())) {
      // The CPU keeps a re-laid-out copy: a write under the hold (breaking its promise) is not
      // seen, which shows the copy is what runs.
      auto other = make(random_values(cc.wt().numel(), 35), cc.wt());
      auto saved = make(host(w), cc.wt());
      backend().copy(ctx(), other, w);
      EXPECT_EQ(run(), fresh);
      backend().copy(ctx(), saved, w);
    }
  }
  // Released: new weights are read, not an old copy.
  auto w2 = make(random_values(cc.wt().numel(), 34), cc.wt());
  backend().copy(ctx(), w2, w);
  const auto changed = run();
  EXPECT_NE(changed.first, fresh.first);
  auto y2 = make(std::vector<float>(static_cast<std::size_t>(ys.numel()), 0.0f), ys);
  backend().conv2d_forward(ctx(), x, w2, cc.p, y2);
  EXPECT_EQ(changed.first, host(y2));
}

TEST_P(ConvTest, BackwardDataMatchesNaive) {
  unsigned seed = 20;
  for (const auto& cc : conv_cases()) {
    const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
    const auto dyv = random_values(ys.numel(), seed++);
    const auto wv = random_values(cc.wt().numel(), seed++);
    auto dy = make(dyv, ys);
    auto w = make(wv, cc.wt());
    auto dx = make(random_values(cc.x().numel(), seed++), cc.x());
    backend().conv2d_backward_data(ctx(), dy, w, cc.p, dx);
    std::vector<double> expected(static_cast<std::size_t>(cc.x().numel()), 0.0);
    for_each_tap(cc, ys, [&](auto n, auto k, auto c, auto oh, auto ow, auto r, auto s, auto ih, auto iw) {
      expected[at(cc.x(), n, c, ih, iw)] += double(dyv[at(ys, n, k, oh, ow)]) * wv[at(cc.wt(), k, c, r, s)];
    });
    expect_close(host(dx), expected, "conv2d_backward_data " + cc.name);
  }
}

TEST_P(ConvTest, BackwardFilterMatchesNaiveAndAccumulates) {
  unsigned seed = 30;
  for (const auto& cc : conv_cases()) {
    for (bool accumulate : {false, true}) {
      const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
      const auto xv = random_values(cc.x().numel(), seed++);
      const auto dyv = random_values(ys.numel(), seed++);
      const auto init = random_values(cc.wt().numel(), seed++);
      auto x = make(xv, cc.x());
      auto dy = make(dyv, ys);
      auto dw = make(init, cc.wt());
      backend().conv2d_backward_filter(ctx(), x, dy, cc.p, dw, accumulate);
      std::vector<double> expected(static_cast<std::size_t>(cc.wt().numel()), 0.0);
      if (accumulate) expected.assign(init.begin(), init.end());
      for_each_tap(cc, ys, [&](auto n, auto k, auto c, auto oh, auto ow, auto r, auto s, auto ih, auto iw) {
        expected[at(cc.wt(), k, c, r, s)] += double(xv[at(cc.x(), n, c, ih, iw)]) * dyv[at(ys, n, k, oh, ow)];
      });
      expect_close(host(dw), expected,
                   "conv2d_backward_filter " + cc.name + (accumulate ? " (accumulate)" : " (overwrite)"));
    }
  }
}

TEST_P(ConvTest, BackwardFilterIsDeterministic) {
  const ConvCase cc{5, 8, 16, 16, 8, 3, 3, params(1, 1, 1, 1, 1, 1), "N=5, parallel path"};
  const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
  auto x = make(random_values(cc.x().numel(), 1), cc.x());
  auto dy = make(random_values(ys.numel(), 2), ys);
  auto dw1 = make(std::vector<float>(static_cast<std::size_t>(cc.wt().numel())), cc.wt());
  auto dw2 = make(std::vector<float>(static_cast<std::size_t>(cc.wt().numel())), cc.wt());
  backend().conv2d_backward_filter(ctx(), x, dy, cc.p, dw1, false);
  backend().conv2d_backward_filter(ctx(), x, dy, cc.p, dw2, false);
  EXPECT_EQ(host(dw1), host(dw2));
}

namespace {

// Bit-identical results, -0 and NaN payloads included.
void expect_bits_equal(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what << " differs between two runs";
}

}  // namespace

TEST_P(ConvTest, ForwardAndBackwardDataAreDeterministic) {
  const ConvCase cc{5, 8, 16, 16, 8, 3, 3, params(1, 1, 1, 1, 1, 1), "N=5, parallel path"};
  const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
  auto x = make(random_values(cc.x().numel(), 3), cc.x());
  auto w = make(random_values(cc.wt().numel(), 4), cc.wt());
  auto dy = make(random_values(ys.numel(), 5), ys);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    auto y = make(random_values(ys.numel(), 6 + static_cast<unsigned>(run)), ys);  // different garbage each run
    backend().conv2d_forward(ctx(), x, w, cc.p, y);
    if (run == 0)
      first = host(y);
    else
      expect_bits_equal(host(y), first, "conv2d_forward");
  }
  for (int run = 0; run < 2; ++run) {
    auto dx = make(random_values(cc.x().numel(), 8 + static_cast<unsigned>(run)), cc.x());
    backend().conv2d_backward_data(ctx(), dy, w, cc.p, dx);
    if (run == 0)
      first = host(dx);
    else
      expect_bits_equal(host(dx), first, "conv2d_backward_data");
  }
}

// A VGG-sized layer (64 -> 64 channels, 32x32, 3x3 pad 1, N=2), large enough that cuDNN's
// heuristics choose real algorithms rather than the trivial ones small shapes get. The context is
// deterministic by default, so each pass must repeat bit for bit.
TEST_P(ConvTest, VggSizedLayerIsDeterministic) {
  ASSERT_TRUE(ctx().deterministic());
  const ConvCase cc{2, 64, 32, 32, 64, 3, 3, params(1, 1, 1, 1, 1, 1), "VGG 64->64 at 32x32"};
  const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
  auto x = make(random_values(cc.x().numel(), 11), cc.x());
  auto w = make(random_values(cc.wt().numel(), 12), cc.wt());
  auto dy = make(random_values(ys.numel(), 13), ys);
  auto y1 = make(std::vector<float>(static_cast<std::size_t>(ys.numel())), ys), y2 = y1.clone(ctx());
  auto dx1 = make(std::vector<float>(static_cast<std::size_t>(cc.x().numel())), cc.x()), dx2 = dx1.clone(ctx());
  auto dw1 = make(random_values(cc.wt().numel(), 14), cc.wt()), dw2 = dw1.clone(ctx());
  for (auto* out : {&y1, &y2}) backend().conv2d_forward(ctx(), x, w, cc.p, *out);
  expect_bits_equal(host(y1), host(y2), "conv2d_forward");
  for (auto* out : {&dx1, &dx2}) backend().conv2d_backward_data(ctx(), dy, w, cc.p, *out);
  expect_bits_equal(host(dx1), host(dx2), "conv2d_backward_data");
  for (auto* out : {&dw1, &dw2}) backend().conv2d_backward_filter(ctx(), x, dy, cc.p, *out, true);
  expect_bits_equal(host(dw1), host(dw2), "conv2d_backward_filter (accumulate)");
  for (auto* out : {&dw1, &dw2}) backend().conv2d_backward_filter(ctx(), x, dy, cc.p, *out, false);
  expect_bits_equal(host(dw1), host(dw2), "conv2d_backward_filter");
}

TEST_P(ConvTest, BadShapesThrow) {
  auto x = make(random_values(75, 1), {1, 3, 5, 5});
  auto w = make(random_values(8 * 4 * 9, 2), {8, 4, 3, 3});
  auto y = make(random_values(8 * 9, 3), {1, 8, 3, 3});
  expect_error([&] { backend().conv2d_forward(ctx(), x, w, {}, y); }, {"conv2d", "[1,3,5,5]", "[8,4,3,3]"});
  auto w3 = make(random_values(8 * 3 * 9, 2), {8, 3, 3, 3});
  auto bad_y = make(random_values(8 * 16, 3), {1, 8, 4, 4});
  expect_error([&] { backend().conv2d_forward(ctx(), x, w3, {}, bad_y); },
               {"conv2d_forward", "[1,8,4,4]", "[1,8,3,3]"});
  expect_error([&] { backend().conv2d_backward_data(ctx(), bad_y, w3, {}, x); },
               {"conv2d_backward_data", "[1,8,4,4]", "[1,3,5,5]"});
  expect_error([&] { backend().conv2d_backward_filter(ctx(), x, bad_y, {}, w3, false); },
               {"conv2d_backward_filter", "[1,8,4,4]", "[8,3,3,3]"});
  expect_error([&] { backend().conv2d_backward_filter(ctx(), x, y, {}, w, false); },
               {"conv2d_backward_filter", "[1,3,5,5]", "[8,4,3,3]"});
  expect_error([&] { backend().conv2d_forward(ctx(), x, w3, params(0, 0, 0, 1, 1, 1), y); }, {"conv2d", "stride"});
  auto big_w = make(random_values(8 * 3 * 49, 2), {8, 3, 7, 7});
  expect_error([&] { backend().conv2d_forward(ctx(), x, big_w, {}, y); }, {"conv2d", "[8,3,7,7]", "[1,3,5,5]"});
}

// ---- transposed convolution (engine/ops.hpp) ----

namespace {

struct TransposeCase {
  std::int64_t n, cin, h, w, cout, r, s;
  Conv2dParams p;
  int oph = 0, opw = 0;
  std::string name;
  Shape x() const { return {n, cin, h, w}; }
  Shape wt() const { return {cin, cout, r, s}; }
};

std::vector<TransposeCase> transpose_cases() {
  return {
      {1, 1, 3, 3, 1, 2, 2, {}, 0, 0, "plain"},
      {2, 3, 4, 5, 2, 3, 3, params(1, 1, 2, 2, 1, 1), 1, 0, "stride 2, pad 1, output padding 1x0"},
      {1, 2, 3, 4, 3, 3, 2, params(1, 0, 1, 2, 2, 1), 0, 1, "dilation 2x1, stride 1x2"},
  };
}

// y[n, co, ih*s - p + r*d, ...] += x[n, ci, ih, iw] * w[ci, co, r, s]: every input pixel
// scatters its weighted kernel onto the output.
template <class F>
void for_each_scatter(const TransposeCase& tc, const Shape& y, F f) {
  for (std::int64_t n = 0; n < tc.n; ++n)
    for (std::int64_t ci = 0; ci < tc.cin; ++ci)
      for (std::int64_t co = 0; co < tc.cout; ++co)
        for (std::int64_t ih = 0; ih < tc.h; ++ih)
          for (std::int64_t iw = 0; iw < tc.w; ++iw)
            for (std::int64_t r = 0; r < tc.r; ++r)
              for (std::int64_t s = 0; s < tc.s; ++s) {
                const std::int64_t oh = ih * tc.p.stride_h - tc.p.pad_h + r * tc.p.dilation_h;
                const std::int64_t ow = iw * tc.p.stride_w - tc.p.pad_w + s * tc.p.dilation_w;
                if (oh >= 0 && oh < y[2] && ow >= 0 && ow < y[3]) f(n, ci, co, ih, iw, r, s, oh, ow);
              }
}

}  // namespace

TEST_P(ConvTest, TransposedOutputShape) {
  // PyTorch: ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1) on 5x5 gives 10x10.
  EXPECT_EQ(conv_transpose2d_output_shape({1, 2, 5, 5}, {2, 3, 3, 3}, params(1, 1, 2, 2, 1, 1), 1, 1),
            (Shape{1, 3, 10, 10}));
  EXPECT_EQ(conv_transpose2d_output_shape({4, 2, 3, 7}, {2, 5, 2, 3}, {}), (Shape{4, 5, 4, 9}));
  // (H-1)*s - 2p + d(R-1) + op + 1 = 3*3 - 2 + 2*2 + 0 + 1 = 12, (W-1)*1 - 0 + 1*1 + 0 + 1 = 6
  EXPECT_EQ(conv_transpose2d_output_shape({1, 1, 4, 5}, {1, 1, 3, 2}, params(1, 0, 3, 1, 2, 1)), (Shape{1, 1, 12, 6}));
  // The transposed conv's output, convolved, gives back the input's spatial size.
  for (const auto& tc : transpose_cases()) {
    const Shape y = conv_transpose2d_output_shape(tc.x(), tc.wt(), tc.p, tc.oph, tc.opw);
    EXPECT_EQ(conv2d_output_shape(y, tc.wt(), tc.p), tc.x()) << tc.name;
  }
  expect_error(
      [] {
        conv_transpose2d_output_shape({1, 2, 5, 5}, {3, 3, 3, 3}, {});
      },
      {"conv_transpose2d", "[1,2,5,5]", "[3,3,3,3]"});
  expect_error(
      [] {
        conv_transpose2d_output_shape({1, 2, 5, 5}, {2, 3, 3, 3}, params(1, 1, 2, 2, 1, 1), 2, 0);
      },
      {"conv_transpose2d", "output padding"});
}

TEST_P(ConvTest, TransposedHandComputed) {
  // Stride 2, 2x2 kernel of ones: each input pixel becomes a 2x2 block.
  auto x = make({1, 2, 3, 4}, {1, 1, 2, 2});
  auto w = make({1, 1, 1, 1}, {1, 1, 2, 2});
  auto y = make(std::vector<float>(16, 9.0f), {1, 1, 4, 4});
  conv_transpose2d_forward(ctx(), x, w, params(0, 0, 2, 2, 1, 1), y);
  EXPECT_EQ(host(y), (std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
  // Its data gradient sums each block; its filter gradient correlates x with the blocks.
  auto dy = make({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, {1, 1, 4, 4});
  auto dx = make({0, 0, 0, 0}, {1, 1, 2, 2});
  conv_transpose2d_backward_data(ctx(), dy, w, params(0, 0, 2, 2, 1, 1), dx);
  EXPECT_EQ(host(dx), (std::vector<float>{14, 22, 46, 54}));
  auto dw = make({0, 0, 0, 0}, {1, 1, 2, 2});
  conv_transpose2d_backward_filter(ctx(), x, dy, params(0, 0, 2, 2, 1, 1), dw, false);
  // dw[r,s] = Σ x[i,j] dy[2i+r, 2j+s]: (0,0) = 1*1+2*3+3*9+4*11 = 78
  EXPECT_EQ(host(dw), (std::vector<float>{78, 88, 118, 128}));
}

TEST_P(ConvTest, TransposedMatchesNaiveScatter) {
  unsigned seed = 40;
  for (const auto& tc : transpose_cases()) {
    const Shape ys = conv_transpose2d_output_shape(tc.x(), tc.wt(), tc.p, tc.oph, tc.opw);
    const auto xv = random_values(tc.x().numel(), seed++);
    const auto wv = random_values(tc.wt().numel(), seed++);
    const auto dyv = random_values(ys.numel(), seed++);
    const auto init = random_values(tc.wt().numel(), seed++);
    auto x = make(xv, tc.x());
    auto w = make(wv, tc.wt());
    auto y = make(random_values(ys.numel(), seed++), ys);
    auto dy = make(dyv, ys);
    auto dx = make(random_values(tc.x().numel(), seed++), tc.x());
    auto dw = make(init, tc.wt());
    conv_transpose2d_forward(ctx(), x, w, tc.p, y);
    conv_transpose2d_backward_data(ctx(), dy, w, tc.p, dx);
    conv_transpose2d_backward_filter(ctx(), x, dy, tc.p, dw, true);
    std::vector<double> ey(static_cast<std::size_t>(ys.numel()), 0.0);
    std::vector<double> edx(static_cast<std::size_t>(tc.x().numel()), 0.0);
    std::vector<double> edw(init.begin(), init.end());
    for_each_scatter(tc, ys, [&](auto n, auto ci, auto co, auto ih, auto iw, auto r, auto s, auto oh, auto ow) {
      const double wval = wv[at(tc.wt(), ci, co, r, s)];
      ey[at(ys, n, co, oh, ow)] += xv[at(tc.x(), n, ci, ih, iw)] * wval;
      edx[at(tc.x(), n, ci, ih, iw)] += dyv[at(ys, n, co, oh, ow)] * wval;
      edw[at(tc.wt(), ci, co, r, s)] += double(xv[at(tc.x(), n, ci, ih, iw)]) * dyv[at(ys, n, co, oh, ow)];
    });
    expect_close(host(y), ey, "conv_transpose2d_forward " + tc.name);
    expect_close(host(dx), edx, "conv_transpose2d_backward_data " + tc.name);
    expect_close(host(dw), edw, "conv_transpose2d_backward_filter (accumulate) " + tc.name);
  }
}

TEST_P(ConvTest, TransposedBadShapesThrow) {
  auto x = make(random_values(50, 1), {1, 2, 5, 5});
  auto w = make(random_values(27, 2), {3, 1, 3, 3});
  auto y = make(random_values(49, 3), {1, 1, 7, 7});
  expect_error([&] { conv_transpose2d_forward(ctx(), x, w, {}, y); },
               {"conv_transpose2d_forward", "[1,2,5,5]", "[3,1,3,3]"});
  auto w2 = make(random_values(18, 2), {2, 1, 3, 3});
  auto bad_y = make(random_values(36, 3), {1, 1, 6, 6});
  expect_error([&] { conv_transpose2d_forward(ctx(), x, w2, {}, bad_y); },
               {"conv_transpose2d_forward", "[1,1,6,6]", "[1,1,7,7]"});
  expect_error([&] { conv_transpose2d_backward_data(ctx(), bad_y, w2, {}, x); },
               {"conv_transpose2d_backward_data", "[1,1,6,6]"});
  expect_error([&] { conv_transpose2d_backward_filter(ctx(), x, bad_y, {}, w2, false); },
               {"conv_transpose2d_backward_filter", "[1,1,6,6]"});
}

CUDL_INSTANTIATE_BACKENDS(ConvTest);

// ---- gradient checks (CPU, finite differences) ----

namespace {

void check_conv_gradients(const ConvCase& cc, unsigned seed) {
  Context ctx;
  Backend& be = ctx.backend();
  const Shape ys = conv2d_output_shape(cc.x(), cc.wt(), cc.p);
  auto x = Tensor::from_host(random_values(cc.x().numel(), seed), cc.x(), ctx);
  auto w = Tensor::from_host(random_values(cc.wt().numel(), seed + 1), cc.wt(), ctx);
  const auto weights = random_values(ys.numel(), seed + 2);
  auto g = Tensor::from_host(weights, ys, ctx);
  auto y = zeros(ys, ctx);
  auto loss = [&] {
    be.conv2d_forward(ctx, x, w, cc.p, y);
    return cudl::testing::weighted_sum(y.to_vector(ctx), weights);
  };
  auto dx = zeros(cc.x(), ctx);
  auto dw = zeros(cc.wt(), ctx);
  be.conv2d_backward_data(ctx, g, w, cc.p, dx);
  be.conv2d_backward_filter(ctx, x, g, cc.p, dw, false);
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "conv2d dx " + cc.name);
  cudl::testing::expect_gradient_matches(ctx, w, dw, loss, "conv2d dw " + cc.name);
}

}  // namespace

TEST(GradientConv2d, StridePadding) {
  check_conv_gradients({2, 2, 5, 5, 3, 3, 3, params(1, 1, 2, 2, 1, 1), "s2p1"}, 1);
}

TEST(GradientConv2d, DilationNonSquare) {
  check_conv_gradients({1, 2, 7, 6, 2, 3, 2, params(2, 1, 1, 2, 2, 1), "d2 non-square"}, 5);
}

TEST(GradientConvTranspose2d, DxAndDw) {
  Context ctx;
  const TransposeCase tc{2, 2, 3, 3, 3, 3, 3, params(1, 1, 2, 2, 1, 1), 1, 1, "s2p1op1"};
  const Shape ys = conv_transpose2d_output_shape(tc.x(), tc.wt(), tc.p, tc.oph, tc.opw);
  auto x = Tensor::from_host(random_values(tc.x().numel(), 1), tc.x(), ctx);
  auto w = Tensor::from_host(random_values(tc.wt().numel(), 2), tc.wt(), ctx);
  const auto weights = random_values(ys.numel(), 3);
  auto g = Tensor::from_host(weights, ys, ctx);
  auto y = zeros(ys, ctx);
  auto loss = [&] {
    conv_transpose2d_forward(ctx, x, w, tc.p, y);
    return cudl::testing::weighted_sum(y.to_vector(ctx), weights);
  };
  auto dx = zeros(tc.x(), ctx);
  auto dw = zeros(tc.wt(), ctx);
  conv_transpose2d_backward_data(ctx, g, w, tc.p, dx);
  conv_transpose2d_backward_filter(ctx, x, g, tc.p, dw, false);
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "conv_transpose2d dx");
  cudl::testing::expect_gradient_matches(ctx, w, dw, loss, "conv_transpose2d dw");
}
