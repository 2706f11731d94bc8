#pragma once
// Host helpers shared by the CudaBackend's op files (kernels/cuda/*.cpp, and kernels/cudnn,
// kernels/cublas): the context's stream, and the one check that belongs to the CUDA backend alone,
// that a size fits the 32-bit int a kernel's geometry or a cuBLAS/cuDNN call takes. Argument
// validation (placement, dtype, shapes, parameters) is the Backend front's (engine/backend.cpp).
#include <climits>
#include <cstdint>
#include <string_view>

#include "engine/context.hpp"
#include "engine/cuda/cuda_runtime.hpp"
#include "engine/error.hpp"
#include "engine/shape.hpp"

namespace cudl::cuda_detail {

inline cudaStream_t stream_of(Context& ctx) { return cuda_resources(ctx).stream; }

// `v` as an int, or a cudl::Error naming the op, the quantity and the shape it came from.
inline int to_int(std::string_view op, std::string_view what, std::int64_t v, const Shape& shape) {
  CUDL_CHECK(v >= 0 && v <= INT_MAX, "{}: {}={} of shape {} does not fit a 32-bit int", op, what, v, shape);
  return static_cast<int>(v);
}

}  // namespace cudl::cuda_detail
