// CudaBackend: pointwise activations. Kernels in kernels/cuda/activations.cu; CPU twin
// kernels/cpu/activations.cpp. Arguments were checked by the Backend front (x, y, dy, dx one float
// dtype).
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::float_type;
using cuda_detail::stream_of;

void CudaBackend::do_activation_forward(Context& ctx, Activation a, float alpha, const Tensor& x, Tensor& y) {
  cuda_detail::launch_activation_forward(a, alpha, x.raw(), y.raw(), float_type(x.dtype()), x.numel(), stream_of(ctx));
}

void CudaBackend::do_activation_backward(Context& ctx, Activation a, float alpha, const Tensor& x, const Tensor& y,
                                         const Tensor& dy, Tensor& dx) {
  // ReLU-like functions differentiate from x, sigmoid/tanh from y; only that one is read (the
  // other may be undefined).
  const Tensor& saved = activation_grad_reads_x(a) ? x : y;
  cuda_detail::launch_activation_backward(a, alpha, saved.raw(), dy.raw(), dx.raw(), float_type(dy.dtype()), dy.numel(),
                                          stream_of(ctx));
}

}  // namespace cudl
