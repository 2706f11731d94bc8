#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cudl/engine/half.hpp"

namespace cudl {

// f32 is the default and what every op accumulates in; f16 and bf16 (engine/half.hpp) hold the
// activations and weight copies of mixed-precision runs (see Precision in engine/context.hpp);
// i32 holds labels and pooling argmax indices.
enum class DType : std::uint8_t { f32, f16, bf16, i32 };

// The dtypes that hold real numbers (every op that takes a "float" tensor takes these).
constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16; }
constexpr bool is_half(DType t) { return t == DType::f16 || t == DType::bf16; }

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::f16:
      return 2;
    case DType::bf16:
      return 2;
    case DType::i32:
      return 4;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
    case DType::i32:
      return "i32";
  }
  return "?";
}

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<bf16>() {
  return DType::bf16;
}
template <>
constexpr DType dtype_of<f16>() {
  return DType::f16;
}

}  // namespace cudl
