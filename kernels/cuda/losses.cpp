// CudaBackend: the MSE, L1 and total-variation losses. Kernels in kernels/cuda/losses.cu; CPU twin
// kernels/cpu/losses.cpp. Arguments were checked by the Backend front (tv_loss_backward adds the
// CUDA backend's own check: an H*W plane fits 32-bit offsets); scratch comes from the context's pool.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

void CudaBackend::do_mse_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) {
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_mse_loss_forward(a.raw(), b.raw(), float_type(a.dtype()), a.numel(), loss.data<float>(),
                                       scratch.data(), stream_of(ctx));
}

void CudaBackend::do_mse_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  // The CPU's scale: formed in double, rounded once.
  const auto scale = static_cast<float>(2.0 * dloss / static_cast<double>(a.numel()));
  cuda_detail::launch_mse_loss_backward(a.raw(), b.raw(), da.raw(), float_type(a.dtype()), a.numel(), scale,
                                        stream_of(ctx));
}

void CudaBackend::do_l1_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) {
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_l1_loss_forward(a.raw(), b.raw(), float_type(a.dtype()), a.numel(), loss.data<float>(),
                                      scratch.data(), stream_of(ctx));
}

void CudaBackend::do_l1_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  const auto scale = static_cast<float>(dloss / static_cast<double>(a.numel()));
  cuda_detail::launch_l1_loss_backward(a.raw(), b.raw(), da.raw(), float_type(a.dtype()), a.numel(), scale,
                                       stream_of(ctx));
}

void CudaBackend::do_tv_loss_forward(Context& ctx, const Tensor& x, float beta, Tensor& loss) {
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_tv_loss_forward(x.data<float>(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3), beta,
                                      loss.data<float>(), scratch.data(), stream_of(ctx));
}

void CudaBackend::do_tv_loss_backward(Context& ctx, const Tensor& x, float beta, float dloss, Tensor& dx,
                                      bool accumulate) {
  constexpr std::string_view op = "tv_loss_backward";
  const cuda_detail::Planes s = cuda_detail::planes_of(op, "x", x);  // H*W fits 32 bits, so H and W do
  cuda_detail::launch_tv_loss_backward(x.data<float>(), dx.data<float>(), s, static_cast<int>(x.dim(2)),
                                       static_cast<int>(x.dim(3)), beta, dloss, accumulate, stream_of(ctx));
}

}  // namespace cudl
