// CudaBackend: softmax and log-softmax (forward, backward) and the fused softmax cross-entropy.
// Kernels in kernels/cuda/softmax.cu; CPU twin kernels/cpu/softmax.cpp. Arguments were checked by
// the Backend front.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::stream_of;

void CudaBackend::do_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) {
  cuda_detail::launch_softmax_forward(x.data<float>(), y.data<float>(), x.dim(0), x.dim(1), false, stream_of(ctx));
}

void CudaBackend::do_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) {
  cuda_detail::launch_softmax_backward(y.data<float>(), dy.data<float>(), dx.data<float>(), y.dim(0), y.dim(1), false,
                                       stream_of(ctx));
}

void CudaBackend::do_log_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) {
  cuda_detail::launch_softmax_forward(x.data<float>(), y.data<float>(), x.dim(0), x.dim(1), true, stream_of(ctx));
}

void CudaBackend::do_log_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) {
  cuda_detail::launch_softmax_backward(y.data<float>(), dy.data<float>(), dx.data<float>(), y.dim(0), y.dim(1), true,
                                       stream_of(ctx));
}

// The labels live on the device, so they are checked there: a label outside [0, K) makes its
// row's loss (and, in backward, its gradient row) NaN and sets the context's device fault word,
// which the next synchronising host read turns into a cudl::Error. The front cannot check them
// without a device-to-host copy.
void CudaBackend::do_softmax_cross_entropy_forward(Context& ctx, const Tensor& logits, const Tensor& labels,
                                                   Tensor& probs, Tensor& loss) {
  const std::int64_t rows = logits.dim(0);
  Workspace row_loss(ctx, static_cast<std::size_t>(rows) * sizeof(float));
  cuda_detail::launch_softmax_cross_entropy_forward(
      logits.data<float>(), labels.data<std::int32_t>(), probs.data<float>(), static_cast<float*>(row_loss.data()),
      loss.data<float>(), rows, logits.dim(1), device_fault_word(ctx), stream_of(ctx));
}

void CudaBackend::do_softmax_cross_entropy_backward(Context& ctx, const Tensor& probs, const Tensor& labels,
                                                    float dloss, Tensor& dlogits) {
  const std::int64_t rows = probs.dim(0);
  const float scale = rows > 0 ? dloss / static_cast<float>(rows) : 0.0f;
  cuda_detail::launch_softmax_cross_entropy_backward(probs.data<float>(), labels.data<std::int32_t>(),
                                                     dlogits.data<float>(), rows, probs.dim(1), scale,
                                                     device_fault_word(ctx), stream_of(ctx));
}

}  // namespace cudl
