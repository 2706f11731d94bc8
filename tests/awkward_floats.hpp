#pragma once
// Inputs for the ops that sort (top_k, match_histograms) and their comparison: values with many
// exact ties, NaN, ±inf and -0, and a bitwise view of results that treats every NaN as one.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace cudl::testing {

// Multiples of 0.5 in [-2, 2] (many exact ties) with NaN, ±inf and -0 sprinkled in (one in 20 each);
// exact in bf16 and f16 too.
inline std::vector<float> awkward_values(std::int64_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(-4, 4), special(0, 19);
  std::vector<float> v(static_cast<std::size_t>(count));
  for (float& x : v) {
    x = 0.5f * static_cast<float>(dist(rng));
    switch (special(rng)) {
      case 0:
        x = std::numeric_limits<float>::quiet_NaN();
        break;
      case 1:
        x = std::numeric_limits<float>::infinity();
        break;
      case 2:
        x = -std::numeric_limits<float>::infinity();
        break;
      case 3:
        x = -0.0f;
        break;
      default:
        break;
    }
  }
  return v;
}

// Bits, with every NaN as one pattern (a widened half NaN's payload is not what these ops decide).
inline std::vector<std::uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<std::uint32_t> b;
  for (float x : v) b.push_back(std::isnan(x) ? 0x7FC00000u : std::bit_cast<std::uint32_t>(x));
  return b;
}

}  // namespace cudl::testing
