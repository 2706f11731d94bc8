// CudaBackend: max and average pooling. Kernels in kernels/cuda/pooling.cu.
#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"

namespace cudl {

using cuda_detail::device_tensor;
using cuda_detail::stream_of;

namespace {
cuda_detail::PoolGeometry geometry(std::string_view op, const Shape& x, const Pool2dParams& p) {
  const Shape y = pool2d_output_shape(x, p);
  cuda_detail::PoolGeometry g;
  g.planes = x[0] * x[1];
  g.height = cuda_detail::to_int(op, "H", x[2], x);
  g.width = cuda_detail::to_int(op, "W", x[3], x);
  g.out_height = static_cast<int>(y[2]);
  g.out_width = static_cast<int>(y[3]);
  g.kernel_h = p.kernel_h;
  g.kernel_w = p.kernel_w;
  g.stride_h = p.stride_h;
  g.stride_w = p.stride_w;
  g.pad_h = p.pad_h;
  g.pad_w = p.pad_w;
  return g;
}
}  // namespace

void CudaBackend::maxpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y,
                                    Tensor& argmax) {
  device_tensor("maxpool2d", "x", x, ctx);
  device_tensor("maxpool2d", "y", y, ctx);
  device_tensor("maxpool2d", "argmax", argmax, ctx, DType::i32);
  const Shape out = pool2d_output_shape(x.shape(), p);
  check::shape_is("maxpool2d", "y", y, out);
  check::shape_is("maxpool2d", "argmax", argmax, out);
  cuda_detail::launch_maxpool_forward(x.data<float>(), y.data<float>(), argmax.data<std::int32_t>(),
                                      geometry("maxpool2d", x.shape(), p), stream_of(ctx));
}

void CudaBackend::maxpool2d_backward(Context& ctx, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p,
                                     Tensor& dx) {
  device_tensor("maxpool2d_backward", "dy", dy, ctx);
  device_tensor("maxpool2d_backward", "argmax", argmax, ctx, DType::i32);
  device_tensor("maxpool2d_backward", "dx", dx, ctx);
  const Shape out = pool2d_output_shape(dx.shape(), p);
  check::shape_is("maxpool2d_backward", "dy", dy, out);
  check::shape_is("maxpool2d_backward", "argmax", argmax, out);
  cuda_detail::launch_maxpool_backward(dy.data<float>(), argmax.data<std::int32_t>(), dx.data<float>(),
                                       geometry("maxpool2d_backward", dx.shape(), p), stream_of(ctx));
}

void CudaBackend::avgpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y) {
  device_tensor("avgpool2d", "x", x, ctx);
  device_tensor("avgpool2d", "y", y, ctx);
  check::shape_is("avgpool2d", "y", y, pool2d_output_shape(x.shape(), p));
  cuda_detail::launch_avgpool_forward(x.data<float>(), y.data<float>(), geometry("avgpool2d", x.shape(), p),
                                      stream_of(ctx));
}

void CudaBackend::avgpool2d_backward(Context& ctx, const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  device_tensor("avgpool2d_backward", "dy", dy, ctx);
  device_tensor("avgpool2d_backward", "dx", dx, ctx);
  check::shape_is("avgpool2d_backward", "dy", dy, pool2d_output_shape(dx.shape(), p));
  cuda_detail::launch_avgpool_backward(dy.data<float>(), dx.data<float>(),
                                       geometry("avgpool2d_backward", dx.shape(), p), stream_of(ctx));
}

}  // namespace cudl
