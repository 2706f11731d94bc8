// TEMPORARY: ops not yet implemented throw. Each op moves to its family file; this file is
// deleted before the backend is called done.
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {

void CpuBackend::activation_forward(Context&, Activation, float, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::activation_forward: not implemented yet");
}
void CpuBackend::activation_backward(Context&, Activation, float, const Tensor&, const Tensor&, const Tensor&,
                                     Tensor&) {
  CUDL_THROW("CpuBackend::activation_backward: not implemented yet");
}
void CpuBackend::softmax_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::softmax_forward: not implemented yet");
}
void CpuBackend::softmax_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::softmax_backward: not implemented yet");
}
void CpuBackend::log_softmax_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::log_softmax_forward: not implemented yet");
}
void CpuBackend::log_softmax_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::log_softmax_backward: not implemented yet");
}
void CpuBackend::softmax_cross_entropy_forward(Context&, const Tensor&, const Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::softmax_cross_entropy_forward: not implemented yet");
}
void CpuBackend::softmax_cross_entropy_backward(Context&, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CpuBackend::softmax_cross_entropy_backward: not implemented yet");
}
void CpuBackend::gram_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::gram_forward: not implemented yet");
}
void CpuBackend::gram_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::gram_backward: not implemented yet");
}
void CpuBackend::mse_loss_forward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::mse_loss_forward: not implemented yet");
}
void CpuBackend::mse_loss_backward(Context&, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CpuBackend::mse_loss_backward: not implemented yet");
}
void CpuBackend::l1_loss_forward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::l1_loss_forward: not implemented yet");
}
void CpuBackend::l1_loss_backward(Context&, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CpuBackend::l1_loss_backward: not implemented yet");
}
void CpuBackend::tv_loss_forward(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::tv_loss_forward: not implemented yet");
}
void CpuBackend::tv_loss_backward(Context&, const Tensor&, float, Tensor&, bool) {
  CUDL_THROW("CpuBackend::tv_loss_backward: not implemented yet");
}
void CpuBackend::dropout_forward(Context&, const Tensor&, float, std::uint64_t, std::uint64_t, Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::dropout_forward: not implemented yet");
}
void CpuBackend::mul(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::mul: not implemented yet");
}
void CpuBackend::sgd_step(Context&, const SgdParams&, Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::sgd_step: not implemented yet");
}
void CpuBackend::adam_step(Context&, const AdamParams&, Tensor&, const Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::adam_step: not implemented yet");
}
void CpuBackend::sum(Context&, const Tensor&, Tensor&) { CUDL_THROW("CpuBackend::sum: not implemented yet"); }
void CpuBackend::mean(Context&, const Tensor&, Tensor&) { CUDL_THROW("CpuBackend::mean: not implemented yet"); }
void CpuBackend::max(Context&, const Tensor&, Tensor&) { CUDL_THROW("CpuBackend::max: not implemented yet"); }
void CpuBackend::argmax_rows(Context&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::argmax_rows: not implemented yet");
}
void CpuBackend::accuracy(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::accuracy: not implemented yet");
}
void CpuBackend::fill(Context&, Tensor&, float) { CUDL_THROW("CpuBackend::fill: not implemented yet"); }
void CpuBackend::copy(Context&, const Tensor&, Tensor&) { CUDL_THROW("CpuBackend::copy: not implemented yet"); }
void CpuBackend::axpy(Context&, float, const Tensor&, Tensor&) { CUDL_THROW("CpuBackend::axpy: not implemented yet"); }
void CpuBackend::scale(Context&, Tensor&, float) { CUDL_THROW("CpuBackend::scale: not implemented yet"); }
void CpuBackend::fill_uniform(Context&, Tensor&, float, float, std::uint64_t, std::uint64_t) {
  CUDL_THROW("CpuBackend::fill_uniform: not implemented yet");
}
void CpuBackend::fill_normal(Context&, Tensor&, float, float, std::uint64_t, std::uint64_t) {
  CUDL_THROW("CpuBackend::fill_normal: not implemented yet");
}

}  // namespace cudl
