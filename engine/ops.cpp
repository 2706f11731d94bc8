#include "cudl/engine/ops.hpp"

#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"

namespace cudl {
namespace {

// x [N, C_in, H, W] and y [N, C_out, Ho, Wo] must be conv2d's output and input for the weight
// [K=C_in, C=C_out, R, S]; checked here so that a bad call names the transposed op, not the
// conv2d op it runs as.
void check_transpose_shapes(std::string_view op, std::string_view xname, const Tensor& x, std::string_view wname,
                            const Tensor& w, std::string_view yname, const Tensor& y, const Conv2dParams& p) {
  check::defined(op, xname, x);
  check::defined(op, wname, w);
  check::defined(op, yname, y);
  CUDL_CHECK(x.rank() == 4 && w.rank() == 4 && y.rank() == 4, "{}: {}={}, {}={} and {}={} must all be 4-D", op, xname,
             x.shape(), wname, w.shape(), yname, y.shape());
  CUDL_CHECK(x.dim(1) == w.dim(0), "{}: {}={} has {} channels but {}={} expects {} (w is [C_in, C_out, R, S])", op,
             xname, x.shape(), x.dim(1), wname, w.shape(), w.dim(0));
  const int sh = p.stride_h > 0 ? p.stride_h : 1, sw = p.stride_w > 0 ? p.stride_w : 1;
  const Shape smallest = conv_transpose2d_output_shape(x.shape(), w.shape(), p);
  const bool fits = y.dim(0) == smallest[0] && y.dim(1) == smallest[1] && y.dim(2) >= smallest[2] &&
                    y.dim(2) < smallest[2] + sh && y.dim(3) >= smallest[3] && y.dim(3) < smallest[3] + sw;
  CUDL_CHECK(fits, "{}: {} has shape {}, expected {} plus an output padding below the stride {}x{} ({}={}, {}={})", op,
             yname, y.shape(), smallest, sh, sw, xname, x.shape(), wname, w.shape());
}

}  // namespace

Shape conv_transpose2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p, int output_padding_h,
                                    int output_padding_w) {
  constexpr std::string_view op = "conv_transpose2d";
  CUDL_CHECK(x.rank() == 4 && w.rank() == 4, "{}: x={} and w={} must both be 4-D (NCHW and [C_in, C_out, R, S])", op, x,
             w);
  CUDL_CHECK(x[1] == w[0], "{}: x={} has {} channels but w={} expects {} (w is [C_in, C_out, R, S])", op, x, x[1], w,
             w[0]);
  // Grouped transposed convolutions are not wired (no layer asks for them); refused here rather
  // than reaching conv2d with a weight layout it would read differently.
  CUDL_CHECK(p.groups == 1, "{}: groups={} is not supported, only groups=1 (x={}, w={})", op, p.groups, x, w);
  CUDL_CHECK(p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 && p.dilation_w > 0 && p.pad_h >= 0 && p.pad_w >= 0,
             "{}: stride and dilation must be positive and padding non-negative (x={}, w={})", op, x, w);
  CUDL_CHECK(
      output_padding_h >= 0 && output_padding_w >= 0 && output_padding_h < p.stride_h && output_padding_w < p.stride_w,
      "{}: output padding {}x{} must be non-negative and below the stride {}x{} (x={}, w={})", op, output_padding_h,
      output_padding_w, p.stride_h, p.stride_w, x, w);
  auto size = [](std::int64_t in, std::int64_t k, int pad, int stride, int dilation, int out_pad) {
    return (in - 1) * stride - 2 * static_cast<std::int64_t>(pad) + static_cast<std::int64_t>(dilation) * (k - 1) +
           out_pad + 1;
  };
  const auto oh = size(x[2], w[2], p.pad_h, p.stride_h, p.dilation_h, output_padding_h);
  const auto ow = size(x[3], w[3], p.pad_w, p.stride_w, p.dilation_w, output_padding_w);
  CUDL_CHECK(oh > 0 && ow > 0, "{}: padding {}x{} leaves no output for x={} and w={}", op, p.pad_h, p.pad_w, x, w);
  return Shape{x[0], w[1], oh, ow};
}

void conv_transpose2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  check_transpose_shapes("conv_transpose2d_forward", "x", x, "w", w, "y", y, p);
  ctx.backend().conv2d_backward_data(ctx, x, w, p, y);
}

void conv_transpose2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                                    Tensor& dx) {
  check_transpose_shapes("conv_transpose2d_backward_data", "dx", dx, "w", w, "dy", dy, p);
  ctx.backend().conv2d_forward(ctx, dy, w, p, dx);
}

void conv_transpose2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p,
                                      Tensor& dw, bool accumulate) {
  check_transpose_shapes("conv_transpose2d_backward_filter", "x", x, "dw", dw, "dy", dy, p);
  ctx.backend().conv2d_backward_filter(ctx, dy, x, p, dw, accumulate);
}

}  // namespace cudl
