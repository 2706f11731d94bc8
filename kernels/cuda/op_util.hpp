#pragma once
// Host helpers shared by the CudaBackend's op files (kernels/cuda/*.cpp, and kernels/cudnn,
// kernels/cublas): the context's stream, and the one check that belongs to the CUDA backend alone,
// that a size fits the 32-bit int a kernel's geometry or a cuBLAS/cuDNN call takes. Argument
// validation (placement, dtype, shapes, parameters) is the Backend front's (engine/backend.cpp).
#include <library_types.h>

#include <climits>
#include <cstdint>
#include <string>
#include <string_view>

#include "cudl/engine/context.hpp"
#include "cudl/engine/cuda/cuda_runtime.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/shape.hpp"
#include "cudl/engine/tensor.hpp"
#include "cudl/kernels/cuda/launch.hpp"

namespace cudl::cuda_detail {

inline cudaStream_t stream_of(Context& ctx) { return cuda_resources(ctx).stream; }

// A float tensor's dtype as the kernels' FloatType (the Backend front checked it is a float).
inline FloatType float_type(DType t) {
  switch (t) {
    case DType::f32:
      return FloatType::f32;
    case DType::bf16:
      return FloatType::bf16;
    case DType::f16:
      return FloatType::f16;
    case DType::i32:
      break;
  }
  CUDL_THROW("CUDA kernels: {} is not a float dtype", dtype_name(t));
}

// A float tensor's dtype as cuBLAS's data type (gemm and gram, kernels/cublas).
inline cudaDataType_t cublas_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    case DType::i32:
      break;
  }
  CUDL_THROW("cuBLAS: {} is not a float dtype", dtype_name(t));
}

// `v` as an int, or a cudl::Error naming the op, the quantity and the shape it came from.
inline int to_int(std::string_view op, std::string_view what, std::int64_t v, const Shape& shape) {
  CUDL_CHECK(v >= 0 && v <= INT_MAX, "{}: {}={} of shape {} does not fit a 32-bit int", op, what, v, shape);
  return static_cast<int>(v);
}

// t as [samples, channels, plane] around dim 1 (t has rank >= 2), the plane size checked to fit
// the kernels' 32-bit in-plane offsets.
inline Planes planes_of(std::string_view op, std::string_view name, const Tensor& t) {
  std::int64_t size = 1;
  for (int i = 2; i < t.rank(); ++i) size *= t.dim(i);
  Planes s;
  s.samples = t.dim(0);
  s.channels = t.dim(1);
  s.size = to_int(op, std::string(name) + " plane size", size, t.shape());
  return s;
}

}  // namespace cudl::cuda_detail
