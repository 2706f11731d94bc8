#include "cudl/layers/merge.hpp"

#include <fmt/format.h>

#include "cudl/engine/check.hpp"

namespace cudl {

DType merged_dtype(const std::vector<DType>& dtypes) {
  for (DType d : dtypes)
    if (d != dtypes.front()) return DType::f32;
  return dtypes.empty() ? DType::f32 : dtypes.front();
}

namespace {

std::string shapes_text(const std::vector<Shape>& shapes) {
  std::string out;
  for (const Shape& s : shapes) out += (out.empty() ? "" : ", ") + fmt::format("{}", s);
  return out;
}

std::vector<DType> dtypes_of(const std::vector<Tensor>& xs) {
  std::vector<DType> out;
  for (const Tensor& x : xs) out.push_back(x.dtype());
  return out;
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& xs) {
  std::vector<Shape> out;
  for (const Tensor& x : xs) out.push_back(x.shape());
  return out;
}

}  // namespace

Shape Add::output_shape(const std::vector<Shape>& inputs) const {
  CUDL_CHECK(!inputs.empty(), "Add: no inputs");
  for (const Shape& s : inputs)
    CUDL_CHECK(s == inputs.front(), "Add: inputs of different shapes ({}): every branch must give the same shape",
               shapes_text(inputs));
  return inputs.front();
}

Tensor Add::forward(Context& ctx, const std::vector<Tensor>& inputs, bool /*train*/) {
  (void)output_shape(shapes_of(inputs));
  input_dtypes_ = dtypes_of(inputs);
  const DType dtype = merged_dtype(input_dtypes_);
  const Tensor& first = inputs.front();
  Tensor y = first.dtype() == dtype ? first.clone(ctx) : first.cast(ctx, dtype);
  for (std::size_t i = 1; i < inputs.size(); ++i) ctx.backend().axpy(ctx, 1.0f, inputs[i].cast(ctx, dtype), y);
  return y;
}

std::vector<Tensor> Add::backward_inputs(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(!input_dtypes_.empty(), "Add::backward: forward was not run");
  std::vector<Tensor> out;
  for (DType d : input_dtypes_) out.push_back(dy.dtype() == d ? dy : dy.cast(ctx, d));
  return out;
}

Shape Concat::output_shape(const std::vector<Shape>& inputs) const {
  CUDL_CHECK(!inputs.empty(), "Concat: no inputs");
  const Shape& first = inputs.front();
  std::int64_t channels = 0;
  for (const Shape& s : inputs) {
    CUDL_CHECK(s.rank() == 4 && s[0] == first[0] && s[2] == first[2] && s[3] == first[3],
               "Concat: inputs {} must be [N, C, H, W] with the same N, H and W", shapes_text(inputs));
    channels += s[1];
  }
  return Shape{first[0], channels, first[2], first[3]};
}

Tensor Concat::forward(Context& ctx, const std::vector<Tensor>& inputs, bool /*train*/) {
  input_shapes_ = shapes_of(inputs);
  const Shape out_shape = output_shape(input_shapes_);
  input_dtypes_ = dtypes_of(inputs);
  const DType dtype = merged_dtype(input_dtypes_);
  Tensor y = Tensor::empty(out_shape, ctx, dtype);
  const std::int64_t n = out_shape[0], plane = out_shape[2] * out_shape[3], total = out_shape[1] * plane;
  std::int64_t offset = 0;  // of this input's channels within a sample
  for (const Tensor& x : inputs) {
    const Tensor xc = x.cast(ctx, dtype).contiguous(ctx);  // channel blocks are NCHW's
    const std::int64_t block = x.dim(1) * plane;
    // One copy per sample: an input's channels are contiguous within a sample, not across samples.
    for (std::int64_t s = 0; s < n; ++s) {
      Tensor dst = y.view(s * total + offset, Shape{block});
      ctx.backend().copy(ctx, xc.view(s * block, Shape{block}), dst);
    }
    offset += block;
  }
  return y;
}

std::vector<Tensor> Concat::backward_inputs(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(!input_shapes_.empty(), "Concat::backward: forward was not run");
  const std::int64_t n = dy.dim(0), plane = dy.dim(2) * dy.dim(3), total = dy.dim(1) * plane;
  const Tensor dyc = dy.contiguous(ctx);
  std::vector<Tensor> out;
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < input_shapes_.size(); ++i) {
    const std::int64_t block = input_shapes_[i][1] * plane;
    Tensor dx = Tensor::empty(input_shapes_[i], ctx, dy.dtype());
    for (std::int64_t s = 0; s < n; ++s) {
      Tensor dst = dx.view(s * block, Shape{block});
      ctx.backend().copy(ctx, dyc.view(s * total + offset, Shape{block}), dst);
    }
    out.push_back(dx.dtype() == input_dtypes_[i] ? dx : dx.cast(ctx, input_dtypes_[i]));
    offset += block;
  }
  return out;
}

namespace {
Pool2dParams whole_plane(const Shape& x) {
  Pool2dParams p;
  p.kernel_h = p.stride_h = static_cast<int>(x[2]);
  p.kernel_w = p.stride_w = static_cast<int>(x[3]);
  return p;
}
}  // namespace

Shape GlobalAvgPool2d::output_shape(const Shape& input) const {
  CUDL_CHECK(input.rank() == 4, "GlobalAvgPool2d: input {} must be [N, C, H, W]", input);
  return Shape{input[0], input[1], 1, 1};
}

Tensor GlobalAvgPool2d::forward(Context& ctx, const Tensor& x, bool /*train*/) {
  Tensor y = Tensor::empty(output_shape(x.shape()), ctx, x.dtype(), x.format());
  ctx.backend().avgpool2d_forward(ctx, x, whole_plane(x.shape()), y);
  input_shape_ = x.shape();
  input_format_ = x.format();
  return y;
}

Tensor GlobalAvgPool2d::backward(Context& ctx, const Tensor& dy) {
  CUDL_CHECK(input_shape_.rank() == 4, "GlobalAvgPool2d::backward: forward was not run");
  Tensor dx = Tensor::empty(input_shape_, ctx, dy.dtype(), input_format_);
  ctx.backend().avgpool2d_backward(ctx, dy, whole_plane(input_shape_), dx);
  return dx;
}

}  // namespace cudl
