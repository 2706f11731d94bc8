// CudaBackend: sum / mean / max (CUB), dot and the MSE, L1 and total-variation losses. Kernels in
// kernels/cuda/reduce.cu; temporary storage comes from the context's pool.
#include <algorithm>

#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"

namespace cudl {

using cuda_detail::device_tensor;
using cuda_detail::stream_of;

namespace {
void scalar_out(Context& ctx, std::string_view op, const Tensor& out) {
  device_tensor(op, "out", out, ctx);
  check::numel_is(op, "out", out, 1);
}

void sum_impl(Context& ctx, std::string_view op, const Tensor& x, Tensor& out, bool mean) {
  device_tensor(op, "x", x, ctx);
  scalar_out(ctx, op, out);
  const std::int64_t n = x.numel();
  const float scale = mean ? 1.0f / static_cast<float>(n) : 1.0f;
  // Never a null pointer: CUB reads a null temp pointer as "only report the size".
  std::size_t temp_bytes = std::max<std::size_t>(cuda_detail::reduce_sum_temp_bytes(n), 16);
  Workspace temp(ctx, temp_bytes);
  cuda_detail::launch_reduce_sum(x.data<float>(), n, scale, out.data<float>(), temp.data(), temp_bytes,
                                 stream_of(ctx));
}

void pair_loss_checks(Context& ctx, std::string_view op, const Tensor& a, const Tensor& b) {
  device_tensor(op, "a", a, ctx);
  device_tensor(op, "b", b, ctx);
  check::same_shape(op, "a", a, "b", b);
}

void tv_checks(Context& ctx, std::string_view op, const Tensor& x) {
  device_tensor(op, "x", x, ctx);
  check::rank_is(op, "x", x, 4);
}
}  // namespace

void CudaBackend::sum(Context& ctx, const Tensor& x, Tensor& out) { sum_impl(ctx, "sum", x, out, false); }

void CudaBackend::mean(Context& ctx, const Tensor& x, Tensor& out) {
  CUDL_CHECK(x.numel() > 0, "mean: x={} is empty", x.shape());
  sum_impl(ctx, "mean", x, out, true);
}

void CudaBackend::max(Context& ctx, const Tensor& x, Tensor& out) {
  device_tensor("max", "x", x, ctx);
  scalar_out(ctx, "max", out);
  CUDL_CHECK(x.numel() > 0, "max: x={} is empty", x.shape());
  std::size_t temp_bytes = std::max<std::size_t>(cuda_detail::reduce_max_temp_bytes(x.numel()), 16);
  Workspace temp(ctx, temp_bytes);
  cuda_detail::launch_reduce_max(x.data<float>(), x.numel(), out.data<float>(), temp.data(), temp_bytes,
                                 stream_of(ctx));
}

void CudaBackend::dot(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  device_tensor("dot", "a", a, ctx);
  device_tensor("dot", "b", b, ctx);
  scalar_out(ctx, "dot", out);
  check::same_shape("dot", "a", a, "b", b);
  // Our two-pass reduction rather than cublasSdot: deterministic run to run, and the result stays
  // on the device without switching the shared handle's pointer mode.
  Workspace partials(ctx, cuda_detail::kLossPartials * sizeof(float));
  cuda_detail::launch_dot(a.data<float>(), b.data<float>(), a.numel(), static_cast<float*>(partials.data()),
                          out.data<float>(), stream_of(ctx));
}

void CudaBackend::mse_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) {
  pair_loss_checks(ctx, "mse_loss", a, b);
  device_tensor("mse_loss", "loss", loss, ctx);
  check::numel_is("mse_loss", "loss", loss, 1);
  Workspace partials(ctx, cuda_detail::kLossPartials * sizeof(float));
  cuda_detail::launch_mse_loss_forward(a.data<float>(), b.data<float>(), a.numel(),
                                       static_cast<float*>(partials.data()), loss.data<float>(), stream_of(ctx));
}

void CudaBackend::mse_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  pair_loss_checks(ctx, "mse_loss_backward", a, b);
  device_tensor("mse_loss_backward", "da", da, ctx);
  check::same_shape("mse_loss_backward", "a", a, "da", da);
  cuda_detail::launch_mse_loss_backward(a.data<float>(), b.data<float>(), da.data<float>(), a.numel(), dloss,
                                        stream_of(ctx));
}

void CudaBackend::l1_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) {
  pair_loss_checks(ctx, "l1_loss", a, b);
  device_tensor("l1_loss", "loss", loss, ctx);
  check::numel_is("l1_loss", "loss", loss, 1);
  Workspace partials(ctx, cuda_detail::kLossPartials * sizeof(float));
  cuda_detail::launch_l1_loss_forward(a.data<float>(), b.data<float>(), a.numel(),
                                      static_cast<float*>(partials.data()), loss.data<float>(), stream_of(ctx));
}

void CudaBackend::l1_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  pair_loss_checks(ctx, "l1_loss_backward", a, b);
  device_tensor("l1_loss_backward", "da", da, ctx);
  check::same_shape("l1_loss_backward", "a", a, "da", da);
  cuda_detail::launch_l1_loss_backward(a.data<float>(), b.data<float>(), da.data<float>(), a.numel(), dloss,
                                       stream_of(ctx));
}

void CudaBackend::tv_loss_forward(Context& ctx, const Tensor& x, Tensor& loss) {
  tv_checks(ctx, "tv_loss", x);
  device_tensor("tv_loss", "loss", loss, ctx);
  check::numel_is("tv_loss", "loss", loss, 1);
  Workspace partials(ctx, cuda_detail::kLossPartials * sizeof(float));
  cuda_detail::launch_tv_loss_forward(x.data<float>(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3),
                                      static_cast<float*>(partials.data()), loss.data<float>(), stream_of(ctx));
}

void CudaBackend::tv_loss_backward(Context& ctx, const Tensor& x, float dloss, Tensor& dx, bool accumulate) {
  tv_checks(ctx, "tv_loss_backward", x);
  device_tensor("tv_loss_backward", "dx", dx, ctx);
  check::same_shape("tv_loss_backward", "x", x, "dx", dx);
  cuda_detail::launch_tv_loss_backward(x.data<float>(), dx.data<float>(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3),
                                       dloss, accumulate, stream_of(ctx));
}

}  // namespace cudl
