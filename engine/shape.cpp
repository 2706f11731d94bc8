#include "cudl/engine/shape.hpp"

#include "cudl/engine/error.hpp"

namespace cudl {

Shape::Shape(std::initializer_list<std::int64_t> dims) {
  CUDL_CHECK(dims.size() <= kMaxRank, "Shape: rank {} exceeds the maximum of {}", dims.size(), kMaxRank);
  for (auto d : dims) {
    CUDL_CHECK(d >= 0, "Shape: negative dimension {}", d);
    dims_[static_cast<std::size_t>(rank_++)] = d;
  }
}

std::int64_t Shape::numel() const {
  // Dims come from files too (IDX headers, safetensors shapes): a product that overflows would
  // wrap to a small or zero count and size a buffer smaller than the data that follows.
  // A zero dim makes the count zero whatever the others are.
  std::int64_t n = 1;
  bool overflow = false;
  for (int i = 0; i < rank_; ++i) {
    if (dims_[static_cast<std::size_t>(i)] == 0) return 0;
    overflow |= __builtin_mul_overflow(n, dims_[static_cast<std::size_t>(i)], &n);
  }
  CUDL_CHECK(!overflow, "Shape {}: the element count overflows a 64-bit integer", str());
  return n;
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[static_cast<std::size_t>(i)] != other.dims_[static_cast<std::size_t>(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ',';
    s += std::to_string(dims_[static_cast<std::size_t>(i)]);
  }
  return s + ']';
}

}  // namespace cudl
