// TEMPORARY: ops not yet implemented throw. Each op moves to its family file; this file is
// deleted before the backend is called done.
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {

void CpuBackend::gemm(Context&, bool, bool, float, const Tensor&, const Tensor&, float, Tensor&) {
  CUDL_THROW("CpuBackend::gemm: not implemented yet");
}
void CpuBackend::bias_add(Context&, Tensor&, const Tensor&) { CUDL_THROW("CpuBackend::bias_add: not implemented yet"); }
void CpuBackend::bias_grad(Context&, const Tensor&, Tensor&, bool) {
  CUDL_THROW("CpuBackend::bias_grad: not implemented yet");
}
void CpuBackend::conv2d_forward(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) {
  CUDL_THROW("CpuBackend::conv2d_forward: not implemented yet");
}
void CpuBackend::conv2d_backward_data(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) {
  CUDL_THROW("CpuBackend::conv2d_backward_data: not implemented yet");
}
void CpuBackend::conv2d_backward_filter(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&, bool) {
  CUDL_THROW("CpuBackend::conv2d_backward_filter: not implemented yet");
}
void CpuBackend::maxpool2d_forward(Context&, const Tensor&, const Pool2dParams&, Tensor&, Tensor&) {
  CUDL_THROW("CpuBackend::maxpool2d_forward: not implemented yet");
}
void CpuBackend::maxpool2d_backward(Context&, const Tensor&, const Tensor&, const Pool2dParams&, Tensor&) {
  CUDL_THROW("CpuBackend::maxpool2d_backward: not implemented yet");
}
void CpuBackend::avgpool2d_forward(Context&, const Tensor&, const Pool2dParams&, Tensor&) {
  CUDL_THROW("CpuBackend::avgpool2d_forward: not implemented yet");
}
void CpuBackend::avgpool2d_backward(Context&, const Tensor&, const Pool2dParams&, Tensor&) {
  CUDL_THROW("CpuBackend::avgpool2d_backward: not implemented yet");
}

}  // namespace cudl
