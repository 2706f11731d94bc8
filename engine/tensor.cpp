#include "cudl/engine/tensor.hpp"

#include <cstring>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

std::string_view memory_format_name(MemoryFormat f) {
  return f == MemoryFormat::channels_last ? "channels_last" : "contiguous";
}

Tensor Tensor::empty(const Shape& shape, Context& ctx, DType dtype, MemoryFormat format) {
  CUDL_CHECK(format == MemoryFormat::contiguous || shape.rank() == 4,
             "Tensor::empty: channels_last needs a 4-D [N, C, H, W] shape, got {}", shape);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.format_ = format;
  t.storage_ = std::make_shared<Storage>(ctx.allocator_ptr(), t.nbytes(), ctx.stream_id());
  return t;
}

Tensor Tensor::empty_like(const Tensor& t, Context& ctx) { return empty(t.shape_, ctx, t.dtype_, t.format_); }

Tensor Tensor::empty_like(const Tensor& t, Context& ctx, DType dtype) { return empty(t.shape_, ctx, dtype, t.format_); }

Tensor Tensor::zeros(const Shape& shape, Context& ctx, DType dtype) {
  Tensor t = empty(shape, ctx, dtype);
  if (is_floating(dtype)) {
    ctx.backend().fill(ctx, t, 0.0f);
    return t;
  }
  // i32: all-zero bits are 0 there too, so a float fill of a same-size view does it.
  Tensor as_float = t;
  as_float.dtype_ = DType::f32;
  ctx.backend().fill(ctx, as_float, 0.0f);
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, Context& ctx) {
  Tensor t = empty(shape, ctx);
  ctx.backend().fill(ctx, t, value);
  return t;
}

namespace {
template <class Half>
std::vector<Half> rounded(std::span<const float> values) {
  std::vector<Half> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = store<Half>(values[i]);
  return out;
}
}  // namespace

Tensor Tensor::from_host(std::span<const float> values, const Shape& shape, Context& ctx, DType dtype) {
  CUDL_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(),
             "Tensor::from_host: {} values for shape {} ({} elements)", values.size(), shape, shape.numel());
  CUDL_CHECK(is_floating(dtype), "Tensor::from_host: float values cannot fill a {} tensor (shape {})",
             dtype_name(dtype), shape);
  Tensor t = empty(shape, ctx, dtype);
  if (dtype == DType::bf16) {
    copy_bytes(ctx, t.raw(), t.device(), rounded<bf16>(values).data(), Device::cpu(), t.nbytes());
  } else if (dtype == DType::f16) {
    copy_bytes(ctx, t.raw(), t.device(), rounded<f16>(values).data(), Device::cpu(), t.nbytes());
  } else {
    copy_bytes(ctx, t.raw(), t.device(), values.data(), Device::cpu(), t.nbytes());
  }
  return t;
}

Tensor Tensor::from_host(std::span<const std::int32_t> values, const Shape& shape, Context& ctx) {
  CUDL_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(),
             "Tensor::from_host: {} values for shape {} ({} elements)", values.size(), shape, shape.numel());
  Tensor t = empty(shape, ctx, DType::i32);
  copy_bytes(ctx, t.raw(), t.device(), values.data(), Device::cpu(), t.nbytes());
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(data, t.nbytes(), device);
  return t;
}

Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

void* Tensor::raw() const {
  CUDL_CHECK(storage_, "Tensor::raw: tensor is undefined");
  return static_cast<char*>(storage_->data()) + offset_bytes_;
}

Tensor Tensor::reshape(const Shape& shape) const {
  CUDL_CHECK(shape.numel() == numel(), "Tensor::reshape: cannot view {} ({} elements) as {} ({} elements)", shape_,
             numel(), shape, shape.numel());
  CUDL_CHECK(!channels_last() || shape == shape_,
             "Tensor::reshape: a channels_last tensor {} has no {} view over its storage (make it contiguous first)",
             shape_, shape);
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice(std::int64_t begin, std::int64_t end) const {
  CUDL_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
             "Tensor::slice: [{}, {}) is out of range for shape {}", begin, end, shape_);
  Tensor t = *this;
  t.shape_[0] = end - begin;
  std::size_t row_bytes = shape_[0] == 0 ? 0 : nbytes() / static_cast<std::size_t>(shape_[0]);
  t.offset_bytes_ += static_cast<std::size_t>(begin) * row_bytes;
  return t;
}

Tensor Tensor::view(std::int64_t offset, const Shape& shape) const {
  CUDL_CHECK(defined() && offset >= 0 && offset + shape.numel() <= numel(),
             "Tensor::view: {} elements at offset {} do not fit in a tensor of shape {}", shape.numel(), offset,
             shape_);
  CUDL_CHECK(!channels_last(), "Tensor::view: {} is channels_last; views are of contiguous tensors", shape_);
  Tensor t = *this;
  t.shape_ = shape;
  t.offset_bytes_ += static_cast<std::size_t>(offset) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::to(Context& ctx) const {
  CUDL_CHECK(defined(), "Tensor::to: tensor is undefined");
  Tensor t = empty(shape_, ctx, dtype_, format_);
  copy_bytes(ctx, t.raw(), t.device(), raw(), device(), nbytes());
  return t;
}

Tensor Tensor::to_format(Context& ctx, MemoryFormat format) const {
  CUDL_CHECK(defined(), "Tensor::to_format: tensor is undefined");
  if (format == format_) return *this;
  if (formats_share_bytes(shape_)) {
    // One channel, or one pixel: both formats lay the elements out alike, so the storage is shared.
    Tensor t = *this;
    t.format_ = format;
    return t;
  }
  Tensor out = empty(shape_, ctx, dtype_, format);
  ctx.backend().copy(ctx, *this, out);
  return out;
}

Tensor Tensor::clone(Context& ctx) const { return to(ctx); }

Tensor Tensor::cast(Context& ctx, DType dtype) const {
  CUDL_CHECK(defined(), "Tensor::cast: tensor is undefined");
  if (dtype == dtype_) return *this;
  Tensor out = empty(shape_, ctx, dtype, format_);
  ctx.backend().cast(ctx, *this, out);
  return out;
}

namespace {
template <class Half>
std::vector<float> widened(Context& ctx, const Tensor& t) {
  std::vector<Half> bits(static_cast<std::size_t>(t.numel()));
  copy_bytes(ctx, bits.data(), Device::cpu(), t.raw(), t.device(), t.nbytes());
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) out[i] = to_float(bits[i]);
  return out;
}

// Host values of a channels_last tensor put in logical [N, C, H, W] order.
template <class T>
std::vector<T> in_logical_order(std::vector<T> stored, const Tensor& t) {
  if (!t.channels_last()) return stored;
  const Shape& s = t.shape();
  std::vector<T> out(stored.size());
  std::size_t i = 0;
  for (std::int64_t n = 0; n < s[0]; ++n)
    for (std::int64_t c = 0; c < s[1]; ++c)
      for (std::int64_t h = 0; h < s[2]; ++h)
        for (std::int64_t w = 0; w < s[3]; ++w)
          out[i++] = stored[static_cast<std::size_t>(storage_index(s, MemoryFormat::channels_last, n, c, h, w))];
  return out;
}
}  // namespace

std::vector<float> Tensor::to_vector(Context& ctx) const {
  if (defined() && dtype_ == DType::bf16) return in_logical_order(widened<bf16>(ctx, *this), *this);
  if (defined() && dtype_ == DType::f16) return in_logical_order(widened<f16>(ctx, *this), *this);
  std::vector<float> out(static_cast<std::size_t>(numel()));
  check_dtype_for_host_copy(DType::f32);
  copy_bytes(ctx, out.data(), Device::cpu(), raw(), device(), nbytes());
  return in_logical_order(std::move(out), *this);
}

std::vector<std::int32_t> Tensor::to_int_vector(Context& ctx) const {
  std::vector<std::int32_t> out(static_cast<std::size_t>(numel()));
  check_dtype_for_host_copy(DType::i32);
  copy_bytes(ctx, out.data(), Device::cpu(), raw(), device(), nbytes());
  return in_logical_order(std::move(out), *this);
}

float Tensor::item(Context& ctx) const {
  CUDL_CHECK(numel() == 1, "Tensor::item: tensor has shape {}, expected one element", shape_);
  return to_vector(ctx)[0];
}

void Tensor::check_dtype_for_host_copy(DType wanted) const {
  CUDL_CHECK(defined(), "Tensor: copy to host of an undefined tensor");
  CUDL_CHECK(dtype_ == wanted, "Tensor: cannot read {} tensor {} as {}", dtype_name(dtype_), shape_,
             dtype_name(wanted));
}

void copy_bytes(Context& ctx, void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if defined(CUDL_HAVE_CUDA)
  cuda_copy_bytes(ctx, dst, dst_device, src, src_device, bytes);
#else
  (void)ctx;
  CUDL_THROW("copy: {} -> {} needs the CUDA backend, which this build does not have", src_device, dst_device);
#endif
}

}  // namespace cudl
