// The 16-bit float formats (engine/half.hpp) and half tensors: rounding to nearest even, range
// limits, NaN and inf, subnormals, exhaustive round trips, and cast on the CPU backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/half.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::error_message;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Half, Bf16RoundsToNearestEvenAndKeepsFp32Range) {
  EXPECT_EQ(to_float(to_bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(to_float(to_bf16(1.0f + 0x1p-8f)), 1.0f);
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(to_float(to_bf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  EXPECT_EQ(to_float(to_bf16(1.0f + 0x1p-8f + 0x1p-20f)), 1.0f + 0x1p-7f);  // above halfway rounds up
  EXPECT_NEAR(to_float(to_bf16(3e38f)), 3e38f, 3e38f * 0x1p-8f);            // fp32's range
  EXPECT_EQ(to_float(to_bf16(std::numeric_limits<float>::max())), kInf);    // rounds past the largest
  EXPECT_EQ(to_float(to_bf16(-kInf)), -kInf);
  EXPECT_TRUE(std::isnan(to_float(to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isnan(to_float(to_bf16(-std::nanf("")))));
  EXPECT_EQ(to_bf16(-0.0f).bits, 0x8000u);
}

TEST(Half, F16RoundsToNearestEvenWithItsRangeAndSubnormals) {
  EXPECT_EQ(to_float(to_f16(1.0f)), 1.0f);
  EXPECT_EQ(to_float(to_f16(1.0f + 0x1p-11f)), 1.0f);                // tie to even
  EXPECT_EQ(to_float(to_f16(1.0f + 3 * 0x1p-11f)), 1.0f + 0x1p-9f);  // tie to even (up)
  EXPECT_EQ(to_float(to_f16(65504.0f)), 65504.0f);                   // the largest finite
  EXPECT_EQ(to_float(to_f16(65519.0f)), 65504.0f);                   // below halfway to 65536
  EXPECT_EQ(to_float(to_f16(65520.0f)), kInf);                       // halfway: rounds to even, inf
  EXPECT_EQ(to_float(to_f16(-1e6f)), -kInf);
  EXPECT_EQ(to_float(to_f16(0x1p-24f)), 0x1p-24f);          // the smallest subnormal
  EXPECT_EQ(to_float(to_f16(0x1p-25f)), 0.0f);              // half of it: tie to even, 0
  EXPECT_EQ(to_float(to_f16(0x1.8p-25f)), 0x1p-24f);        // above half: rounds up
  EXPECT_EQ(to_float(to_f16(3 * 0x1p-25f)), 2 * 0x1p-24f);  // 1.5 units: tie to even (2)
  EXPECT_EQ(to_float(to_f16(0x1.ff8p-15f)), 0x1.ff8p-15f);  // the largest subnormal, exact
  EXPECT_EQ(to_float(to_f16(0x1.ffcp-15f)), 0x1p-14f);      // halfway: carries into the smallest normal
  EXPECT_TRUE(std::isnan(to_float(to_f16(std::nanf("")))));
  EXPECT_EQ(to_float(to_f16(kInf)), kInf);
}

// Every bit pattern widens and narrows back to itself (NaNs stay NaN).
TEST(Half, EveryHalfValueRoundTripsThroughFloat) {
  for (std::uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const bf16 b{static_cast<std::uint16_t>(bits)};
    const f16 h{static_cast<std::uint16_t>(bits)};
    const float fb = to_float(b), fh = to_float(h);
    if (std::isnan(fb)) {
      EXPECT_TRUE(std::isnan(to_float(to_bf16(fb))));
    } else {
      ASSERT_EQ(to_bf16(fb).bits, b.bits) << std::hex << bits;
    }
    if (std::isnan(fh)) {
      EXPECT_TRUE(std::isnan(to_float(to_f16(fh))));
    } else {
      ASSERT_EQ(to_f16(fh).bits, h.bits) << std::hex << bits;
    }
  }
}

// Narrowing picks the nearer of the two neighbouring f16 values (checked against widening them).
TEST(Half, F16NarrowingPicksTheNearestNeighbour) {
  std::vector<float> probes;
  for (int i = 0; i <= 200000; ++i) probes.push_back(-70000.0f + 0.7f * static_cast<float>(i));
  for (float m = 1e-9f; m < 1e5f; m *= 1.001f) {
    probes.push_back(m);
    probes.push_back(-m);
  }
  for (const float v : probes) {
    const f16 h = to_f16(v);
    const float got = to_float(h);
    if (std::isinf(got)) {
      ASSERT_GE(std::fabs(v), 65520.0f) << v;
      continue;
    }
    // The neighbours one unit either side in magnitude (zero's lower neighbour is -0: same value).
    const std::uint16_t mag = h.bits & 0x7fffu, sign = h.bits & 0x8000u;
    const float up = to_float(f16{static_cast<std::uint16_t>(sign | (mag + 1))});
    const float down = mag == 0 ? got : to_float(f16{static_cast<std::uint16_t>(sign | (mag - 1))});
    ASSERT_LE(std::fabs(got - v), std::fabs(up - v)) << v;
    ASSERT_LE(std::fabs(got - v), std::fabs(down - v)) << v;
  }
}

TEST(Half, TensorsHoldHalvesAndCastBetweenAllFloatDtypes) {
  Context ctx{Device::cpu()};
  const std::vector<float> values{1.0f, -2.5f, 1.0f + 0x1p-9f, 70000.0f, 1e-30f, 0.0f};
  Tensor b = Tensor::from_host(values, {2, 3}, ctx, DType::bf16);
  EXPECT_EQ(b.dtype(), DType::bf16);
  EXPECT_EQ(b.nbytes(), 12u);
  const std::vector<float> bv = b.to_vector(ctx);
  for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(bv[i], to_float(to_bf16(values[i]))) << i;

  Tensor h = b.cast(ctx, DType::f16);
  EXPECT_EQ(h.dtype(), DType::f16);
  const std::vector<float> hv = h.to_vector(ctx);
  for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(hv[i], to_float(to_f16(bv[i]))) << i;
  EXPECT_EQ(hv[3], kInf);  // 70000 is beyond f16's range
  EXPECT_EQ(hv[4], 0.0f);  // 1e-30 is below its smallest subnormal

  Tensor f = h.cast(ctx, DType::f32);
  EXPECT_EQ(f.to_vector(ctx), hv);
  EXPECT_EQ(f.cast(ctx, DType::f32).raw(), f.raw());  // casting to its own dtype is itself

  Tensor z = Tensor::zeros({3}, ctx, DType::f16);  // an odd number of halves
  EXPECT_EQ(z.to_vector(ctx), (std::vector<float>{0, 0, 0}));
}

TEST(Half, CastRefusesIntegersAndMismatchedSizes) {
  Context ctx{Device::cpu()};
  Tensor labels = Tensor::from_host(std::vector<std::int32_t>{1, 2}, {2}, ctx);
  Tensor out = Tensor::empty({2}, ctx, DType::bf16);
  std::string message = error_message([&] { ctx.backend().cast(ctx, labels, out); });
  EXPECT_TRUE(contains(message, "cast: src must be f32, bf16 or f16, got i32")) << message;
  Tensor three = Tensor::empty({3}, ctx);
  message = error_message([&] { ctx.backend().cast(ctx, three, out); });
  EXPECT_TRUE(contains(message, "cast: src=[3] (3 elements) but dst=[2] (2 elements)")) << message;
}

TEST(Half, PrecisionNamesAndAutocastDtypes) {
  EXPECT_EQ(precision_name(Precision::bf16), "bf16");
  EXPECT_EQ(autocast_dtype(Precision::fp32), DType::f32);
  EXPECT_EQ(autocast_dtype(Precision::tf32), DType::f32);
  EXPECT_EQ(autocast_dtype(Precision::bf16), DType::bf16);
  EXPECT_EQ(autocast_dtype(Precision::fp16), DType::f16);
  Context ctx{Device::cpu()};
  ctx.set_precision(Precision::fp16);
  EXPECT_EQ(ctx.autocast_dtype(), DType::f16);
  ctx.set_precision(Precision::tf32);
  EXPECT_EQ(ctx.math_mode(), MathMode::tf32);
}

}  // namespace
