// CudaBackend: softmax family, fused softmax cross-entropy, argmax and accuracy. Kernels in
// kernels/cuda/softmax.cu.
#include "kernels/cuda/cuda_args.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"

namespace cudl {

using cuda_detail::device_tensor;
using cuda_detail::stream_of;

namespace {
void rows_2d(std::string_view op, std::string_view name, const Tensor& t) { check::rank_is(op, name, t, 2); }

void softmax_forward_impl(Context& ctx, std::string_view op, const Tensor& x, Tensor& y, bool log) {
  device_tensor(op, "x", x, ctx);
  device_tensor(op, "y", y, ctx);
  rows_2d(op, "x", x);
  check::same_shape(op, "x", x, "y", y);
  cuda_detail::launch_softmax_forward(x.data<float>(), y.data<float>(), x.dim(0), x.dim(1), log, stream_of(ctx));
}

void softmax_backward_impl(Context& ctx, std::string_view op, const Tensor& y, const Tensor& dy, Tensor& dx,
                           bool log) {
  device_tensor(op, "y", y, ctx);
  device_tensor(op, "dy", dy, ctx);
  device_tensor(op, "dx", dx, ctx);
  rows_2d(op, "y", y);
  check::same_shape(op, "y", y, "dy", dy);
  check::same_shape(op, "y", y, "dx", dx);
  cuda_detail::launch_softmax_backward(y.data<float>(), dy.data<float>(), dx.data<float>(), y.dim(0), y.dim(1), log,
                                       stream_of(ctx));
}

void labels_for(Context& ctx, std::string_view op, const Tensor& rows, const Tensor& labels) {
  device_tensor(op, "labels", labels, ctx, DType::i32);
  check::shape_is(op, "labels", labels, Shape{rows.dim(0)});
}
}  // namespace

void CudaBackend::softmax_forward(Context& ctx, const Tensor& x, Tensor& y) {
  softmax_forward_impl(ctx, "softmax", x, y, false);
}

void CudaBackend::softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) {
  softmax_backward_impl(ctx, "softmax_backward", y, dy, dx, false);
}

void CudaBackend::log_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) {
  softmax_forward_impl(ctx, "log_softmax", x, y, true);
}

void CudaBackend::log_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) {
  softmax_backward_impl(ctx, "log_softmax_backward", y, dy, dx, true);
}

// Labels are not range-checked here (that would need a device->host copy): a label outside
// [0, K) makes the loss NaN instead.
void CudaBackend::softmax_cross_entropy_forward(Context& ctx, const Tensor& logits, const Tensor& labels,
                                                Tensor& probs, Tensor& loss) {
  constexpr std::string_view op = "softmax_cross_entropy";
  device_tensor(op, "logits", logits, ctx);
  device_tensor(op, "probs", probs, ctx);
  device_tensor(op, "loss", loss, ctx);
  rows_2d(op, "logits", logits);
  labels_for(ctx, op, logits, labels);
  check::same_shape(op, "logits", logits, "probs", probs);
  check::numel_is(op, "loss", loss, 1);
  const std::int64_t rows = logits.dim(0);
  Workspace row_loss(ctx, static_cast<std::size_t>(rows) * sizeof(float));
  cuda_detail::launch_softmax_cross_entropy_forward(logits.data<float>(), labels.data<std::int32_t>(),
                                                    probs.data<float>(), static_cast<float*>(row_loss.data()),
                                                    loss.data<float>(), rows, logits.dim(1), stream_of(ctx));
}

void CudaBackend::softmax_cross_entropy_backward(Context& ctx, const Tensor& probs, const Tensor& labels, float dloss,
                                                 Tensor& dlogits) {
  constexpr std::string_view op = "softmax_cross_entropy_backward";
  device_tensor(op, "probs", probs, ctx);
  device_tensor(op, "dlogits", dlogits, ctx);
  rows_2d(op, "probs", probs);
  labels_for(ctx, op, probs, labels);
  check::same_shape(op, "probs", probs, "dlogits", dlogits);
  const std::int64_t rows = probs.dim(0);
  const float scale = rows > 0 ? dloss / static_cast<float>(rows) : 0.0f;
  cuda_detail::launch_softmax_cross_entropy_backward(probs.data<float>(), labels.data<std::int32_t>(),
                                                     dlogits.data<float>(), rows, probs.dim(1), scale, stream_of(ctx));
}

void CudaBackend::argmax_rows(Context& ctx, const Tensor& x, Tensor& out) {
  device_tensor("argmax_rows", "x", x, ctx);
  device_tensor("argmax_rows", "out", out, ctx, DType::i32);
  rows_2d("argmax_rows", "x", x);
  check::shape_is("argmax_rows", "out", out, Shape{x.dim(0)});
  CUDL_CHECK(x.dim(1) > 0 || x.dim(0) == 0, "argmax_rows: x={} has no columns", x.shape());
  cuda_detail::launch_argmax_rows(x.data<float>(), out.data<std::int32_t>(), x.dim(0), x.dim(1), stream_of(ctx));
}

void CudaBackend::accuracy(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& out) {
  device_tensor("accuracy", "logits", logits, ctx);
  device_tensor("accuracy", "out", out, ctx);
  rows_2d("accuracy", "logits", logits);
  labels_for(ctx, "accuracy", logits, labels);
  check::numel_is("accuracy", "out", out, 1);
  const std::int64_t rows = logits.dim(0);
  CUDL_CHECK(rows > 0 && logits.dim(1) > 0, "accuracy: logits={} is empty", logits.shape());
  Workspace correct(ctx, static_cast<std::size_t>(rows) * sizeof(float));
  cuda_detail::launch_accuracy(logits.data<float>(), labels.data<std::int32_t>(), static_cast<float*>(correct.data()),
                               out.data<float>(), rows, logits.dim(1), stream_of(ctx));
}

}  // namespace cudl
