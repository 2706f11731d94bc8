#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "cudl/engine/dtype.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/memory_format.hpp"
#include "cudl/engine/shape.hpp"
#include "cudl/engine/storage.hpp"

namespace cudl {

class Context;

// A dense row-major tensor (NCHW for images, or NHWC storage for a channels_last one) on one device. Copying a Tensor
// shares its storage (like a PyTorch tensor); `clone` copies the data. Data moves between devices only through an
// explicit `to`, never behind the caller's back.
class Tensor {
 public:
  Tensor() = default;

  // Uninitialised memory from the context's allocator, on the context's stream.
  static Tensor empty(const Shape& shape, Context& ctx, DType dtype = DType::f32,
                      MemoryFormat format = MemoryFormat::contiguous);
  // Uninitialised, with t's shape and format, in `dtype` (t's when not given).
  static Tensor empty_like(const Tensor& t, Context& ctx);
  static Tensor empty_like(const Tensor& t, Context& ctx, DType dtype);
  static Tensor zeros(const Shape& shape, Context& ctx, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, float value, Context& ctx);
  // Copies host values onto the context's device; a half `dtype` rounds them (to nearest even).
  static Tensor from_host(std::span<const float> values, const Shape& shape, Context& ctx, DType dtype = DType::f32);
  static Tensor from_host(std::span<const std::int32_t> values, const Shape& shape, Context& ctx);
  // A tensor over memory owned by someone else (which must outlive it).
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  MemoryFormat format() const { return format_; }
  bool channels_last() const { return format_ == MemoryFormat::channels_last; }
  Device device() const;
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  std::int64_t dim(int i) const { return shape_.dim(i); }
  int rank() const { return shape_.rank(); }

  void* raw() const;
  template <class T>
  T* data() const {
    CUDL_CHECK(dtype_of<T>() == dtype_, "Tensor::data: tensor holds {}, asked for {} (shape {})", dtype_name(dtype_),
               dtype_name(dtype_of<T>()), shape_);
    return static_cast<T*>(raw());
  }

  // Same storage, new shape with the same element count. A channels_last tensor has no other
  // shape over its storage: reshape it after `contiguous`.
  Tensor reshape(const Shape& shape) const;
  // Elements [begin, end) of the first dimension, sharing storage.
  Tensor slice(std::int64_t begin, std::int64_t end) const;
  // `shape` elements starting `offset` elements in, sharing storage (a model carves its
  // parameters, gradients and optimizer state out of one block this way).
  Tensor view(std::int64_t offset, const Shape& shape) const;

  // This tensor's values stored in `format` (a copy through backend().copy; itself when it already
  // is). `contiguous` gives the NCHW one that reshape and host code expect.
  Tensor to_format(Context& ctx, MemoryFormat format) const;
  Tensor contiguous(Context& ctx) const { return to_format(ctx, MemoryFormat::contiguous); }

  // Copies to ctx's device (or within it). The copy is ordered on ctx's stream; a copy to the host
  // waits for it, so the returned tensor can be read at once.
  Tensor to(Context& ctx) const;
  Tensor clone(Context& ctx) const;
  // This tensor's values as `dtype` on the same device (backend().cast); itself when it already is.
  Tensor cast(Context& ctx, DType dtype) const;
  // Copies the values to the host (waits for the device); half values are widened exactly. The
  // host vector is in logical (NCHW) order whatever the format.
  std::vector<float> to_vector(Context& ctx) const;
  std::vector<std::int32_t> to_int_vector(Context& ctx) const;
  // Reads one float (for scalars such as a loss); waits for the device.
  float item(Context& ctx) const;

 private:
  void check_dtype_for_host_copy(DType wanted) const;

  std::shared_ptr<Storage> storage_;
  std::size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::f32;
  MemoryFormat format_ = MemoryFormat::contiguous;
};

// Raw copy of `bytes` between any two devices, ordered on ctx's stream; waits when the
// destination is the host. Used by Tensor::to and the dataset loaders.
void copy_bytes(Context& ctx, void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes);

}  // namespace cudl
