#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator, so element i of any tensor draws from (seed, offset + i) alone. The
// same header compiles for the host and the device, which makes the CPU and CUDA backends draw
// identical bits for the same seed.
#include <cmath>
#include <cstdint>

#include "cudl/engine/host_device.hpp"

namespace cudl::philox {

struct Uint4 {
  std::uint32_t x, y, z, w;
};

CUDL_HOST_DEVICE std::uint32_t mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t* hi) {
  std::uint64_t product = static_cast<std::uint64_t>(a) * b;
  *hi = static_cast<std::uint32_t>(product >> 32);
  return static_cast<std::uint32_t>(product);
}

// The full generator: a 128-bit counter and a 64-bit key, as in Random123's philox4x32 with 10
// rounds (the form its known-answer vectors are stated in). The key is bumped between rounds only.
CUDL_HOST_DEVICE Uint4 philox4x32_10(Uint4 counter, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  Uint4 c = counter;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    std::uint32_t hi0, hi1;
    std::uint32_t lo0 = mulhilo(kMul0, c.x, &hi0);
    std::uint32_t lo1 = mulhilo(kMul1, c.z, &hi1);
    c = Uint4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
  }
  return c;
}

// What the ops use: a 64-bit counter (the element's offset) in the low two counter words and the
// 64-bit seed as the key.
CUDL_HOST_DEVICE Uint4 philox4x32_10(std::uint64_t counter, std::uint64_t seed) {
  Uint4 c{static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), 0u, 0u};
  return philox4x32_10(c, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

// Uniform in [0, 1) from one 32-bit word: its top 24 bits (exactly representable in float).
CUDL_HOST_DEVICE float word_uniform(std::uint32_t word) { return static_cast<float>(word >> 8) * (1.0f / 16777216.0f); }

// Uniform in [0, 1) from the first word of the draw at `counter`: the random fills' stream.
CUDL_HOST_DEVICE float uniform(std::uint64_t counter, std::uint64_t seed) {
  return word_uniform(philox4x32_10(counter, seed).x);
}

// Word j (0..3) of a draw.
CUDL_HOST_DEVICE std::uint32_t word(const Uint4& r, std::uint32_t j) {
  return j == 0 ? r.x : j == 1 ? r.y : j == 2 ? r.z : r.w;
}

// The stream dropout draws from: four consecutive counters share one Philox call, counter c taking
// word c % 4 of the draw at c / 4, so a loop over consecutive elements pays a quarter of the
// rounds uniform() costs (Random123's own use of the four words). Different counters still get
// different words of the same or different draws, never a word twice.
CUDL_HOST_DEVICE float grouped_uniform(std::uint64_t counter, std::uint64_t seed) {
  return word_uniform(word(philox4x32_10(counter >> 2, seed), static_cast<std::uint32_t>(counter & 3u)));
}

// Standard normal by Box-Muller on two words of the same draw. Computed in double so the host's
// libm and CUDA's agree to well within float rounding.
CUDL_HOST_DEVICE float normal(std::uint64_t counter, std::uint64_t seed) {
  Uint4 r = philox4x32_10(counter, seed);
  double u1 = (static_cast<double>(r.x >> 8) + 1.0) * (1.0 / 16777216.0);  // (0, 1]
  double u2 = static_cast<double>(r.y >> 8) * (1.0 / 16777216.0);          // [0, 1)
  return static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

}  // namespace cudl::philox
