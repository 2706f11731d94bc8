// CudaBackend: sum, mean, max, dot, argmax_rows and accuracy. Kernels in kernels/cuda/reductions.cu;
// CPU twin kernels/cpu/reductions.cpp. Arguments were checked by the Backend front; scratch comes
// from the context's pool.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

void CudaBackend::do_sum(Context& ctx, const Tensor& x, Tensor& out) {
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_sum(x.raw(), float_type(x.dtype()), x.numel(), 1.0, out.data<float>(), scratch.data(),
                          stream_of(ctx));
}

void CudaBackend::do_mean(Context& ctx, const Tensor& x, Tensor& out) {
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_sum(x.raw(), float_type(x.dtype()), x.numel(), static_cast<double>(x.numel()), out.data<float>(),
                          scratch.data(), stream_of(ctx));
}

void CudaBackend::do_max(Context& ctx, const Tensor& x, Tensor& out) {
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_max(x.raw(), float_type(x.dtype()), x.numel(), out.data<float>(), scratch.data(), stream_of(ctx));
}

void CudaBackend::do_dot(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  // Our two-pass reduction rather than cublasSdot: deterministic run to run, and the result stays
  // on the device without switching the shared handle's pointer mode.
  Workspace scratch(ctx, cuda_detail::kReduceScratchBytes);
  cuda_detail::launch_dot(a.data<float>(), b.data<float>(), a.numel(), out.data<float>(), scratch.data(),
                          stream_of(ctx));
}

void CudaBackend::do_argmax_rows(Context& ctx, const Tensor& x, Tensor& out) {
  cuda_detail::launch_argmax_rows(x.raw(), float_type(x.dtype()), out.data<std::int32_t>(), x.dim(0), x.dim(1),
                                  stream_of(ctx));
}

// A label outside [0, K) counts as wrong and sets the context's device fault word (the labels are
// on the device; the next synchronising host read throws).
void CudaBackend::do_accuracy(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& out) {
  const std::int64_t rows = logits.dim(0);
  Workspace correct(ctx, static_cast<std::size_t>(rows) * sizeof(float));
  cuda_detail::launch_accuracy(logits.raw(), float_type(logits.dtype()), labels.data<std::int32_t>(),
                               static_cast<float*>(correct.data()), out.data<float>(), rows, logits.dim(1),
                               device_fault_word(ctx), stream_of(ctx));
}

}  // namespace cudl
