// Edge cases that pin the CPU's semantics so that the CUDA backend can be held to them: NaN and
// ±inf inputs, empty tensors, and reductions large enough to pass the CUDA kernels' small-size
// paths. Each TEST_P runs on both backends (CUDA skips visibly without a device).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;  // BackendTest, expect_error, random_values

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// Equal values, or NaN on both sides (any payload): what "the same result" means once NaN can occur.
void expect_same_values(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool same = (std::isnan(got[i]) && std::isnan(want[i])) || got[i] == want[i];
    EXPECT_TRUE(same) << what << " [" << i << "]: got " << got[i] << ", expected " << want[i];
  }
}

Pool2dParams pool(int kh, int kw, int sh, int sw, int ph, int pw) { return {kh, kw, sh, sw, ph, pw}; }

}  // namespace

// ================================================================ NaN and ±inf

class NonFiniteOps : public BackendTest {
 protected:
  void check_max_pool_rules(const Shape& xs);
};

// The 2x2 stride-2 unpadded fast path. Rule (kernels/cpu/pooling.cpp): row-major scan, strict '>',
// a NaN wins and stays, so the FIRST NaN of the window wins even when a larger value follows it;
// a window of -inf reports -inf at its first pixel.
TEST_P(NonFiniteOps, MaxPool2x2FirstNaNWinsAndArgmaxPointsAtIt) {
  auto x = make({1, kNaN, kNaN, 3,       //
                 5, 2, kNaN, 9,          //
                 -kInf, -kInf, kInf, 7,  //
                 -kInf, -kInf, 1, kNaN},
                {1, 1, 4, 4});
  auto y = make({0, 0, 0, 0}, {1, 1, 2, 2});
  auto argmax = make_int({-7, -7, -7, -7}, {1, 1, 2, 2});
  backend().maxpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 0, 0), y, argmax);
  // Window 0: NaN at 1 beats the 5 after it. Window 1: NaN first (2), a later NaN and 9 lose.
  // Window 2: all -inf, first pixel (8). Window 3: NaN (15) beats +inf.
  expect_same_values(host(y), {kNaN, kNaN, -kInf, kNaN}, "maxpool2d_forward 2x2");
  EXPECT_EQ(argmax.to_int_vector(ctx()), (std::vector<std::int32_t>{1, 2, 8, 15}));

  // Backward routes each window's gradient to its winner: the NaN (or -inf) position.
  auto dy = make({1, 2, 3, 4}, {1, 1, 2, 2});
  auto dx = make(std::vector<float>(16, 9.0f), {1, 1, 4, 4});
  backend().maxpool2d_backward(ctx(), dy, argmax, pool(2, 2, 2, 2, 0, 0), dx);
  EXPECT_EQ(host(dx), (std::vector<float>{0, 1, 2, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 4}));
}

// The general path (3x3, stride 2, pad 1: overlapping windows, padding counts as -inf and never wins).
TEST_P(NonFiniteOps, MaxPoolGeneralPathNaNWinsInfTiesAndNegInfWindows) {
  // Plane 0 holds NaNs, plane 1 only infinities.
  auto x = make({1,     2,     kNaN, 7,     //
                 -kInf, 3,     9,    kNaN,  //
                 -kInf, kNaN,  4,    5,     //
                 -kInf, 6,     kInf, 8,     //
                 -kInf, -kInf, 1,    kInf,  //
                 -kInf, -kInf, kInf, 2,     //
                 5,     kInf,  0,    0,     //
                 0,     0,     0,    0},
                {1, 2, 4, 4});
  const Pool2dParams p = pool(3, 3, 2, 2, 1, 1);
  auto y = make(std::vector<float>(8, 0.0f), {1, 2, 2, 2});
  auto argmax = make_int(std::vector<std::int32_t>(8, -7), {1, 2, 2, 2});
  backend().maxpool2d_forward(ctx(), x, p, y, argmax);
  // Plane 0 windows (real pixels): {0,1,4,5} -> 3 at 5 (no NaN); {1,2,3,5,6,7} -> first NaN 2, not
  // the 9 or the NaN at 7; {4,5,8,9,12,13} -> NaN at 9 beats 6; {5,6,7,9,10,11,13,14,15} -> first
  // NaN 7 beats the +inf at 14. Plane 1: {0,1,4,5} all -inf -> -inf at 0 (a real pixel, not the
  // padding); {1,2,3,5,6,7} -> first +inf 3; {4,5,8,9,12,13} -> +inf 9; {5,6,7,9,...} -> +inf 6.
  expect_same_values(host(y), {3, kNaN, kNaN, kNaN, -kInf, kInf, kInf, kInf}, "maxpool2d_forward 3x3");
  EXPECT_EQ(argmax.to_int_vector(ctx()), (std::vector<std::int32_t>{5, 2, 9, 7, 0, 3, 9, 6}));

  auto dy = make({1, 2, 3, 4, 5, 6, 7, 8}, {1, 2, 2, 2});
  auto dx = make(std::vector<float>(32, 9.0f), {1, 2, 4, 4});
  backend().maxpool2d_backward(ctx(), dy, argmax, p, dx);
  std::vector<float> want(32, 0.0f);
  want[5] = 1, want[2] = 2, want[9] = 3, want[7] = 4;                      // plane 0
  want[16 + 0] = 5, want[16 + 3] = 6, want[16 + 9] = 7, want[16 + 6] = 8;  // plane 1
  EXPECT_EQ(host(dx), want);
}

// Average pooling sums its window: +inf or -inf spreads, +inf with -inf or any NaN gives NaN.
// Both paths at sizes where the CPU kernels run a row of outputs as vector lanes (many planes, odd
// sizes, ties): NaN and infinities sprinkled over random values, against the scalar rule written
// out here (the first tap, then strictly larger or a NaN over a non-NaN).
TEST_P(NonFiniteOps, MaxPoolRulesHoldAcrossVectorLanes) {
  // An odd and an even width (the CPU's 2x2 path for even widths settles pairs in two passes).
  for (const Shape& xs : {Shape{2, 5, 19, 23}, Shape{2, 5, 19, 24}}) check_max_pool_rules(xs);
}

void NonFiniteOps::check_max_pool_rules(const Shape& xs) {
  SCOPED_TRACE(fmt::format("x={}", xs));
  std::vector<float> xv = random_values(xs.numel(), 41);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> pick(0, 5);
  for (float& v : xv) {
    v = std::round(v * 4.0f) / 4.0f;  // ties
    const int k = pick(rng);
    if (k == 0) v = kNaN;
    if (k == 1) v = -kInf;
    if (k == 2 && pick(rng) == 0) v = kInf;
  }
  for (const Pool2dParams p : {pool(2, 2, 2, 2, 0, 0), pool(3, 3, 2, 2, 1, 1), pool(3, 2, 1, 2, 1, 0)}) {
    const Shape ys = pool2d_output_shape(xs, p);
    auto y = make(std::vector<float>(static_cast<std::size_t>(ys.numel()), 0.0f), ys);
    auto argmax = make_int(std::vector<std::int32_t>(static_cast<std::size_t>(ys.numel()), -7), ys);
    backend().maxpool2d_forward(ctx(), make(xv, xs), p, y, argmax);
    std::vector<float> want_y;
    std::vector<std::int32_t> want_arg;
    for (std::int64_t plane = 0; plane < xs[0] * xs[1]; ++plane)
      for (std::int64_t oh = 0; oh < ys[2]; ++oh)
        for (std::int64_t ow = 0; ow < ys[3]; ++ow) {
          float best = -kInf;
          std::int64_t where = -1;
          for (std::int64_t ih = oh * p.stride_h - p.pad_h; ih < oh * p.stride_h - p.pad_h + p.kernel_h; ++ih)
            for (std::int64_t iw = ow * p.stride_w - p.pad_w; iw < ow * p.stride_w - p.pad_w + p.kernel_w; ++iw) {
              if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
              const float v = xv[static_cast<std::size_t>((plane * xs[2] + ih) * xs[3] + iw)];
              if (where < 0 || v > best || (std::isnan(v) && !std::isnan(best))) best = v, where = ih * xs[3] + iw;
            }
          want_y.push_back(best);
          want_arg.push_back(static_cast<std::int32_t>(where));
        }
    const std::string what =
        fmt::format("maxpool2d_forward {}x{} stride {}x{}", p.kernel_h, p.kernel_w, p.stride_h, p.stride_w);
    expect_same_values(host(y), want_y, what);
    EXPECT_EQ(argmax.to_int_vector(ctx()), want_arg) << what;
  }
}

TEST_P(NonFiniteOps, AvgPoolPropagatesInfAndNaN) {
  auto x = make({1, kInf, 5, -kInf,  //
                 3, 4, 5, 6,         //
                 kInf, -kInf, 3, 1,  //
                 0, 0, kNaN, 2},
                {1, 1, 4, 4});
  auto y = make({0, 0, 0, 0}, {1, 1, 2, 2});
  backend().avgpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 0, 0), y);
  expect_same_values(host(y), {kInf, -kInf, kNaN, kNaN}, "avgpool2d_forward");
  // Padding 1 (zeros, counted in the divisor) around the same input: 3x3 windows of 1, 2 or 4 pixels.
  auto yp = make(std::vector<float>(9, 0.0f), {1, 1, 3, 3});
  backend().avgpool2d_forward(ctx(), x, pool(2, 2, 2, 2, 1, 1), yp);
  expect_same_values(host(yp), {0.25f, kInf, -kInf, kInf, -kInf, 1.75f, 0, kNaN, 0.5f}, "avgpool2d_forward padded");
}

// argmax_rows (kernels/cpu/reductions.cpp): start at column 0, strict '>' over the rest, so the
// first of equal maxima wins and a NaN after column 0 never wins. K = 70 puts columns past 32
// (the CUDA kernel's lane width) into play.
TEST_P(NonFiniteOps, ArgmaxRowsSkipsNaNAndTakesTheFirstInfinity) {
  const std::int64_t k = 70;
  std::vector<float> xs;
  std::vector<std::int32_t> want;
  // A row of distinct values in [-1, 1], edited, whose argmax must be `expected`.
  auto add = [&](std::int32_t expected, auto edit) {
    std::vector<float> r(static_cast<std::size_t>(k));
    for (std::size_t j = 0; j < r.size(); ++j) r[j] = std::sin(0.7f * static_cast<float>(j));
    edit(r);
    xs.insert(xs.end(), r.begin(), r.end());
    want.push_back(expected);
  };
  add(37, [](auto& r) { r[5] = kNaN, r[37] = 9; });  // NaN at 5, maximum at 37 = 5 + 32 (one CUDA lane)
  add(2, [](auto& r) { r[33] = kNaN, r[2] = 9; });   // NaN past column 32
  add(34, [](auto& r) { r[1] = kNaN, r[2] = kNaN, r[40] = kNaN, r[34] = 9; });  // several NaN
  add(3, [](auto& r) { r[3] = kInf, r[35] = kInf; });                           // two +inf: the first
  add(0, [](auto& r) { std::fill(r.begin(), r.end(), -kInf); });                // all -inf: column 0
  add(69, [](auto& r) { r[0] = -kInf, r[69] = 9; });                            // -inf first, maximum last
  add(50, [](auto& r) { r[10] = kNaN, r[50] = kInf; });                         // NaN and +inf: the +inf
  add(0, [](auto& r) { std::fill(r.begin(), r.end(), kNaN); });                 // all NaN: column 0
  // -inf everywhere, NaN last: column 0.
  add(0, [](auto& r) {
    std::fill(r.begin(), r.end(), -kInf);
    r[69] = kNaN;
  });
  const std::int64_t n = static_cast<std::int64_t>(want.size());
  Tensor x = make(xs, {n, k}), idx = Tensor::empty({n}, ctx(), DType::i32);
  backend().argmax_rows(ctx(), x, idx);
  EXPECT_EQ(idx.to_int_vector(ctx()), want);

  // accuracy follows argmax_rows: label every row with its expected argmax except rows 1 and 4.
  std::vector<std::int32_t> labels = want;
  labels[1] = 33;  // the NaN's column is not a hit
  labels[4] = 5;
  Tensor acc = Tensor::empty({1}, ctx());
  backend().accuracy(ctx(), x, make_int(labels, {n}), acc);
  EXPECT_EQ(acc.item(ctx()), static_cast<float>(static_cast<double>(n - 2) / static_cast<double>(n)));
}

// A NaN never wins argmax, not even from column 0: the rows still point at their real maxima.
TEST_P(NonFiniteOps, ArgmaxRowsNaNInTheFirstColumnDoesNotWin) {
  const std::int64_t k = 40;
  std::vector<float> xs(static_cast<std::size_t>(2 * k), 0.5f);
  xs[0] = kNaN, xs[37] = 3;                // row 0: NaN first, maximum at 37
  xs[static_cast<std::size_t>(k)] = kNaN;  // row 1: NaN first, maximum right after it
  xs[static_cast<std::size_t>(k + 1)] = 2;
  Tensor x = make(xs, {2, k}), idx = Tensor::empty({2}, ctx(), DType::i32);
  backend().argmax_rows(ctx(), x, idx);
  EXPECT_EQ(idx.to_int_vector(ctx()), (std::vector<std::int32_t>{37, 1}));
  Tensor acc = Tensor::empty({1}, ctx());
  backend().accuracy(ctx(), x, make_int({37, 1}, {2}), acc);
  EXPECT_EQ(acc.item(ctx()), 1.0f);
}

// max (kernels/cpu/reductions.cpp) starts from -inf and takes `v > m`: NaN is skipped, so all-NaN
// gives -inf; all -inf gives -inf (not the lowest finite float); +inf wins.
TEST_P(NonFiniteOps, MaxSkipsNaNAndKeepsInfinities) {
  Tensor out = Tensor::empty({1}, ctx());
  auto max_of = [&](const std::vector<float>& v) {
    backend().max(ctx(), make(v, {static_cast<std::int64_t>(v.size())}), out);
    return out.item(ctx());
  };
  EXPECT_EQ(max_of({-kInf, -kInf, -kInf}), -kInf);
  EXPECT_EQ(max_of({1, kNaN, 3, -2}), 3.0f);
  EXPECT_EQ(max_of({kNaN, -5, -4}), -4.0f);  // NaN first
  EXPECT_EQ(max_of({kNaN, kNaN}), -kInf);
  EXPECT_EQ(max_of({1, kInf, kNaN, 2}), kInf);
  EXPECT_EQ(max_of({-kInf, kNaN, -kInf}), -kInf);
  // Past the CPU's parallel threshold and the CUDA small-size path: NaN every 1000th element.
  std::vector<float> big = random_values(300007, 5, -1.0f, 1.0f);
  for (std::size_t i = 0; i < big.size(); i += 1000) big[i] = kNaN;
  big[123457] = 1.5f;
  EXPECT_EQ(max_of(big), 1.5f);
}

// clamp compares instead of calling fmin/fmax: a NaN stays NaN, ±inf clamp to the bounds.
TEST_P(NonFiniteOps, ClampKeepsNaNAndClampsInfinities) {
  Tensor x = make({kNaN, kInf, -kInf, 0.5f, -3.0f, 3.0f}, {6});
  backend().clamp(ctx(), x, -1.0f, 2.0f);
  expect_same_values(host(x), {kNaN, 2.0f, -1.0f, 0.5f, -1.0f, 2.0f}, "clamp");
  // Infinite bounds leave infinities alone.
  Tensor z = make({kNaN, kInf, -kInf, 7.0f}, {4});
  backend().clamp(ctx(), z, -kInf, kInf);
  expect_same_values(host(z), {kNaN, kInf, -kInf, 7.0f}, "clamp to ±inf");
}

// Pinned as the CPU does it today: relu(NaN) = 0 (`v > 0 ? v : 0`; PyTorch would give NaN), while
// leaky ReLU, sigmoid and tanh keep NaN.
TEST_P(NonFiniteOps, ActivationsOfNaNAndInf) {
  Tensor x = make({kNaN, kInf, -kInf, -2.0f}, {4}), y = Tensor::empty({4}, ctx());
  backend().activation_forward(ctx(), Activation::relu, 0.0f, x, y);
  expect_same_values(host(y), {0.0f, kInf, 0.0f, 0.0f}, "relu");
  backend().activation_forward(ctx(), Activation::leaky_relu, 0.1f, x, y);
  expect_same_values(host(y), {kNaN, kInf, -kInf, -0.2f}, "leaky_relu");
  backend().activation_forward(ctx(), Activation::sigmoid, 0.0f, x, y);
  const std::vector<float> s = host(y);
  EXPECT_TRUE(std::isnan(s[0]));
  EXPECT_EQ(s[1], 1.0f);
  EXPECT_EQ(s[2], 0.0f);
  backend().activation_forward(ctx(), Activation::tanh, 0.0f, x, y);
  const std::vector<float> t = host(y);
  EXPECT_TRUE(std::isnan(t[0]));
  EXPECT_EQ(t[1], 1.0f);
  EXPECT_EQ(t[2], -1.0f);
}

// ReLU's backward is 0 where the unit is off, even for an infinite or NaN dy (not 0 * dy = NaN).
TEST_P(NonFiniteOps, ReluBackwardIsZeroWhereInputIsNotPositiveEvenForNonFiniteGradients) {
  Tensor x = make({-1.0f, 0.0f, -kInf, 2.0f, kNaN}, {5});
  Tensor dy = make({kInf, kNaN, -kInf, kInf, kInf}, {5}), dx = Tensor::empty({5}, ctx());
  backend().activation_backward(ctx(), Activation::relu, 0.0f, x, x, dy, dx);
  expect_same_values(host(dx), {0.0f, 0.0f, 0.0f, kInf, 0.0f}, "relu backward");
}

// sum and mean accumulate in double: +inf stays +inf, +inf with -inf or a NaN gives NaN.
TEST_P(NonFiniteOps, SumAndMeanPropagateInfAndNaN) {
  Tensor out = Tensor::empty({1}, ctx());
  auto reduce = [&](bool mean, const std::vector<float>& v) {
    Tensor x = make(v, {static_cast<std::int64_t>(v.size())});
    mean ? backend().mean(ctx(), x, out) : backend().sum(ctx(), x, out);
    return out.item(ctx());
  };
  for (bool mean : {false, true}) {
    SCOPED_TRACE(mean ? "mean" : "sum");
    EXPECT_EQ(reduce(mean, {1, kInf, 2}), kInf);
    EXPECT_EQ(reduce(mean, {-kInf, 1}), -kInf);
    EXPECT_TRUE(std::isnan(reduce(mean, {kInf, -kInf, 1})));
    EXPECT_TRUE(std::isnan(reduce(mean, {1, kNaN, 2})));
    // Large enough for the parallel and partial-sum paths; one +inf near the end.
    std::vector<float> big(300007, 0.25f);
    big[300000] = kInf;
    EXPECT_EQ(reduce(mean, big), kInf);
  }
}

CUDL_INSTANTIATE_BACKENDS(NonFiniteOps);

// ================================================================ empty inputs
// What each op does with zero elements, as the CPU does it today: ops without a result value are
// no-ops; sums of nothing are 0; ops whose result is a mean or a pick (mean, max, the mean losses,
// cross-entropy, accuracy) throw an error naming the op. The errors may surface at the next read on
// CUDA, so those checks read the result inside the checked call.

class EmptyInputOps : public BackendTest {
 protected:
  // A one-element result holding 7, so that "wrote 0" and "wrote nothing" differ.
  Tensor seven() { return Tensor::full({1}, 7.0f, ctx()); }
  void expect_throws_naming(const std::function<void()>& call, const Tensor& out,
                            const std::vector<std::string>& fragments) {
    auto read = [&] { (void)host(out); };
    expect_error_by_next_read(call, read, fragments);
  }
};

TEST_P(EmptyInputOps, ElementwiseOpsAreNoOps) {
  for (const Shape& s : {Shape{0}, Shape{0, 3}, Shape{4, 0}}) {
    SCOPED_TRACE(fmt::format("{}", s));
    Tensor a = Tensor::empty(s, ctx()), b = Tensor::empty(s, ctx()), c = Tensor::empty(s, ctx());
    EXPECT_NO_THROW(backend().fill(ctx(), a, 1.0f));
    EXPECT_NO_THROW(backend().copy(ctx(), a, b));
    EXPECT_NO_THROW(backend().axpy(ctx(), 2.0f, a, b));
    EXPECT_NO_THROW(backend().scale(ctx(), a, 3.0f));
    EXPECT_NO_THROW(backend().clamp(ctx(), a, -1.0f, 1.0f));
    EXPECT_NO_THROW(backend().mul(ctx(), a, b, c));
    EXPECT_NO_THROW(backend().dropout_forward(ctx(), a, 0.5f, 1, 0, b, c));
    EXPECT_NO_THROW(backend().fill_uniform(ctx(), a, 0.0f, 1.0f, 1, 0));
    EXPECT_NO_THROW(backend().fill_normal(ctx(), a, 0.0f, 1.0f, 1, 0));
    Tensor alpha = seven();
    EXPECT_NO_THROW(backend().axpy_scalar(ctx(), -1.0f, alpha, a, b));
    EXPECT_EQ(host(alpha), std::vector<float>{7.0f});
    EXPECT_TRUE(host(b).empty());
  }
  // Per-channel ops with no samples (and with no pixels).
  for (const Shape& s : {Shape{0, 3}, Shape{0, 3, 4, 4}, Shape{2, 3, 0, 0}}) {
    SCOPED_TRACE(fmt::format("{}", s));
    Tensor x = Tensor::empty(s, ctx()), y = Tensor::empty(s, ctx());
    Tensor scale = make({1, 2, 3}, {3}), shift = make({4, 5, 6}, {3});
    EXPECT_NO_THROW(backend().channel_affine(ctx(), x, scale, shift, y));
    EXPECT_NO_THROW(backend().channel_affine_backward(ctx(), x, scale, y));
    EXPECT_EQ(host(scale), (std::vector<float>{1, 2, 3}));
  }
}

TEST_P(EmptyInputOps, ActivationsAreNoOps) {
  Tensor x = Tensor::empty({0, 5}, ctx()), y = Tensor::empty({0, 5}, ctx());
  Tensor dy = Tensor::empty({0, 5}, ctx()), dx = Tensor::empty({0, 5}, ctx());
  for (Activation a : {Activation::relu, Activation::leaky_relu, Activation::sigmoid, Activation::tanh}) {
    SCOPED_TRACE(std::string(activation_name(a)));
    EXPECT_NO_THROW(backend().activation_forward(ctx(), a, 0.1f, x, y));
    EXPECT_NO_THROW(backend().activation_backward(ctx(), a, 0.1f, x, y, dy, dx));
  }
}

TEST_P(EmptyInputOps, SumAbsSumAndDotOfNothingAreZero) {
  for (const Shape& s : {Shape{0}, Shape{3, 0}}) {
    SCOPED_TRACE(fmt::format("{}", s));
    Tensor x = Tensor::empty(s, ctx());
    Tensor out = seven();
    backend().sum(ctx(), x, out);
    EXPECT_EQ(out.item(ctx()), 0.0f);
    out = seven();
    backend().abs_sum(ctx(), x, out);
    EXPECT_EQ(out.item(ctx()), 0.0f);
    out = seven();
    backend().dot(ctx(), x, x, out);
    EXPECT_EQ(out.item(ctx()), 0.0f);
  }
}

TEST_P(EmptyInputOps, MeanAndMaxThrowNamingTheOp) {
  Tensor x = Tensor::empty({2, 0}, ctx()), out = seven();
  expect_throws_naming([&] { backend().mean(ctx(), x, out); }, out, {"mean", "empty"});
  expect_throws_naming([&] { backend().max(ctx(), x, out); }, out, {"max", "empty"});
}

TEST_P(EmptyInputOps, MseAndL1ThrowNamingTheOp) {
  Tensor a = Tensor::empty({0, 3}, ctx()), b = Tensor::empty({0, 3}, ctx()), da = Tensor::empty({0, 3}, ctx());
  Tensor loss = seven();
  expect_throws_naming([&] { backend().mse_loss_forward(ctx(), a, b, loss); }, loss, {"mse_loss", "empty"});
  expect_throws_naming([&] { backend().l1_loss_forward(ctx(), a, b, loss); }, loss, {"l1_loss", "empty"});
  // The backward passes refuse the same inputs (their scale would be dloss / 0).
  expect_throws_naming([&] { backend().mse_loss_backward(ctx(), a, b, 1.0f, da); }, da, {"mse_loss", "empty"});
  expect_throws_naming([&] { backend().l1_loss_backward(ctx(), a, b, 1.0f, da); }, da, {"l1_loss", "empty"});
}

// Total variation is a sum, not a mean: no differences add up to 0.
TEST_P(EmptyInputOps, TotalVariationOfNothingIsZero) {
  for (const Shape& s : {Shape{0, 3, 4, 4}, Shape{2, 3, 0, 0}, Shape{2, 3, 1, 1}}) {
    SCOPED_TRACE(fmt::format("{}", s));
    Tensor x = Tensor::full(s, 1.5f, ctx()), loss = seven();
    backend().tv_loss_forward(ctx(), x, loss);
    EXPECT_EQ(loss.item(ctx()), 0.0f);
    Tensor dx = Tensor::full(s, 7.0f, ctx());
    backend().tv_loss_backward(ctx(), x, 1.0f, dx, false);
    EXPECT_EQ(host(dx), std::vector<float>(static_cast<std::size_t>(s.numel()), 0.0f));
  }
}

TEST_P(EmptyInputOps, SoftmaxOfNoRowsOrNoColumnsIsANoOp) {
  for (const Shape& s : {Shape{0, 5}, Shape{3, 0}}) {
    SCOPED_TRACE(fmt::format("{}", s));
    Tensor x = Tensor::empty(s, ctx()), y = Tensor::empty(s, ctx()), dx = Tensor::empty(s, ctx());
    EXPECT_NO_THROW(backend().softmax_forward(ctx(), x, y));
    EXPECT_NO_THROW(backend().softmax_backward(ctx(), y, x, dx));
    EXPECT_NO_THROW(backend().log_softmax_forward(ctx(), x, y));
    EXPECT_NO_THROW(backend().log_softmax_backward(ctx(), y, x, dx));
  }
}

TEST_P(EmptyInputOps, CrossEntropyOfEmptyLogitsThrowsNamingTheOp) {
  Tensor loss = seven();
  {
    Tensor logits = Tensor::empty({0, 4}, ctx()), probs = Tensor::empty({0, 4}, ctx());
    Tensor labels = Tensor::empty({0}, ctx(), DType::i32);
    expect_throws_naming([&] { backend().softmax_cross_entropy_forward(ctx(), logits, labels, probs, loss); }, loss,
                         {"softmax_cross_entropy", "empty"});
    // Backward over no rows has nothing to write (the CPU returns before dividing by N).
    EXPECT_NO_THROW(backend().softmax_cross_entropy_backward(ctx(), probs, labels, 1.0f, probs));
  }
  {
    Tensor logits = Tensor::empty({2, 0}, ctx()), probs = Tensor::empty({2, 0}, ctx());
    Tensor labels = make_int({0, 0}, {2});
    expect_throws_naming([&] { backend().softmax_cross_entropy_forward(ctx(), logits, labels, probs, loss); }, loss,
                         {"softmax_cross_entropy", "empty"});
  }
}

TEST_P(EmptyInputOps, ArgmaxOfNoRowsIsANoOpAndOfNoColumnsThrows) {
  Tensor none = Tensor::empty({0}, ctx(), DType::i32);
  EXPECT_NO_THROW(backend().argmax_rows(ctx(), Tensor::empty({0, 5}, ctx()), none));
  Tensor no_columns = Tensor::empty({3, 0}, ctx()), idx = Tensor::empty({3}, ctx(), DType::i32);
  auto call = [&] { backend().argmax_rows(ctx(), no_columns, idx); };
  expect_error_by_next_read(call, [&] { (void)idx.to_int_vector(ctx()); }, {"argmax_rows", "no columns"});
}

TEST_P(EmptyInputOps, AccuracyOfEmptyLogitsThrowsNamingTheOp) {
  Tensor acc = seven();
  Tensor no_rows = Tensor::empty({0, 5}, ctx()), no_labels = Tensor::empty({0}, ctx(), DType::i32);
  expect_throws_naming([&] { backend().accuracy(ctx(), no_rows, no_labels, acc); }, acc, {"accuracy", "empty"});
  Tensor no_columns = Tensor::empty({3, 0}, ctx()), labels = make_int({0, 0, 0}, {3});
  expect_throws_naming([&] { backend().accuracy(ctx(), no_columns, labels, acc); }, acc, {"accuracy", "empty"});
}

TEST_P(EmptyInputOps, PoolingWithNoSamplesIsANoOp) {
  for (const Pool2dParams& p : {pool(2, 2, 2, 2, 0, 0), pool(3, 3, 2, 2, 1, 1)}) {
    const Shape xs{0, 3, 8, 8}, ys = pool2d_output_shape(xs, p);
    Tensor x = Tensor::empty(xs, ctx()), dx = Tensor::empty(xs, ctx());
    Tensor y = Tensor::empty(ys, ctx()), dy = Tensor::empty(ys, ctx()), arg = Tensor::empty(ys, ctx(), DType::i32);
    EXPECT_NO_THROW(backend().maxpool2d_forward(ctx(), x, p, y, arg));
    EXPECT_NO_THROW(backend().maxpool2d_backward(ctx(), dy, arg, p, dx));
    EXPECT_NO_THROW(backend().avgpool2d_forward(ctx(), x, p, y));
    EXPECT_NO_THROW(backend().avgpool2d_backward(ctx(), dy, p, dx));
  }
}

// No samples: forward and backward-data are no-ops; the filter gradient is a sum over nothing,
// so it is 0 when overwritten and unchanged when accumulated.
TEST_P(EmptyInputOps, ConvWithNoSamples) {
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  const Shape xs{0, 3, 8, 8}, ws{4, 3, 3, 3}, ys = conv2d_output_shape(xs, ws, p);
  Tensor x = Tensor::empty(xs, ctx()), dx = Tensor::empty(xs, ctx()), w = Tensor::full(ws, 0.5f, ctx());
  Tensor y = Tensor::empty(ys, ctx()), dy = Tensor::empty(ys, ctx());
  EXPECT_NO_THROW(backend().conv2d_forward(ctx(), x, w, p, y));
  EXPECT_NO_THROW(backend().conv2d_backward_data(ctx(), dy, w, p, dx));
  Tensor dw = Tensor::full(ws, 7.0f, ctx());
  backend().conv2d_backward_filter(ctx(), x, dy, p, dw, true);
  EXPECT_EQ(host(dw), std::vector<float>(static_cast<std::size_t>(ws.numel()), 7.0f));
  backend().conv2d_backward_filter(ctx(), x, dy, p, dw, false);
  EXPECT_EQ(host(dw), std::vector<float>(static_cast<std::size_t>(ws.numel()), 0.0f));
}

// m or n = 0: nothing to write. k = 0: the product is empty, so C = beta * C (BLAS semantics; beta
// = 0 writes zeros even over NaN).
TEST_P(EmptyInputOps, GemmWithAZeroDimension) {
  Tensor c0 = Tensor::empty({0, 2}, ctx());
  EXPECT_NO_THROW(backend().gemm(ctx(), false, false, 1.0f, Tensor::empty({0, 3}, ctx()),
                                 Tensor::full({3, 2}, 1, ctx()), 0.0f, c0));
  Tensor c1 = Tensor::empty({2, 0}, ctx());
  EXPECT_NO_THROW(backend().gemm(ctx(), false, false, 1.0f, Tensor::full({2, 3}, 1, ctx()),
                                 Tensor::empty({3, 0}, ctx()), 0.0f, c1));
  for (bool trans : {false, true}) {
    SCOPED_TRACE(trans ? "transposed" : "plain");
    Tensor a = Tensor::empty(trans ? Shape{0, 2} : Shape{2, 0}, ctx());
    Tensor b = Tensor::empty(trans ? Shape{3, 0} : Shape{0, 3}, ctx());
    Tensor c = make({1, 2, 3, 4, 5, 6}, {2, 3});
    backend().gemm(ctx(), trans, trans, 2.0f, a, b, 0.5f, c);
    EXPECT_EQ(host(c), (std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3}));
    Tensor z = make({kNaN, 1, 2, 3, kInf, 5}, {2, 3});
    backend().gemm(ctx(), trans, trans, 2.0f, a, b, 0.0f, z);
    EXPECT_EQ(host(z), std::vector<float>(6, 0.0f));
  }
}

TEST_P(EmptyInputOps, BiasAddAndGradWithNoSamples) {
  for (const Shape& s : {Shape{0, 3}, Shape{0, 3, 4, 4}, Shape{2, 3, 0, 0}}) {
    SCOPED_TRACE(fmt::format("{}", s));
    Tensor y = Tensor::empty(s, ctx()), bias = make({1, 2, 3}, {3});
    EXPECT_NO_THROW(backend().bias_add(ctx(), y, bias));
    Tensor db = Tensor::full({3}, 7.0f, ctx());
    backend().bias_grad(ctx(), y, db, true);
    EXPECT_EQ(host(db), std::vector<float>(3, 7.0f));
    backend().bias_grad(ctx(), y, db, false);
    EXPECT_EQ(host(db), std::vector<float>(3, 0.0f));
  }
}

TEST_P(EmptyInputOps, OptimizerStepsOnNoParametersAreNoOps) {
  Tensor w = Tensor::empty({0}, ctx()), g = Tensor::empty({0}, ctx());
  Tensor m = Tensor::empty({0}, ctx()), v = Tensor::empty({0}, ctx());
  SgdParams sgd;
  sgd.momentum = 0.9f;
  sgd.nesterov = true;
  EXPECT_NO_THROW(backend().sgd_step(ctx(), sgd, w, g, m));
  AdamParams adam;
  adam.weight_decay = 0.1f;
  adam.decoupled_weight_decay = true;
  EXPECT_NO_THROW(backend().adam_step(ctx(), adam, w, g, m, v));
}

// No samples: nothing to write. No pixels (H*W = 0): each Gram matrix is a sum over nothing, 0.
TEST_P(EmptyInputOps, GramWithNoSamplesOrNoPixels) {
  Tensor x = Tensor::empty({0, 3, 4, 4}, ctx()), g = Tensor::empty({0, 3, 3}, ctx());
  EXPECT_NO_THROW(backend().gram_forward(ctx(), x, g));
  Tensor dx = Tensor::empty({0, 3, 4, 4}, ctx());
  EXPECT_NO_THROW(backend().gram_backward(ctx(), x, g, dx));

  Tensor flat = Tensor::empty({2, 3, 0, 0}, ctx()), g2 = Tensor::full({2, 3, 3}, 7.0f, ctx());
  backend().gram_forward(ctx(), flat, g2);
  EXPECT_EQ(host(g2), std::vector<float>(18, 0.0f));
  Tensor dflat = Tensor::empty({2, 3, 0, 0}, ctx());
  EXPECT_NO_THROW(backend().gram_backward(ctx(), flat, g2, dflat));
}

CUDL_INSTANTIATE_BACKENDS(EmptyInputOps);

// ================================================================ large reductions
// Past the CUDA kernels' small-size paths (more than 262,144 elements, where the two-pass
// reductions' partials hit their cap of 1024 blocks) against references summed in double here. The
// CPU accumulates in double (CUDA is to as well), so the float result is the exact sum rounded
// once: a relative error of a few 1e-8. The tolerance, 1e-6, is tight enough that a float
// accumulator misses it on the drifting data below.

namespace {

constexpr std::int64_t kLarge = 300007;
constexpr double kTightRtol = 1e-6;

double sum_double(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s;
}

// A pairwise (tree) sum in float, the most accurate way a float accumulator is used on a GPU: the
// data must defeat it too, or the test could not tell float accumulation from double.
float pairwise_float_sum(const float* p, std::size_t n) {
  if (n <= 8) {
    float s = 0;
    for (std::size_t i = 0; i < n; ++i) s += p[i];
    return s;
  }
  return pairwise_float_sum(p, n / 2) + pairwise_float_sum(p + n / 2, n - n / 2);
}

void expect_tight(float got, double want, const std::string& what) {
  EXPECT_LE(std::abs(static_cast<double>(got) - want), kTightRtol * std::abs(want))
      << what << ": got " << got << ", expected " << want;
}

}  // namespace

class LargeReductionOps : public BackendTest {};

TEST_P(LargeReductionOps, SumMeanAndDotMatchDoubleReference) {
  const std::vector<float> xs = drifting_values(kLarge, 1);
  const double want = sum_double(xs);
  ASSERT_GT(std::abs(pairwise_float_sum(xs.data(), xs.size()) - want), 10 * kTightRtol * want)
      << "the data must make float accumulation miss";
  Tensor x = make(xs, {kLarge}), out = Tensor::empty({1}, ctx());
  backend().sum(ctx(), x, out);
  expect_tight(out.item(ctx()), want, "sum");
  backend().mean(ctx(), x, out);
  expect_tight(out.item(ctx()), want / static_cast<double>(kLarge), "mean");

  // b is 1 under every ±2^24, so the products cancel as well; all products are exact in double.
  std::vector<float> bs(xs.size());
  double dot = 0;
  for (std::size_t i = 0; i < bs.size(); ++i) {
    bs[i] = 1.0f + 0.25f * static_cast<float>(i % 4);
    dot += static_cast<double>(xs[i]) * bs[i];
  }
  backend().dot(ctx(), x, make(bs, {kLarge}), out);
  expect_tight(out.item(ctx()), dot, "dot");
}

TEST_P(LargeReductionOps, AbsSumMseAndL1MatchDoubleReference) {
  const std::vector<float> as = random_values(kLarge, 2, -1.0f, 3.0f), bs = random_values(kLarge, 3);
  double abs_sum = 0, mse = 0, l1 = 0;
  for (std::size_t i = 0; i < as.size(); ++i) {
    const double d = static_cast<double>(as[i]) - bs[i];
    abs_sum += std::abs(static_cast<double>(as[i]));
    mse += d * d;
    l1 += std::abs(d);
  }
  Tensor a = make(as, {kLarge}), b = make(bs, {kLarge}), out = Tensor::empty({1}, ctx());
  backend().abs_sum(ctx(), a, out);
  expect_tight(out.item(ctx()), abs_sum, "abs_sum");
  backend().mse_loss_forward(ctx(), a, b, out);
  expect_tight(out.item(ctx()), mse / static_cast<double>(kLarge), "mse_loss_forward");
  backend().l1_loss_forward(ctx(), a, b, out);
  expect_tight(out.item(ctx()), l1 / static_cast<double>(kLarge), "l1_loss_forward");
}

TEST_P(LargeReductionOps, TotalVariationMatchesDoubleReference) {
  const std::int64_t planes = 3, h = 317, w = 317;  // 301,467 elements
  const std::vector<float> xs = random_values(planes * h * w, 4);
  double want = 0;
  for (std::int64_t p = 0; p < planes; ++p)
    for (std::int64_t i = 0; i < h; ++i)
      for (std::int64_t j = 0; j < w; ++j) {
        auto at = [&](std::int64_t a, std::int64_t b) {
          return static_cast<double>(xs[static_cast<std::size_t>((p * h + a) * w + b)]);
        };
        if (i + 1 < h) want += (at(i + 1, j) - at(i, j)) * (at(i + 1, j) - at(i, j));
        if (j + 1 < w) want += (at(i, j + 1) - at(i, j)) * (at(i, j + 1) - at(i, j));
      }
  Tensor x = make(xs, {1, planes, h, w}), out = Tensor::empty({1}, ctx());
  backend().tv_loss_forward(ctx(), x, out);
  expect_tight(out.item(ctx()), want, "tv_loss_forward");
}

// 150,094 values per channel (many pass-1 chunks per channel on CUDA), drifting, summed per channel
// over N and H*W.
TEST_P(LargeReductionOps, BiasGradMatchesDoubleReferencePerChannel) {
  const std::int64_t n = 7, c = 2, inner = 151 * 142, per_channel = n * inner;  // 150,094 per channel
  std::vector<float> dys(static_cast<std::size_t>(n * c * inner));
  std::vector<double> want(static_cast<std::size_t>(c));
  for (std::int64_t ch = 0; ch < c; ++ch) {
    const std::vector<float> v = drifting_values(per_channel, 10 + static_cast<unsigned>(ch));
    want[static_cast<std::size_t>(ch)] = sum_double(v);
    for (std::int64_t s = 0; s < n; ++s)
      std::copy(v.begin() + s * inner, v.begin() + (s + 1) * inner, dys.begin() + (s * c + ch) * inner);
  }
  Tensor dy = make(dys, {n, c, 151, 142}), db = Tensor::full({c}, 0.5f, ctx());
  backend().bias_grad(ctx(), dy, db, false);
  std::vector<float> got = host(db);
  for (std::int64_t ch = 0; ch < c; ++ch)
    expect_tight(got[static_cast<std::size_t>(ch)], want[static_cast<std::size_t>(ch)],
                 fmt::format("bias_grad c={}", ch));
  backend().bias_grad(ctx(), dy, db, true);
  got = host(db);
  for (std::int64_t ch = 0; ch < c; ++ch)
    expect_tight(got[static_cast<std::size_t>(ch)], 2 * want[static_cast<std::size_t>(ch)],
                 fmt::format("bias_grad accumulate c={}", ch));
}

// 2^24 + 4097 ones: the exact total 16,777,216 + 4,097 is odd, so not a float; summed in double and
// rounded once it is 16,781,312 (ties to even). A float accumulator stalls at 2^24 or rounds its
// partial sums on the way.
TEST_P(LargeReductionOps, SumOfOnesPast2To24IsTheExactTotalRoundedOnce) {
  const std::int64_t n = (std::int64_t{1} << 24) + 4097;
  Tensor x = Tensor::empty({n}, ctx()), out = Tensor::empty({1}, ctx());
  backend().fill(ctx(), x, 1.0f);
  backend().sum(ctx(), x, out);
  EXPECT_EQ(out.item(ctx()), static_cast<float>(static_cast<double>(n)));
  EXPECT_EQ(out.item(ctx()), 16781312.0f);
  backend().mean(ctx(), x, out);
  EXPECT_EQ(out.item(ctx()), 1.0f);
}

CUDL_INSTANTIATE_BACKENDS(LargeReductionOps);
