#pragma once
// Argument checks shared by both backends and the layers, so that a bad call fails the same way
// on either device with a message that names the op and the shapes.
#include <string_view>

#include "cudl/engine/error.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl::check {

inline void defined(std::string_view op, std::string_view name, const Tensor& t) {
  CUDL_CHECK(t.defined(), "{}: tensor '{}' is undefined", op, name);
}

inline void same_shape(std::string_view op, std::string_view na, const Tensor& a, std::string_view nb,
                       const Tensor& b) {
  CUDL_CHECK(a.shape() == b.shape(), "{}: shape mismatch: {}={} but {}={}", op, na, a.shape(), nb, b.shape());
}

inline void shape_is(std::string_view op, std::string_view name, const Tensor& t, const Shape& expected) {
  CUDL_CHECK(t.shape() == expected, "{}: {} has shape {}, expected {}", op, name, t.shape(), expected);
}

inline void rank_is(std::string_view op, std::string_view name, const Tensor& t, int rank) {
  CUDL_CHECK(t.rank() == rank, "{}: {} must have rank {}, got shape {}", op, name, rank, t.shape());
}

inline void dtype_is(std::string_view op, std::string_view name, const Tensor& t, DType dtype) {
  CUDL_CHECK(t.dtype() == dtype, "{}: {} must be {}, got {} (shape {})", op, name, dtype_name(dtype),
             dtype_name(t.dtype()), t.shape());
}

inline void on_device(std::string_view op, std::string_view name, const Tensor& t, Device device) {
  CUDL_CHECK(t.device() == device, "{}: {} is on {} but the op runs on {} (shape {})", op, name, t.device(), device,
             t.shape());
}

inline void numel_is(std::string_view op, std::string_view name, const Tensor& t, std::int64_t n) {
  CUDL_CHECK(t.numel() == n, "{}: {} must hold {} element(s), has shape {}", op, name, n, t.shape());
}

}  // namespace cudl::check
