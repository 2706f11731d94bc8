// Max and average pooling against hand-computed cases and naive loops on every backend;
// finite-difference checks on the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::BackendTest;
using cudl::testing::expect_error;
using cudl::testing::random_values;
using cudl::testing::zeros;

namespace {

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "maxpool2d", "avgpool2d");

// Distinct values 0.1 apart, shuffled: no ties, and no two within a finite-difference step.
std::vector<float> distinct_values(std::int64_t n, unsigned seed) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.1f * static_cast<float>(i) - 0.05f * static_cast<float>(n);
  std::mt19937 rng(seed);
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

// The pooling checks hold a tighter tolerance (1e-5) than the shared default.
void expect_close(const std::vector<float>& actual, const std::vector<double>& expected, const std::string& what) {
  cudl::testing::expect_close(actual, expected, what, 1e-5, 1e-5);
}

Pool2dParams pool(int kh, int kw, int sh, int sw, int ph, int pw) { return {kh, kw, sh, sw, ph, pw}; }

struct PoolCase {
  Shape x;
  Pool2dParams p;
  std::string name;
};

std::vector<PoolCase> pool_cases() {
  return {
      {{1, 1, 4, 4}, pool(2, 2, 2, 2, 0, 0), "2x2 stride 2"},
      {{2, 3, 7, 7}, pool(3, 3, 2, 2, 1, 1), "3x3 stride 2 pad 1, N=2"},
      {{1, 2, 5, 6}, pool(3, 3, 1, 1, 1, 1), "3x3 stride 1 pad 1"},
      {{2, 2, 6, 9}, pool(2, 3, 1, 2, 1, 1), "non-square 2x3 stride 1x2 pad 1"},
      {{2, 3, 5, 5}, pool(3, 2, 3, 2, 0, 1), "kernel 3x2, stride 3x2, pad 0x1"},
      {{4, 16, 32, 32}, pool(2, 2, 2, 2, 0, 0), "large enough for the parallel path"},
      {{2, 3, 9, 7}, pool(2, 2, 2, 2, 0, 0), "2x2 stride 2, an odd last row and column no window reads"},
      {{2, 3, 9, 8}, pool(2, 2, 2, 2, 0, 0), "2x2 stride 2, even width (CPU: the two-pass path), odd last row"},
      {{8, 16, 24, 24}, pool(2, 2, 2, 2, 0, 0), "MNIST's pool shape, parallel"},
      {{2, 16, 33, 31}, pool(3, 3, 2, 2, 1, 1), "ResNet's stem pool (3x3 stride 2 pad 1), odd sizes, parallel"},
  };
}

// Calls f(plane, oh, ow, ih, iw) for every real (unpadded) pixel of every window, row-major.
template <class F>
void for_each_window_pixel(const PoolCase& pc, const Shape& y, F f) {
  for (std::int64_t plane = 0; plane < y[0] * y[1]; ++plane)
    for (std::int64_t oh = 0; oh < y[2]; ++oh)
      for (std::int64_t ow = 0; ow < y[3]; ++ow)
        for (std::int64_t r = 0; r < pc.p.kernel_h; ++r)
          for (std::int64_t s = 0; s < pc.p.kernel_w; ++s) {
            const std::int64_t ih = oh * pc.p.stride_h - pc.p.pad_h + r, iw = ow * pc.p.stride_w - pc.p.pad_w + s;
            if (ih >= 0 && ih < pc.x[2] && iw >= 0 && iw < pc.x[3]) f(plane, oh, ow, ih, iw);
          }
}

}  // namespace

class PoolTest : public BackendTest {};

TEST_P(PoolTest, MaxPoolHandComputed) {
  auto x = make({1, 5, 2, 0,  //
                 3, 4, 8, 7,  //
                 9, 1, 6, 6,  //
                 2, 2, 6, 1},
                {1, 1, 4, 4});
  auto y = make({0, 0, 0, 0}, {1, 1, 2, 2});
  auto argmax = make_int({-7, -7, -7, -7}, {1, 1, 2, 2});
  backend().maxpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 0, 0), y, argmax);
  EXPECT_EQ(host(y), (std::vector<float>{5, 8, 9, 6}));
  // The bottom-right window ties at 6 (positions 10, 11, 14): the first in row-major order wins.
  EXPECT_EQ(argmax.to_int_vector(ctx()), (std::vector<std::int32_t>{1, 6, 8, 10}));

  auto dy = make({1, 2, 3, 4}, {1, 1, 2, 2});
  auto dx = make(std::vector<float>(16, 9.0f), {1, 1, 4, 4});
  backend().maxpool2d_backward(ctx(), dy, argmax, pool(2, 2, 2, 2, 0, 0), dx);
  EXPECT_EQ(host(dx), (std::vector<float>{0, 1, 0, 0, 0, 0, 2, 0, 3, 0, 4, 0, 0, 0, 0, 0}));
}

TEST_P(PoolTest, MaxPoolPaddingNeverWins) {
  // All inputs negative: a zero-padded window would report 0.
  auto x = make({-1, -2, -3, -4}, {1, 1, 2, 2});
  auto y = make({0, 0, 0, 0}, {1, 1, 2, 2});
  auto argmax = make_int({0, 0, 0, 0}, {1, 1, 2, 2});
  backend().maxpool2d_forward(ctx(), x, pool(3, 3, 1, 1, 1, 1), y, argmax);
  EXPECT_EQ(host(y), (std::vector<float>{-1, -1, -1, -1}));
  EXPECT_EQ(argmax.to_int_vector(ctx()), (std::vector<std::int32_t>{0, 0, 0, 0}));
  // -inf inputs still name a real pixel.
  const float inf = std::numeric_limits<float>::infinity();
  auto xi = make({-inf, -inf, -inf, -inf}, {1, 1, 2, 2});
  // Pad 1, stride 2: each window holds one real pixel and three padded ones.
  auto yi = make({0, 0, 0, 0}, {1, 1, 2, 2});
  auto ai = make_int({-1, -1, -1, -1}, {1, 1, 2, 2});
  backend().maxpool2d_forward(ctx(), xi, pool(2, 2, 2, 2, 1, 1), yi, ai);
  EXPECT_EQ(host(yi), (std::vector<float>{-inf, -inf, -inf, -inf}));
  EXPECT_EQ(ai.to_int_vector(ctx()), (std::vector<std::int32_t>{0, 1, 2, 3}));
}

TEST_P(PoolTest, AvgPoolHandComputed) {
  // Padding counts as zeros and the divisor is always kernel_h * kernel_w.
  auto x = make({1, 2, 3, 4}, {1, 1, 2, 2});
  auto y = make(std::vector<float>(9, 7.0f), {1, 1, 3, 3});
  backend().avgpool2d_forward(ctx(), x, pool(2, 2, 1, 1, 1, 1), y);
  EXPECT_EQ(host(y), (std::vector<float>{0.25f, 0.75f, 0.5f, 1, 2.5f, 1.5f, 0.75f, 1.75f, 1}));
  auto dy = make(std::vector<float>(9, 1.0f), {1, 1, 3, 3});
  auto dx = make({9, 9, 9, 9}, {1, 1, 2, 2});
  backend().avgpool2d_backward(ctx(), dy, pool(2, 2, 1, 1, 1, 1), dx);
  // Every pixel lies in four windows, each passing back a quarter.
  EXPECT_EQ(host(dx), (std::vector<float>{1, 1, 1, 1}));
}

TEST_P(PoolTest, MaxPoolMatchesNaive) {
  unsigned seed = 1;
  for (const auto& pc : pool_cases()) {
    const Shape ys = pool2d_output_shape(pc.x, pc.p);
    // Rounded to a coarse grid so that ties occur and the first-maximum rule is exercised.
    auto xv = random_values(pc.x.numel(), seed++);
    for (auto& v : xv) v = std::round(v * 4.0f) / 4.0f;
    const auto dyv = random_values(ys.numel(), seed++);
    auto x = make(xv, pc.x);
    auto y = make(random_values(ys.numel(), seed++), ys);
    auto argmax = make_int(std::vector<std::int32_t>(static_cast<std::size_t>(ys.numel()), -1), ys);
    backend().maxpool2d_forward(ctx(), x, pc.p, y, argmax);
    auto dy = make(dyv, ys);
    auto dx = make(random_values(pc.x.numel(), seed++), pc.x);
    backend().maxpool2d_backward(ctx(), dy, argmax, pc.p, dx);

    const std::int64_t plane_size = pc.x[2] * pc.x[3];
    std::vector<double> ey(static_cast<std::size_t>(ys.numel()), -std::numeric_limits<double>::infinity());
    std::vector<std::int32_t> ea(static_cast<std::size_t>(ys.numel()), -1);
    for_each_window_pixel(pc, ys, [&](auto plane, auto oh, auto ow, auto ih, auto iw) {
      const auto o = static_cast<std::size_t>((plane * ys[2] + oh) * ys[3] + ow);
      const double v = xv[static_cast<std::size_t>(plane * plane_size + ih * pc.x[3] + iw)];
      if (ea[o] < 0 || v > ey[o]) {
        ey[o] = v;
        ea[o] = static_cast<std::int32_t>(ih * pc.x[3] + iw);
      }
    });
    std::vector<double> edx(static_cast<std::size_t>(pc.x.numel()), 0.0);
    for (std::size_t o = 0; o < ea.size(); ++o) {
      const auto plane = static_cast<std::int64_t>(o) / (ys[2] * ys[3]);
      edx[static_cast<std::size_t>(plane * plane_size + ea[o])] += dyv[o];
    }
    expect_close(host(y), ey, "maxpool2d_forward " + pc.name);
    EXPECT_EQ(argmax.to_int_vector(ctx()), ea) << "maxpool2d_forward argmax " << pc.name;
    expect_close(host(dx), edx, "maxpool2d_backward " + pc.name);
  }
}

TEST_P(PoolTest, AvgPoolMatchesNaive) {
  unsigned seed = 100;
  for (const auto& pc : pool_cases()) {
    const Shape ys = pool2d_output_shape(pc.x, pc.p);
    const auto xv = random_values(pc.x.numel(), seed++);
    const auto dyv = random_values(ys.numel(), seed++);
    auto x = make(xv, pc.x);
    auto y = make(random_values(ys.numel(), seed++), ys);
    auto dy = make(dyv, ys);
    auto dx = make(random_values(pc.x.numel(), seed++), pc.x);
    backend().avgpool2d_forward(ctx(), x, pc.p, y);
    backend().avgpool2d_backward(ctx(), dy, pc.p, dx);
    const std::int64_t plane_size = pc.x[2] * pc.x[3];
    const double area = pc.p.kernel_h * pc.p.kernel_w;
    std::vector<double> ey(static_cast<std::size_t>(ys.numel()), 0.0);
    std::vector<double> edx(static_cast<std::size_t>(pc.x.numel()), 0.0);
    for_each_window_pixel(pc, ys, [&](auto plane, auto oh, auto ow, auto ih, auto iw) {
      const auto o = static_cast<std::size_t>((plane * ys[2] + oh) * ys[3] + ow);
      const auto i = static_cast<std::size_t>(plane * plane_size + ih * pc.x[3] + iw);
      ey[o] += xv[i] / area;
      edx[i] += dyv[o] / area;
    });
    expect_close(host(y), ey, "avgpool2d_forward " + pc.name);
    expect_close(host(dx), edx, "avgpool2d_backward " + pc.name);
  }
}

TEST_P(PoolTest, BadShapesThrow) {
  auto x = make(random_values(2 * 3 * 6 * 6, 1), {2, 3, 6, 6});
  auto y = make(random_values(2 * 3 * 4 * 4, 2), {2, 3, 4, 4});
  auto argmax = make_int(std::vector<std::int32_t>(2 * 3 * 4 * 4, 0), {2, 3, 4, 4});
  expect_error([&] { backend().maxpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 0, 0), y, argmax); },
               {"maxpool2d_forward", "[2,3,4,4]", "[2,3,3,3]"});
  expect_error([&] { backend().avgpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 0, 0), y); },
               {"avgpool2d_forward", "[2,3,4,4]", "[2,3,3,3]"});
  auto y3 = make(random_values(2 * 3 * 3 * 3, 2), {2, 3, 3, 3});
  auto a_float = make(random_values(2 * 3 * 3 * 3, 2), {2, 3, 3, 3});
  expect_error([&] { backend().maxpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 0, 0), y3, a_float); },
               {"maxpool2d_forward", "argmax", "i32"});
  expect_error([&] { backend().maxpool2d_backward(ctx(), y, argmax, pool(2, 2, 2, 2, 0, 0), x); },
               {"maxpool2d_backward", "[2,3,4,4]", "[2,3,6,6]"});
  expect_error([&] { backend().avgpool2d_backward(ctx(), y, pool(2, 2, 2, 2, 0, 0), x); },
               {"avgpool2d_backward", "[2,3,4,4]", "[2,3,6,6]"});
  expect_error([&] { backend().avgpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 2, 0), y3); }, {"pool2d", "[2,3,6,6]"});
}

// An argmax that does not come from maxpool2d_forward (outside its plane) is an error on both
// backends: the CPU throws in the call, the GPU kernel sets the device fault word, raised at the next
// read of the result.
TEST_P(PoolTest, BackwardRefusesAnArgmaxOutsideItsPlane) {
  auto dy = make(random_values(1 * 2 * 2 * 2, 3), {1, 2, 2, 2}), dx = zeros({1, 2, 4, 4}, ctx());
  for (std::int32_t bad : {16, -1}) {
    std::vector<std::int32_t> idx(8, 0);
    idx[5] = bad;
    auto argmax = make_int(idx, {1, 2, 2, 2});
    cudl::testing::expect_error_by_next_read(
        [&] { backend().maxpool2d_backward(ctx(), dy, argmax, pool(2, 2, 2, 2, 0, 0), dx); },
        [&] { (void)dx.to_vector(ctx()); }, {"maxpool2d_backward", "argmax", "outside"});
  }
}

// An argmax inside the plane but outside its own window (not from maxpool2d_forward, but in range)
// is followed on the CPU as its general path does: the gradient lands where it points and adds to
// what is there. The 2x2 paths detect it per plane and redo that plane; even and odd widths. (The
// CUDA kernel gathers from the covering windows only, so it drops such an entry: CPU only.)
TEST(MaxPoolBackwardCpu, FollowsAnArgmaxOutsideItsWindow) {
  Context ctx;
  Backend& b = ctx.backend();
  for (const std::int64_t w : {4, 5}) {
    SCOPED_TRACE("width " + std::to_string(w));
    const Shape xs{1, 2, 4, w}, ys{1, 2, 2, 2};
    const std::vector<float> dyv{1, 2, 3, 4, 5, 6, 7, 8};
    Tensor dy = Tensor::from_host(dyv, ys, ctx);
    Tensor dx = Tensor::from_host(std::vector<float>(static_cast<std::size_t>(xs.numel()), 9.0f), xs, ctx);
    // Plane 0: windows' own top-left corners, but output 0 points at output 3's corner. Plane 1:
    // every window's bottom-right input, as a forward could pick.
    const auto c = [&](std::int64_t oh, std::int64_t ow) { return static_cast<std::int32_t>(2 * oh * w + 2 * ow); };
    const auto br = [&](std::int64_t oh, std::int64_t ow) { return static_cast<std::int32_t>(c(oh, ow) + w + 1); };
    const std::vector<std::int32_t> idx{c(1, 1), c(0, 1), c(1, 0), c(1, 1), br(0, 0), br(0, 1), br(1, 0), br(1, 1)};
    Tensor argmax = Tensor::from_host(idx, ys, ctx);
    b.maxpool2d_backward(ctx, dy, argmax, pool(2, 2, 2, 2, 0, 0), dx);
    std::vector<float> want(static_cast<std::size_t>(xs.numel()), 0.0f);
    const auto plane = static_cast<std::size_t>(4 * w);
    want[static_cast<std::size_t>(c(1, 1))] = 1 + 4;
    want[static_cast<std::size_t>(c(0, 1))] = 2;
    want[static_cast<std::size_t>(c(1, 0))] = 3;
    for (int k = 0; k < 4; ++k) want[plane + static_cast<std::size_t>(br(k / 2, k % 2))] = static_cast<float>(5 + k);
    EXPECT_EQ(dx.to_vector(ctx), want);
  }
}

// A window wider than the padded input leaves no output (PyTorch's floor((in + 2p - k) / s) + 1),
// and the op refuses it before reading: truncating -1 / 2 toward zero used to give one window that
// read past a 1-pixel plane.
TEST(OutputSizes, AWindowWiderThanTheInputLeavesNone) {
  EXPECT_EQ(pool_out_size(1, 2, 0, 2), 0);
  EXPECT_EQ(pool_out_size(2, 2, 0, 2), 1);
  EXPECT_EQ(pool_out_size(3, 2, 0, 2), 1);
  EXPECT_EQ(pool_out_size(1, 3, 1, 2), 1);
  EXPECT_EQ(conv_out_size(1, 3, 0, 2, 1), 0);
  EXPECT_EQ(conv_out_size(2, 3, 0, 1, 1), 0);
  EXPECT_EQ(conv_out_size(3, 3, 0, 1, 1), 1);
  EXPECT_EQ(conv_out_size(5, 3, 0, 1, 2), 1);
  expect_error(
      [] {
        (void)pool2d_output_shape(Shape{1, 3, 1, 8}, Pool2dParams{});
      },
      {"pool2d", "does not fit", "[1,3,1,8]"});
  expect_error(
      [] {
        (void)conv2d_output_shape(Shape{1, 3, 2, 8}, Shape{4, 3, 3, 3}, Conv2dParams{});
      },
      {"conv2d", "does not fit", "[1,3,2,8]"});
}

CUDL_INSTANTIATE_BACKENDS(PoolTest);

// ---- gradient checks (CPU, finite differences) ----

TEST(GradientMaxPool, Dx) {
  Context ctx;
  Backend& be = ctx.backend();
  const Shape xs{2, 2, 5, 5};
  const Pool2dParams p = pool(3, 3, 2, 2, 1, 1);
  const Shape ys = pool2d_output_shape(xs, p);
  const auto xv = distinct_values(xs.numel(), 1);
  auto x = Tensor::from_host(xv, xs, ctx);
  const auto weights = random_values(ys.numel(), 2);
  auto y = zeros(ys, ctx);
  auto argmax = Tensor::from_host(std::vector<std::int32_t>(static_cast<std::size_t>(ys.numel()), 0), ys, ctx);
  auto loss = [&] {
    be.maxpool2d_forward(ctx, x, p, y, argmax);
    return cudl::testing::weighted_sum(y.to_vector(ctx), weights);
  };
  loss();
  auto dx = zeros(xs, ctx);
  be.maxpool2d_backward(ctx, Tensor::from_host(weights, ys, ctx), argmax, p, dx);
  cudl::testing::GradCheckOptions opts;
  // Max is not differentiable where two window values (nearly) tie; skip those points.
  opts.skip = [&](std::int64_t i, float v) {
    for (std::size_t j = 0; j < xv.size(); ++j)
      if (static_cast<std::int64_t>(j) != i && std::abs(xv[j] - v) < 3 * opts.step) return true;
    return false;
  };
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "maxpool2d dx", opts);
}

TEST(GradientAvgPool, Dx) {
  Context ctx;
  Backend& be = ctx.backend();
  const Shape xs{2, 2, 5, 6};
  const Pool2dParams p = pool(3, 2, 2, 1, 1, 1);
  const Shape ys = pool2d_output_shape(xs, p);
  auto x = Tensor::from_host(random_values(xs.numel(), 1), xs, ctx);
  const auto weights = random_values(ys.numel(), 2);
  auto y = zeros(ys, ctx);
  auto loss = [&] {
    be.avgpool2d_forward(ctx, x, p, y);
    return cudl::testing::weighted_sum(y.to_vector(ctx), weights);
  };
  auto dx = zeros(xs, ctx);
  be.avgpool2d_backward(ctx, Tensor::from_host(weights, ys, ctx), p, dx);
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "avgpool2d dx");
}
