// CudaBackend: cast between float dtypes, the NCHW <-> channels_last copy, and which ops read
// channels_last tensors themselves. Kernels in kernels/cuda/cast.cu; CPU twins kernels/cpu/cast.cpp
// and kernels/cpu/layout.cpp. Arguments were checked by the Backend front.
#include <algorithm>
#include <array>
#include <string_view>

#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

namespace {

// cuDNN describes each of a convolution's data tensors in its own format (kernels/cudnn/conv.cpp,
// conv_fused.cpp); bias_add and bias_grad have NHWC kernels (kernels/cuda/gemm.cu). Pooling, batch
// norm and the rest get NCHW copies from the front.
constexpr std::array<std::string_view, 6> kChannelsLastOps = {
    "conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter", "conv2d_bias_relu_forward", "bias_add",
    "bias_grad"};

}  // namespace

bool CudaBackend::do_takes_channels_last(std::string_view op) const {
  return std::find(kChannelsLastOps.begin(), kChannelsLastOps.end(), op) != kChannelsLastOps.end();
}

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
