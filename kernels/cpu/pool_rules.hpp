#pragma once
// The maximum rules shared by the CPU's NCHW pooling kernels (pooling.cpp) and its channels_last
// ones (pooling_nhwc.cpp), so both formats pick the same tap and give the same bits, and the
// exact store of a picked value.
#include <bit>
#include <cstdint>
#include <type_traits>

#include "cudl/engine/half.hpp"

namespace cudl::cpu {

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
