// CudaBackend: the fused SGD and Adam steps. Kernels in kernels/cuda/optimizers.cu; CPU twin
// kernels/cpu/optimizers.cpp. Arguments were checked by the Backend front.
#include <cmath>

#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/launch.hpp"
#include "kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::stream_of;

void CudaBackend::do_sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad,
                              Tensor& momentum_buf) {
  // Without momentum the buffer is not read and may be undefined.
  float* buf = p.momentum != 0.0f ? momentum_buf.data<float>() : nullptr;
  cuda_detail::launch_sgd_step(param.data<float>(), grad.data<float>(), buf, param.numel(), p.lr, p.momentum,
                               p.dampening, p.weight_decay, p.nesterov, stream_of(ctx));
}

void CudaBackend::do_adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m,
                               Tensor& v) {
  const double t = static_cast<double>(p.step);
  const float bias_correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), t));
  const float bias_correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), t));
  cuda_detail::launch_adam_step(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                                param.numel(), p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, p.decoupled_weight_decay,
                                bias_correction1, bias_correction2, stream_of(ctx));
}

}  // namespace cudl
