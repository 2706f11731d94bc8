#pragma once
// Argument checks of the CUDA ops (host code, compiled by the C++ compiler): the same checks as
// the CPU backend, plus "is this tensor on the context's device".
#include <climits>
#include <string_view>

#include "engine/check.hpp"
#include "engine/context.hpp"
#include "engine/cuda/cuda_runtime.hpp"

namespace cudl::cuda_detail {

inline void device_tensor(std::string_view op, std::string_view name, const Tensor& t, const Context& ctx,
                          DType dtype = DType::f32) {
  check::defined(op, name, t);
  check::on_device(op, name, t, ctx.device());
  check::dtype_is(op, name, t, dtype);
}

inline cudaStream_t stream_of(Context& ctx) { return cuda_resources(ctx).stream; }

// cuBLAS and cuDNN take int sizes.
inline int to_int(std::string_view op, std::string_view what, std::int64_t v, const Shape& shape) {
  CUDL_CHECK(v >= 0 && v <= INT_MAX, "{}: {}={} of shape {} does not fit a 32-bit int", op, what, v, shape);
  return static_cast<int>(v);
}

}  // namespace cudl::cuda_detail
