#pragma once
// What the CPU's NCHW pooling kernels (pooling.cpp) and its channels_last ones (pooling_nhwc.cpp)
// share, so both formats pick the same tap and give the same bits: the windows, the maximum rules
// (and the 2x2 window's four taps under them), the exact store of a picked value, and when a
// kernel goes parallel.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/half.hpp"

namespace cudl::cpu {

// Below this much work (window reads) a parallel region costs more than it saves (thread wake-up
// on a busy machine is milliseconds).
constexpr std::int64_t kPoolParallelWork = 1 << 16;

// The common 2x2, stride-2, unpadded window: both formats have a fast path for it.
inline bool is_2x2(const Pool2dParams& p) {
  return p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2 && p.pad_h == 0 && p.pad_w == 0;
}

// Output (oh, ow)'s window clipped to an h x w input: rows [h0, h1), columns [w0, w1).
struct PoolWindow {
  std::int64_t h0, h1, w0, w1;
  bool empty() const { return h0 >= h1 || w0 >= w1; }
};

inline PoolWindow pool_window(std::int64_t h, std::int64_t w, const Pool2dParams& p, std::int64_t oh, std::int64_t ow) {
  const std::int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  return {std::max<std::int64_t>(h0, 0), std::min<std::int64_t>(h0 + p.kernel_h, h), std::max<std::int64_t>(w0, 0),
          std::min<std::int64_t>(w0 + p.kernel_w, w)};
}

// p[i] widened to f32. A bf16 is read as its 16 bits (the struct's one member): the vectoriser
// finds no vector type for strided loads of the struct itself.
template <class T>
float read(const T* p, std::int64_t i) {
  if constexpr (std::is_same_v<T, bf16>) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(reinterpret_cast<const std::uint16_t*>(p)[i]) << 16);
  } else {
    return load(p[i]);
  }
}

// The maximum rules (those of the general path's scalar scan, maxpool_one in pooling.cpp): taps in
// row-major order, a strictly larger value replaces the best so the first maximum wins ties, and a
// NaN wins and stays - so the result is the first NaN if there is one, else the first maximum.
// Written as two kinds of select, each on one comparison, because GCC 12 vectorises those but not a
// select on the combined condition (v > best || (isnan(v) && !isnan(best))): `bigger` over the taps
// in order, then `nan_first` over them in reverse, so the earliest NaN is applied last.
inline void bigger(float v, std::int32_t at, float& best, std::int32_t& where) {
  const bool take = v > best;
  best = take ? v : best;
  where = take ? at : where;
}
inline void nan_first(float v, std::int32_t at, float& best, std::int32_t& where) {
  const bool take = v != v;
  best = take ? v : best;
  where = take ? at : where;
}

// The best of a 2x2 window's taps, v0 v1 on the top row and v2 v3 below, by the rules above
// unrolled; the top-left tap is at plane position i00 of a plane w wide.
inline void max_2x2_taps(float v0, float v1, float v2, float v3, std::int32_t i00, std::int32_t w, float& best,
                         std::int32_t& where) {
  best = v0;
  where = i00;
  bigger(v1, i00 + 1, best, where);
  bigger(v2, i00 + w, best, where);
  bigger(v3, i00 + w + 1, best, where);
  nan_first(v3, i00 + w + 1, best, where);
  nan_first(v2, i00 + w, best, where);
  nan_first(v1, i00 + 1, best, where);
  nan_first(v0, i00, best, where);
}

// A float that holds a bf16 value exactly, back to its bits as store<bf16> gives them (a NaN
// quieted), with a select where store's NaN branch keeps a loop from vectorising.
inline std::uint16_t exact_bf16_bits(float v) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(v);
  const auto bits = static_cast<std::uint16_t>(u >> 16);
  return (u & 0x7fffffffu) > 0x7f800000u ? static_cast<std::uint16_t>(bits | 0x0040u) : bits;
}

// out[i] = v rounded to T, for a v that came from T (a maximum, or 0 + a gradient): exact.
template <class T>
void put(T* out, std::int64_t i, float v) {
  if constexpr (std::is_same_v<T, bf16>) {
    reinterpret_cast<std::uint16_t*>(out)[i] = exact_bf16_bits(v);
  } else {
    out[i] = store<T>(v);
  }
}

}  // namespace cudl::cpu
