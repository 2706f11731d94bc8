// CudaBackend: cast between float dtypes. Kernels in kernels/cuda/cast.cu; CPU twin
// kernels/cpu/cast.cpp. Arguments were checked by the Backend front.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

void CudaBackend::do_cast(Context& ctx, const Tensor& src, Tensor& dst) {
  cuda_detail::launch_cast(src.raw(), cuda_detail::float_type(src.dtype()), dst.raw(),
                           cuda_detail::float_type(dst.dtype()), src.numel(), cuda_detail::stream_of(ctx));
}

void CudaBackend::do_convert_format(Context& ctx, const Tensor& src, Tensor& dst) {
  const Shape& s = src.shape();
  const std::int64_t c = s[1], hw = s[2] * s[3];
  // NCHW -> NHWC transposes each sample's [C, HW] matrix; NHWC -> NCHW its [HW, C] one.
  const bool to_channels_last = dst.channels_last();
  cuda_detail::launch_transpose(src.raw(), dst.raw(), dtype_size(src.dtype()), s[0], to_channels_last ? c : hw,
                                to_channels_last ? hw : c, cuda_detail::stream_of(ctx));
}

}  // namespace cudl
