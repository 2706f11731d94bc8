#pragma once
// One total order of floats, the same bits on the host and the device (CUDL_HOST_DEVICE), for the
// ops that sort: top_k and match_histograms. A float becomes an unsigned number that orders like
// the float: NaN 0 (below everything, -inf included), -0 as +0 (they are equal, so the position
// decides), otherwise the sign bit flipped for positives and every bit for negatives (the usual
// radix-sort order of IEEE floats). A 64-bit key puts that order in its high half and a position
// in its low half, so every key of a row is distinct and a sort's answer does not depend on its
// stability or on how it splits the work: CPU and CUDA agree exactly, ties and NaN included.
#include <cstdint>
#include <cstring>

#include "cudl/engine/host_device.hpp"

namespace cudl::float_order {

CUDL_HOST_DEVICE std::uint32_t bits(float v) {
  if (v != v) return 0;  // NaN (`v != v` rather than isnan: one spelling for host and device)
  if (v == 0.0f) v = 0.0f;
#if defined(__CUDA_ARCH__)
  const std::uint32_t u = __float_as_uint(v);
#else
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
#endif
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

// Ascending keys: a smaller value first, equal values by lower position.
CUDL_HOST_DEVICE std::uint64_t ascending_key(float v, std::uint32_t position) {
  return (static_cast<std::uint64_t>(bits(v)) << 32) | position;
}

// Descending keys (sorted largest first): a larger value first, equal values by lower position.
CUDL_HOST_DEVICE std::uint64_t descending_key(float v, std::uint32_t position) {
  return (static_cast<std::uint64_t>(bits(v)) << 32) | (0xFFFFFFFFu - position);
}

CUDL_HOST_DEVICE std::uint32_t ascending_position(std::uint64_t key) { return static_cast<std::uint32_t>(key); }
CUDL_HOST_DEVICE std::uint32_t descending_position(std::uint64_t key) {
  return 0xFFFFFFFFu - static_cast<std::uint32_t>(key);
}

}  // namespace cudl::float_order
