#include "engine/backend.hpp"

namespace cudl {

std::string_view activation_name(Activation a) {
  switch (a) {
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky_relu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::tanh: return "tanh";
  }
  return "?";
}

std::int64_t conv_out_size(std::int64_t in, int kernel, int pad, int stride, int dilation) {
  return (in + 2 * pad - static_cast<std::int64_t>(dilation) * (kernel - 1) - 1) / stride + 1;
}

std::int64_t pool_out_size(std::int64_t in, int kernel, int pad, int stride) {
  return (in + 2 * pad - kernel) / stride + 1;
}

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p) {
  CUDL_CHECK(x.rank() == 4 && w.rank() == 4, "conv2d: x={} and w={} must both be 4-D (NCHW and KCRS)", x, w);
  CUDL_CHECK(x[1] == w[1], "conv2d: x={} has {} channels but w={} expects {}", x, x[1], w, w[1]);
  CUDL_CHECK(p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 && p.dilation_w > 0 && p.pad_h >= 0 &&
                 p.pad_w >= 0,
             "conv2d: stride and dilation must be positive and padding non-negative (x={}, w={})", x, w);
  auto oh = conv_out_size(x[2], static_cast<int>(w[2]), p.pad_h, p.stride_h, p.dilation_h);
  auto ow = conv_out_size(x[3], static_cast<int>(w[3]), p.pad_w, p.stride_w, p.dilation_w);
  CUDL_CHECK(oh > 0 && ow > 0, "conv2d: kernel of w={} does not fit input x={} with padding {}x{}", w, x, p.pad_h,
             p.pad_w);
  return Shape{x[0], w[0], oh, ow};
}

Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p) {
  CUDL_CHECK(x.rank() == 4, "pool2d: x={} must be 4-D (NCHW)", x);
  CUDL_CHECK(p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0,
             "pool2d: kernel and stride must be positive (x={})", x);
  CUDL_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w,
             "pool2d: padding must be at most half the kernel (x={}, kernel {}x{}, pad {}x{})", x, p.kernel_h,
             p.kernel_w, p.pad_h, p.pad_w);
  auto oh = pool_out_size(x[2], p.kernel_h, p.pad_h, p.stride_h);
  auto ow = pool_out_size(x[3], p.kernel_w, p.pad_w, p.stride_w);
  CUDL_CHECK(oh > 0 && ow > 0, "pool2d: kernel {}x{} does not fit input x={}", p.kernel_h, p.kernel_w, x);
  return Shape{x[0], x[1], oh, ow};
}

}  // namespace cudl
