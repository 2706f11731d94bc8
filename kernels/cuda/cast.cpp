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

}  // namespace cudl
