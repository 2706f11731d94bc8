// CudaBackend: max and average pooling. Kernels in kernels/cuda/pooling.cu; CPU twin
// kernels/cpu/pooling.cpp. Arguments were checked by the Backend front; the one check here is the
// CUDA backend's own: plane sizes fit the kernels' 32-bit in-plane offsets.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

namespace {
// x is the input-side shape (x for forward, dx for backward). The CUDA backend's own check: both
// planes fit the kernels' 32-bit in-plane offsets.
cuda_detail::PoolGeometry geometry(std::string_view op, const Shape& x, const Pool2dParams& p) {
  const Shape y = pool2d_output_shape(x, p);
  cuda_detail::to_int(op, "H*W", x[2] * x[3], x);
  cuda_detail::to_int(op, "output H*W", y[2] * y[3], y);
  cuda_detail::PoolGeometry g;
  g.samples = x[0];
  g.channels = x[1];
  g.height = static_cast<int>(x[2]);
  g.width = static_cast<int>(x[3]);
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

void CudaBackend::do_maxpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y,
                                       Tensor& argmax) {
  cuda_detail::launch_maxpool_forward(x.raw(), y.raw(), argmax.data<std::int32_t>(), float_type(x.dtype()),
                                      geometry("maxpool2d_forward", x.shape(), p), stream_of(ctx));
}

void CudaBackend::do_maxpool2d_backward(Context& ctx, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p,
                                        Tensor& dx) {
  cuda_detail::launch_maxpool_backward(dy.raw(), argmax.data<std::int32_t>(), dx.raw(), float_type(dy.dtype()),
                                       geometry("maxpool2d_backward", dx.shape(), p), device_fault_word(ctx),
                                       stream_of(ctx));
}

void CudaBackend::do_avgpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y) {
  cuda_detail::launch_avgpool_forward(x.raw(), y.raw(), float_type(x.dtype()),
                                      geometry("avgpool2d_forward", x.shape(), p), stream_of(ctx));
}

void CudaBackend::do_avgpool2d_backward(Context& ctx, const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  cuda_detail::launch_avgpool_backward(dy.raw(), dx.raw(), float_type(dy.dtype()),
                                       geometry("avgpool2d_backward", dx.shape(), p), stream_of(ctx));
}

}  // namespace cudl
