#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cudl {

// f32 is what every op computes in today; f16/bf16 are here so tensors can carry them once the
// reduced-precision paths land, and i32 holds labels and pooling argmax indices.
enum class DType : std::uint8_t { f32, f16, bf16, i32 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
  }
  return "?";
}

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<std::int32_t>() { return DType::i32; }

}  // namespace cudl
