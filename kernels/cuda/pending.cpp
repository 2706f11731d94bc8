// TEMPORARY: ops not yet implemented throw; this file is deleted when they land.
#include "kernels/cuda/cuda_backend.hpp"

namespace cudl {

void CudaBackend::channel_affine(Context&, const Tensor&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::channel_affine: not implemented yet");
}
void CudaBackend::channel_affine_backward(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::channel_affine_backward: not implemented yet");
}
void CudaBackend::batchnorm_forward_train(Context&, const Tensor&, const Tensor&, const Tensor&, float, float, Tensor&,
                                          Tensor&, Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::batchnorm_forward_train: not implemented yet");
}
void CudaBackend::batchnorm_forward_eval(Context&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, float, Tensor&) {
  CUDL_THROW("CudaBackend::batchnorm_forward_eval: not implemented yet");
}
void CudaBackend::batchnorm_backward(Context&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, Tensor&, Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::batchnorm_backward: not implemented yet");
}
void CudaBackend::dot(Context&, const Tensor&, const Tensor&, Tensor&) {
  CUDL_THROW("CudaBackend::dot: not implemented yet");
}
void CudaBackend::clamp(Context&, Tensor&, float, float) { CUDL_THROW("CudaBackend::clamp: not implemented yet"); }

}  // namespace cudl
