// Philox4x32-10 against the known-answer vectors of Random123 (kat_vectors, philox4x32_10), and
// the distributions drawn from it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "cudl/engine/philox.hpp"

using cudl::philox::Uint4;
namespace philox = cudl::philox;

namespace {

void expect_words(const Uint4& got, const Uint4& want) {
  EXPECT_EQ(got.x, want.x) << std::hex << "word 0: 0x" << got.x << " vs 0x" << want.x;
  EXPECT_EQ(got.y, want.y) << std::hex << "word 1: 0x" << got.y << " vs 0x" << want.y;
  EXPECT_EQ(got.z, want.z) << std::hex << "word 2: 0x" << got.z << " vs 0x" << want.z;
  EXPECT_EQ(got.w, want.w) << std::hex << "word 3: 0x" << got.w << " vs 0x" << want.w;
}

TEST(Philox, KnownAnswerZeroCounterZeroKey) {
  expect_words(philox::philox4x32_10(Uint4{0, 0, 0, 0}, 0, 0),
               Uint4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
}

TEST(Philox, KnownAnswerAllOnes) {
  expect_words(
      philox::philox4x32_10(Uint4{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu),
      Uint4{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
}

TEST(Philox, KnownAnswerPiDigits) {
  expect_words(
      philox::philox4x32_10(Uint4{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u),
      Uint4{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST(Philox, CounterSeedFormIsTheLowWordsOfTheFullForm) {
  const std::uint64_t counter = 0x0123456789abcdefull, seed = 0xfedcba9876543210ull;
  expect_words(philox::philox4x32_10(counter, seed),
               philox::philox4x32_10(Uint4{0x89abcdefu, 0x01234567u, 0, 0}, 0x76543210u, 0xfedcba98u));
  expect_words(philox::philox4x32_10(std::uint64_t{0}, std::uint64_t{0}),
               Uint4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
}

TEST(Philox, UniformIsInUnitIntervalWithMeanOneHalf) {
  constexpr int kDraws = 100000;
  const std::uint64_t seed = 42;
  double sum = 0.0, sum_sq = 0.0;
  float lo = 1.0f, hi = 0.0f;
  for (int i = 0; i < kDraws; ++i) {
    float u = philox::uniform(static_cast<std::uint64_t>(i), seed);
    ASSERT_GE(u, 0.0f) << "draw " << i;
    ASSERT_LT(u, 1.0f) << "draw " << i;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
    sum_sq += static_cast<double>(u) * u;
  }
  double mean = sum / kDraws, var = sum_sq / kDraws - mean * mean;
  EXPECT_NEAR(mean, 0.5, 0.01);
  EXPECT_NEAR(var, 1.0 / 12.0, 0.005);
  EXPECT_LT(lo, 1e-3f);
  EXPECT_GT(hi, 1.0f - 1e-3f);
}

TEST(Philox, NormalHasZeroMeanAndUnitStd) {
  constexpr int kDraws = 100000;
  const std::uint64_t seed = 1234;
  double sum = 0.0, sum_sq = 0.0;
  int beyond_two_sigma = 0;
  for (int i = 0; i < kDraws; ++i) {
    float z = philox::normal(static_cast<std::uint64_t>(i), seed);
    ASSERT_TRUE(std::isfinite(z)) << "draw " << i;
    sum += z;
    sum_sq += static_cast<double>(z) * z;
    if (std::fabs(z) > 2.0f) ++beyond_two_sigma;
  }
  double mean = sum / kDraws, stddev = std::sqrt(sum_sq / kDraws - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(stddev, 1.0, 0.02);
  EXPECT_NEAR(static_cast<double>(beyond_two_sigma) / kDraws, 0.0455,
              0.005);  // a Gaussian's tails, not just its moments
}

TEST(Philox, SameCounterAndSeedRepeatDifferentSeedsDiffer) {
  EXPECT_EQ(philox::uniform(7, 99), philox::uniform(7, 99));
  EXPECT_NE(philox::uniform(7, 99), philox::uniform(7, 100));
  EXPECT_NE(philox::uniform(7, 99), philox::uniform(8, 99));
}

}  // namespace

// Dropout's stream: counters 4k .. 4k + 3 are the four words of the draw at k, top 24 bits each.
// Golden values from the zero-key known answer: counters 0..3 at seed 0 are its words.
TEST(Philox, GroupedUniformTakesTheFourWordsOfOneDraw) {
  const Uint4 kat{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
  const std::uint32_t words[4] = {kat.x, kat.y, kat.z, kat.w};
  for (std::uint32_t j = 0; j < 4; ++j) {
    EXPECT_EQ(philox::grouped_uniform(j, 0), static_cast<float>(words[j] >> 8) / 16777216.0f) << "counter " << j;
    EXPECT_EQ(philox::word(kat, j), words[j]);
  }
  EXPECT_EQ(philox::word_uniform(0xffffffffu), 16777215.0f / 16777216.0f);  // below 1
  EXPECT_EQ(philox::uniform(5, 9), philox::word_uniform(philox::philox4x32_10(5, 9).x));
  const std::uint64_t seed = 0xfedcba9876543210ull;
  for (std::uint64_t c : {std::uint64_t{4}, std::uint64_t{1001}, std::uint64_t{0x123456789ull}, ~std::uint64_t{0}}) {
    const Uint4 r = philox::philox4x32_10(c / 4, seed);
    EXPECT_EQ(philox::grouped_uniform(c, seed),
              philox::word_uniform(philox::word(r, static_cast<std::uint32_t>(c % 4))))
        << "counter " << c;
  }
  // Consecutive counters in one group are different words, not one word repeated.
  EXPECT_NE(philox::grouped_uniform(8, seed), philox::grouped_uniform(9, seed));
}
