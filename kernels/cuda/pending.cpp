// TEMPORARY: ops not yet implemented throw. Each op moves to its family file; this file is
// deleted before the backend is called done.
#include "kernels/cuda/cuda_backend.hpp"

namespace cudl {

void CudaBackend::gemm(Context&, bool, bool, float, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CudaBackend::gemm: not implemented yet");
}
void CudaBackend::bias_add(Context&, Tensor&, const Tensor&) {
  CUDL_THROW("CudaBackend::bias_add: not implemented yet");
}
void CudaBackend::bias_grad(Context&, const Tensor&, Tensor&, bool) {
  CUDL_THROW("CudaBackend::bias_grad: not implemented yet");
}
void CudaBackend::conv2d_forward(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) {
  CUDL_THROW("CudaBackend::conv2d_forward: not implemented yet");
}
void CudaBackend::conv2d_backward_data(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) {
  CUDL_THROW("CudaBackend::conv2d_backward_data: not implemented yet");
}
void CudaBackend::conv2d_backward_filter(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&, bool) {
  CUDL_THROW("CudaBackend::conv2d_backward_filter: not implemented yet");
}
void CudaBackend::activation_forward(Context&, Activation, float, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::activation_forward: not implemented yet");
}
void CudaBackend::activation_backward(Context&, Activation, float, const Tensor&, const Tensor&, const Tensor&,
                                      Tensor&) {
  CUDL_THROW("CudaBackend::activation_backward: not implemented yet");
}
void CudaBackend::maxpool2d_forward(Context&, const Tensor&, const Pool2dParams&, Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::maxpool2d_forward: not implemented yet");
}
void CudaBackend::maxpool2d_backward(Context&, const Tensor&, const Tensor&, const Pool2dParams&, Tensor&) {
  CUDL_THROW("CudaBackend::maxpool2d_backward: not implemented yet");
}
void CudaBackend::avgpool2d_forward(Context&, const Tensor&, const Pool2dParams&, Tensor&) {
  CUDL_THROW("CudaBackend::avgpool2d_forward: not implemented yet");
}
void CudaBackend::avgpool2d_backward(Context&, const Tensor&, const Pool2dParams&, Tensor&) {
  CUDL_THROW("CudaBackend::avgpool2d_backward: not implemented yet");
}
void CudaBackend::softmax_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::softmax_forward: not implemented yet");
}
void CudaBackend::softmax_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::softmax_backward: not implemented yet");
}
void CudaBackend::log_softmax_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::log_softmax_forward: not implemented yet");
}
void CudaBackend::log_softmax_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::log_softmax_backward: not implemented yet");
}
void CudaBackend::softmax_cross_entropy_forward(Context&, const Tensor&, const Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::softmax_cross_entropy_forward: not implemented yet");
}
void CudaBackend::softmax_cross_entropy_backward(Context&, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CudaBackend::softmax_cross_entropy_backward: not implemented yet");
}
void CudaBackend::gram_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::gram_forward: not implemented yet");
}
void CudaBackend::gram_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::gram_backward: not implemented yet");
}
void CudaBackend::mse_loss_forward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::mse_loss_forward: not implemented yet");
}
void CudaBackend::mse_loss_backward(Context&, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CudaBackend::mse_loss_backward: not implemented yet");
}
void CudaBackend::l1_loss_forward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::l1_loss_forward: not implemented yet");
}
void CudaBackend::l1_loss_backward(Context&, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CudaBackend::l1_loss_backward: not implemented yet");
}
void CudaBackend::tv_loss_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::tv_loss_forward: not implemented yet");
}
void CudaBackend::tv_loss_backward(Context&, const Tensor&, float, Tensor&, bool) {
  CUDL_THROW("CudaBackend::tv_loss_backward: not implemented yet");
}
void CudaBackend::dropout_forward(Context&, const Tensor&, float, std::uint64_t, std::uint64_t, Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::dropout_forward: not implemented yet");
}
void CudaBackend::mul(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::mul: not implemented yet");
}
void CudaBackend::sgd_step(Context&, const SgdParams&, Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::sgd_step: not implemented yet");
}
void CudaBackend::adam_step(Context&, const AdamParams&, Tensor&, const Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::adam_step: not implemented yet");
}
void CudaBackend::sum(Context&, const Tensor&, Tensor&) { CUDL_THROW("CudaBackend::sum: not implemented yet"); }
void CudaBackend::mean(Context&, const Tensor&, Tensor&) { CUDL_THROW("CudaBackend::mean: not implemented yet"); }
void CudaBackend::max(Context&, const Tensor&, Tensor&) { CUDL_THROW("CudaBackend::max: not implemented yet"); }
void CudaBackend::argmax_rows(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::argmax_rows: not implemented yet");
}
void CudaBackend::accuracy(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::accuracy: not implemented yet");
}
void CudaBackend::fill(Context&, Tensor&, float) { CUDL_THROW("CudaBackend::fill: not implemented yet"); }
void CudaBackend::copy(Context&, const Tensor&, Tensor&) { CUDL_THROW("CudaBackend::copy: not implemented yet"); }
void CudaBackend::axpy(Context&, float, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::axpy: not implemented yet");
}
void CudaBackend::scale(Context&, Tensor&, float) { CUDL_THROW("CudaBackend::scale: not implemented yet"); }
void CudaBackend::fill_uniform(Context&, Tensor&, float, float, std::uint64_t, std::uint64_t) {
  CUDL_THROW("CudaBackend::fill_uniform: not implemented yet");
}
void CudaBackend::fill_normal(Context&, Tensor&, float, float, std::uint64_t, std::uint64_t) {
  CUDL_THROW("CudaBackend::fill_normal: not implemented yet");
}

}  // namespace cudl
