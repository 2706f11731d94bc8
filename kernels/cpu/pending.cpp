// TEMPORARY: ops not yet implemented throw; this file is deleted when they land.
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {

void CpuBackend::channel_affine(Context&, const Tensor&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::channel_affine: not implemented yet");
}
void CpuBackend::channel_affine_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::channel_affine_backward: not implemented yet");
}
void CpuBackend::batchnorm_forward_train(Context&, const Tensor&, const Tensor&, const Tensor&, float, float, Tensor&,
                                         Tensor&, Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::batchnorm_forward_train: not implemented yet");
}
void CpuBackend::batchnorm_forward_eval(Context&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        const Tensor&, float, Tensor&) {
  CUDL_THROW("CpuBackend::batchnorm_forward_eval: not implemented yet");
}
void CpuBackend::batchnorm_backward(Context&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::batchnorm_backward: not implemented yet");
}
void CpuBackend::dot(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::dot: not implemented yet");
}
void CpuBackend::clamp(Context&, Tensor&, float, float) { CUDL_THROW("CpuBackend::clamp: not implemented yet"); }

}  // namespace cudl
