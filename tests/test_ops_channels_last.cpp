// The CPU backend's channels_last kernels for pooling, bias and Gram matrices against its NCHW
// kernels on the same values (the op run on x and on x.contiguous()): pooling and bias bit for
// bit (NaNs and ties in max windows, padding, windows at the edge, channel counts that are not a
// multiple of a vector, empty batches, f32/bf16/f16), Gram within the rounding of a different
// summation order.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/pooling_nhwc.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

constexpr MemoryFormat kNchw = MemoryFormat::contiguous;
constexpr MemoryFormat kNhwc = MemoryFormat::channels_last;
constexpr DType kFloatTypes[] = {DType::f32, DType::bf16, DType::f16};

// Seeded values in a few levels (so max windows hold ties), with a NaN at every 13th element when
// asked; stored in `dtype` and `format`.
Tensor pool_input(Context& ctx, const Shape& shape, unsigned seed, DType dtype, MemoryFormat format, bool nans) {
  std::vector<float> v = random_values(shape.numel(), seed);
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = std::floor(v[i] * 3.0f) / 2.0f;  // -1.5 .. 1: six levels
    if (nans && i % 13 == 5) v[i] = std::numeric_limits<float>::quiet_NaN();
  }
  return Tensor::from_host(v, shape, ctx, dtype).to_format(ctx, format);
}

Tensor values(Context& ctx, const Shape& shape, unsigned seed, DType dtype, MemoryFormat format) {
  return Tensor::from_host(random_values(shape.numel(), seed), shape, ctx, dtype).to_format(ctx, format);
}

// Same bits element by element (a NaN equals the same NaN), reporting the first few misses.
void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::bit_cast<std::uint32_t>(got[i]) != std::bit_cast<std::uint32_t>(want[i]) && ++bad <= 5)
      ADD_FAILURE() << what << ": [" << i << "] channels_last " << got[i] << ", NCHW " << want[i];
  EXPECT_EQ(bad, 0) << what;
}

std::vector<float> as_floats(const std::vector<std::int32_t>& v) { return {v.begin(), v.end()}; }

struct PoolOutputs {
  std::vector<float> max_y, argmax, max_dx, avg_y, avg_dx;
};

// All four pooling ops with the image tensors in `format`; y and dx must come back in it.
PoolOutputs run_pooling(Context& ctx, const Shape& xs, const Pool2dParams& p, DType dt, MemoryFormat format,
                        bool nans) {
  Backend& be = ctx.backend();
  const Tensor x = pool_input(ctx, xs, 11, dt, format, nans);
  const Shape ys = pool2d_output_shape(xs, p);
  const Tensor dy = values(ctx, ys, 12, dt, format);
  Tensor y = Tensor::empty(ys, ctx, dt, format), arg = Tensor::empty(ys, ctx, DType::i32, format);
  Tensor ay = Tensor::empty(ys, ctx, dt, format);
  Tensor dx = Tensor::empty(xs, ctx, dt, format), adx = Tensor::empty(xs, ctx, dt, format);
  be.maxpool2d_forward(ctx, x, p, y, arg);
  be.maxpool2d_backward(ctx, dy, arg, p, dx);
  be.avgpool2d_forward(ctx, x, p, ay);
  be.avgpool2d_backward(ctx, dy, p, adx);
  EXPECT_EQ(y.format(), format);
  EXPECT_EQ(dx.format(), format);
  return {y.to_vector(ctx), as_floats(arg.to_int_vector(ctx)), dx.to_vector(ctx), ay.to_vector(ctx),
          adx.to_vector(ctx)};
}

Pool2dParams pool(int k, int s, int pad) { return Pool2dParams{k, k, s, s, pad, pad}; }

}  // namespace

TEST(OpsChannelsLast, PoolingGivesTheNchwBits) {
  Context ctx{Device::cpu()};
  // 2x2/2 (even and odd widths), 3x3/2 padded (windows clipped at every edge), 3x3/1 padded
  // (overlapping windows: backward sums several outputs per input), 2x2/1, 1x1, a 3x2 window.
  const Pool2dParams params[] = {pool(2, 2, 0), pool(3, 2, 1), pool(3, 1, 1),
                                 pool(2, 1, 0), pool(1, 1, 0), Pool2dParams{3, 2, 2, 1, 1, 0}};
  // The last shape is big enough for the kernels' OpenMP loops to split (kParallelWork).
  const Shape shapes[] = {{2, 3, 7, 9}, {1, 17, 6, 5}, {3, 1, 5, 4}, {2, 40, 4, 6}, {0, 5, 6, 6}, {4, 35, 24, 24}};
  for (DType dt : kFloatTypes) {
    for (const Pool2dParams& p : params) {
      for (const Shape& xs : shapes) {
        for (bool nans : {false, true}) {
          const std::string what =
              fmt::format("{} x={} kernel {}x{} stride {}x{} pad {}x{}{}", dtype_name(dt), xs, p.kernel_h, p.kernel_w,
                          p.stride_h, p.stride_w, p.pad_h, p.pad_w, nans ? " with NaNs" : "");
          const PoolOutputs a = run_pooling(ctx, xs, p, dt, kNhwc, nans), b = run_pooling(ctx, xs, p, dt, kNchw, nans);
          expect_same_bits(a.max_y, b.max_y, what + ": maxpool y");
          expect_same_bits(a.argmax, b.argmax, what + ": argmax");
          expect_same_bits(a.max_dx, b.max_dx, what + ": maxpool dx");
          expect_same_bits(a.avg_y, b.avg_y, what + ": avgpool y");
          expect_same_bits(a.avg_dx, b.avg_dx, what + ": avgpool dx");
        }
      }
    }
  }
}

// One 2x2 window per channel, hand-checked: the first NaN wins and stays, the first maximum wins a
// tie, -inf everywhere picks the first tap; argmax is h*W+w within the plane, stored channels_last.
TEST(OpsChannelsLast, MaxWindowRulesByHand) {
  Context ctx{Device::cpu()};
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // Logical [1, 4, 2, 2]: channel c holds its window's taps in row-major order.
  const std::vector<float> taps = {1.0f, nan,   3.0f, nan,   // first NaN (tap 1)
                                   2.0f, 5.0f,  5.0f, 1.0f,  // tie: tap 1
                                   -inf, -inf,  -inf, -inf,  // all -inf: tap 0
                                   0.5f, 0.25f, 0.5f, 7.0f};
  for (DType dt : kFloatTypes) {
    const Tensor x = Tensor::from_host(taps, {1, 4, 2, 2}, ctx, dt).to_format(ctx, kNhwc);
    Tensor y = Tensor::empty({1, 4, 1, 1}, ctx, dt, kNhwc), arg = Tensor::empty({1, 4, 1, 1}, ctx, DType::i32, kNhwc);
    cpu::maxpool2d_forward_nhwc(x, Pool2dParams{}, y, arg);  // the kernel itself, not the front's route
    const std::vector<float> got = y.to_vector(ctx);
    EXPECT_TRUE(std::isnan(got[0])) << dtype_name(dt);
    EXPECT_EQ(got[1], 5.0f) << dtype_name(dt);
    EXPECT_EQ(got[2], -inf) << dtype_name(dt);
    EXPECT_EQ(got[3], 7.0f) << dtype_name(dt);
    EXPECT_EQ(arg.to_int_vector(ctx), (std::vector<std::int32_t>{1, 1, 0, 3})) << dtype_name(dt);
  }
}

TEST(OpsChannelsLast, MaxpoolBackwardRefusesArgmaxOutsideThePlane) {
  Context ctx{Device::cpu()};
  const Tensor dy = values(ctx, {1, 3, 2, 2}, 1, DType::f32, kNhwc);
  std::vector<std::int32_t> bad(12, 0);
  bad[7] = 16;  // a 4x4 plane has positions 0..15
  const Tensor arg = Tensor::from_host(std::span<const std::int32_t>(bad), {1, 3, 2, 2}, ctx).to_format(ctx, kNhwc);
  Tensor dx = Tensor::empty({1, 3, 4, 4}, ctx, DType::f32, kNhwc);
  expect_error([&] { ctx.backend().maxpool2d_backward(ctx, dy, arg, Pool2dParams{}, dx); },
               {"maxpool2d_backward", "1 argmax entries", "4x4"});
}

// An argmax that names an input of the plane outside its own window (not what maxpool2d_forward
// writes, but valid for maxpool2d_backward): the 2x2 fast path hands the call to the general one,
// which adds it where it points, as the NCHW kernel does.
TEST(OpsChannelsLast, MaxpoolBackwardTakesArgmaxOutsideItsWindow) {
  Context ctx{Device::cpu()};
  for (DType dt : kFloatTypes) {
    const Shape ys{2, 3, 2, 3}, xs{2, 3, 5, 6};
    std::vector<std::int32_t> arg(static_cast<std::size_t>(ys.numel()));
    for (std::size_t i = 0; i < arg.size(); ++i) arg[i] = static_cast<std::int32_t>(i * 7 % 30);  // repeats too
    std::vector<float> dx[2];
    for (MemoryFormat f : {kNhwc, kNchw}) {
      const Tensor a = Tensor::from_host(std::span<const std::int32_t>(arg), ys, ctx).to_format(ctx, f);
      Tensor d = Tensor::empty(xs, ctx, dt, f);
      ctx.backend().maxpool2d_backward(ctx, values(ctx, ys, 9, dt, f), a, Pool2dParams{}, d);
      dx[f == kNhwc ? 0 : 1] = d.to_vector(ctx);
    }
    expect_same_bits(dx[0], dx[1], std::string(dtype_name(dt)) + ": maxpool dx");
  }
}

TEST(OpsChannelsLast, BiasAddAndGradGiveTheNchwBits) {
  Context ctx{Device::cpu()};
  Backend& be = ctx.backend();
  // Pixels per sample below, at and past sum_row's 32 lanes, with a tail; 1 and 17 channels; 1x1.
  const Shape shapes[] = {{2, 3, 5, 7}, {3, 17, 8, 8}, {2, 1, 9, 9}, {2, 40, 33, 33}, {4, 24, 1, 1}, {0, 5, 3, 3}};
  for (DType dt : kFloatTypes) {
    for (const Shape& s : shapes) {
      for (bool accumulate : {false, true}) {
        const std::string what = fmt::format("{} {} accumulate={}", dtype_name(dt), s, accumulate);
        const Tensor bias = values(ctx, {s[1]}, 2, DType::f32, kNchw);
        std::vector<float> y[2], db[2];
        for (MemoryFormat f : {kNhwc, kNchw}) {
          const int i = f == kNhwc ? 0 : 1;
          Tensor t = values(ctx, s, 3, dt, f);
          be.bias_add(ctx, t, bias);
          Tensor grad = values(ctx, {s[1]}, 4, DType::f32, kNchw);
          be.bias_grad(ctx, values(ctx, s, 5, dt, f), grad, accumulate);
          y[i] = t.to_vector(ctx);
          db[i] = grad.to_vector(ctx);
        }
        expect_same_bits(y[0], y[1], what + ": bias_add");
        expect_same_bits(db[0], db[1], what + ": bias_grad");
      }
    }
  }
}

// Gram matrices: the same GEMMs with the transposition on the other operand. The sums may run in
// another order, so the bound is that of two f32 accumulations of K products each (K u sum|terms|,
// u = 2^-24, for each side) plus, for a half dx, one rounding step of the half format.
TEST(OpsChannelsLast, GramMatchesNchwWithinSummationRounding) {
  Context ctx{Device::cpu()};
  Backend& be = ctx.backend();
  const Shape shapes[] = {{2, 16, 6, 6}, {1, 1, 4, 4}, {3, 8, 1, 1},   {2, 5, 3, 7},
                          {1, 1, 1, 1},  {0, 4, 3, 3}, {2, 64, 20, 20}};
  for (DType dt : kFloatTypes) {
    for (const Shape& s : shapes) {
      const std::string what = fmt::format("{} x={}", dtype_name(dt), s);
      const std::int64_t n = s[0], c = s[1], hw = s[2] * s[3];
      const Tensor dg = values(ctx, {n, c, c}, 8, DType::f32, kNchw);
      std::vector<float> g[2], dx[2];
      for (MemoryFormat f : {kNhwc, kNchw}) {
        const int i = f == kNhwc ? 0 : 1;
        const Tensor x = values(ctx, s, 7, dt, f);
        Tensor gt = Tensor::empty({n, c, c}, ctx), dxt = Tensor::empty(s, ctx, dt, f);
        be.gram_forward(ctx, x, gt);
        be.gram_backward(ctx, x, dg, dxt);
        EXPECT_EQ(dxt.format(), f) << what;
        g[i] = gt.to_vector(ctx);
        dx[i] = dxt.to_vector(ctx);
      }
      // The bounds from the values themselves: x as stored (rounded to dt), S = dG + dGᵀ as the
      // kernel rounds it.
      const std::vector<float> xv = values(ctx, s, 7, dt, kNchw).to_vector(ctx), dgv = dg.to_vector(ctx);
      const double u = std::ldexp(1.0, -24), alpha = 1.0 / static_cast<double>(std::max<std::int64_t>(c * hw, 1));
      const double half_step = dt == DType::bf16 ? std::ldexp(1.0, -7) : dt == DType::f16 ? std::ldexp(1.0, -10) : 0.0;
      ASSERT_EQ(g[0].size(), g[1].size()) << what;
      ASSERT_EQ(dx[0].size(), dx[1].size()) << what;
      for (std::int64_t b = 0; b < n; ++b) {
        const float* f = xv.data() + b * c * hw;
        for (std::int64_t i = 0; i < c; ++i) {
          for (std::int64_t j = 0; j < c; ++j) {
            double mag = 0;
            for (std::int64_t k = 0; k < hw; ++k) mag += std::abs(static_cast<double>(f[i * hw + k]) * f[j * hw + k]);
            const auto at = static_cast<std::size_t>((b * c + i) * c + j);
            EXPECT_LE(std::abs(g[0][at] - g[1][at]), 2.0 * hw * u * mag * alpha + 1e-30) << what << " G[" << at << "]";
          }
          for (std::int64_t k = 0; k < hw; ++k) {
            double mag = 0;
            for (std::int64_t j = 0; j < c; ++j) {
              const double sym = dgv[static_cast<std::size_t>((b * c + i) * c + j)] +
                                 dgv[static_cast<std::size_t>((b * c + j) * c + i)];
              mag += std::abs(sym * f[j * hw + k]);
            }
            const auto at = static_cast<std::size_t>(b * c * hw + i * hw + k);
            const double tol = 2.0 * c * u * mag * alpha * (1.0 + half_step) + half_step * std::abs(dx[1][at]) + 1e-30;
            EXPECT_LE(std::abs(dx[0][at] - dx[1][at]), tol) << what << " dx[" << at << "]";
          }
        }
      }
    }
  }
}
