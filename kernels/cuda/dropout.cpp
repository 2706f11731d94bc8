// CudaBackend: inverted dropout and the elementwise product. Kernels in kernels/cuda/dropout.cu;
// CPU twin kernels/cpu/dropout.cpp. Arguments were checked by the Backend front (every tensor one
// float dtype).
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

void CudaBackend::do_dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                                     Tensor& y, Tensor& mask) {
  const float keep_scale = 1.0f / (1.0f - p);
  cuda_detail::launch_dropout(x.raw(), y.raw(), mask.raw(), float_type(x.dtype()), x.numel(), p, keep_scale, seed,
                              offset, nullptr, 0, stream_of(ctx));
}

void CudaBackend::do_dropout_forward_counted(Context& ctx, const Tensor& x, float p, std::uint64_t seed,
                                             Tensor& counter, std::uint64_t offset, std::uint64_t advance, Tensor& y,
                                             Tensor& mask) {
  const float keep_scale = 1.0f / (1.0f - p);
  cuda_detail::launch_dropout(x.raw(), y.raw(), mask.raw(), float_type(x.dtype()), x.numel(), p, keep_scale, seed,
                              offset, reinterpret_cast<std::uint32_t*>(counter.data<std::int32_t>()), advance,
                              stream_of(ctx));
}

void CudaBackend::do_mul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  cuda_detail::launch_mul(a.raw(), b.raw(), out.raw(), float_type(a.dtype()), a.numel(), stream_of(ctx));
}

}  // namespace cudl
