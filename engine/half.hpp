#pragma once
// The two 16-bit float formats as host types: bf16 (8-bit exponent, 7-bit mantissa; fp32's range)
// and f16 (IEEE binary16: 5-bit exponent, 10-bit mantissa; largest finite 65504). Both hold the
// raw bits, so a tensor of them has the same layout as CUDA's __nv_bfloat16 and __half and
// oneDNN's bf16/f16: device code reinterprets the pointer, no copy.
//
// Conversions from float round to nearest, ties to even (what cuDNN, cuBLAS, oneDNN and
// PyTorch's .to() do); NaN stays NaN, values beyond the format's range become ±inf.
#include <bit>
#include <cstdint>
#include <type_traits>

namespace cudl {

struct bf16 {
  std::uint16_t bits = 0;
};
struct f16 {
  std::uint16_t bits = 0;
};

constexpr float to_float(bf16 h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h.bits) << 16); }

constexpr bf16 to_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};  // quiet NaN
  const std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>((u + rounding) >> 16)};
}

constexpr float to_float(f16 h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  const std::uint32_t exp = (h.bits >> 10) & 0x1fu;
  const std::uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf, NaN
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  // Zero or subnormal: mant * 2^-24, exact in float.
  const float magnitude = static_cast<float>(mant) * (1.0f / 16777216.0f);
  return sign ? -magnitude : magnitude;
}

constexpr f16 to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return f16{static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu))};  // NaN
  if (abs >= 0x477ff000u) return f16{static_cast<std::uint16_t>(sign | 0x7c00u)};  // rounds past 65504: inf
  if (abs < 0x38800000u) {
    // Below the smallest normal (2^-14): a subnormal, units of 2^-24, rounded to nearest even.
    if (abs < 0x33000000u) return f16{sign};  // below half the smallest subnormal: ±0
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
    const std::uint32_t kept = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    const std::uint32_t rounded = kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
    return f16{static_cast<std::uint16_t>(sign | rounded)};
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits; a carry
  // out of the mantissa correctly bumps the exponent.
  const std::uint32_t rebased = abs - (112u << 23);
  const std::uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return f16{static_cast<std::uint16_t>(sign | (rounded >> 13))};
}

// Generic spellings for templated kernels: load<T> widens to float, store<T> rounds.
template <class T>
constexpr float load(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return to_float(v);
  }
}

template <class T>
constexpr T store(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, bf16>) {
    return to_bf16(v);
  } else {
    return to_f16(v);
  }
}

}  // namespace cudl
