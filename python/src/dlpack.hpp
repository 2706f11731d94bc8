#pragma once
// The DLPack exchange structures (DLPack 0.x ABI, as torch 1.13 and numpy >= 1.22 speak it) and
// the mapping of cudl's devices and dtypes onto them.
#include <cstdint>

#include "cudl/engine/device.hpp"
#include "cudl/engine/dtype.hpp"
#include "python/src/common.hpp"

namespace cudl::python::dlpack {

enum : std::int32_t { kCPU = 1, kCUDA = 2 };                           // DLDeviceType
enum : std::uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBfloat = 4 };  // DLDataTypeCode

struct DLDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // null: compact row-major
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

inline DLDevice device_of(Device d) { return {d.is_cuda() ? kCUDA : kCPU, d.index}; }

inline Device device_from(DLDevice d) {
  if (d.device_type == kCPU) return Device::cpu();
  if (d.device_type == kCUDA) return Device::cuda(d.device_id);
  bad_value("from_dlpack: device type {} is not supported: expected the CPU (1) or CUDA (2)", d.device_type);
}

inline DLDataType dtype_of(DType t) {
  switch (t) {
    case DType::f32:
      return {kFloat, 32, 1};
    case DType::f16:
      return {kFloat, 16, 1};
    case DType::bf16:
      return {kBfloat, 16, 1};
    case DType::i32:
      return {kInt, 32, 1};
  }
  return {kFloat, 32, 1};
}

inline DType dtype_from(DLDataType t) {
  if (t.lanes == 1) {
    if (t.code == kFloat && t.bits == 32) return DType::f32;
    if (t.code == kFloat && t.bits == 16) return DType::f16;
    if (t.code == kBfloat && t.bits == 16) return DType::bf16;
    if (t.code == kInt && t.bits == 32) return DType::i32;
  }
  bad_value(
      "from_dlpack: dtype (code {}, {} bits, {} lanes) is not supported: expected float32, int32, float16 or "
      "bfloat16",
      t.code, t.bits, t.lanes);
}

}  // namespace cudl::python::dlpack
