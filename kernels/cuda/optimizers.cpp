// CudaBackend: the fused SGD and Adam steps. Kernels in kernels/cuda/optimizers.cu; CPU twin
// kernels/cpu/optimizers.cpp. Arguments were checked by the Backend front.
#include <cmath>

#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::stream_of;

void CudaBackend::do_sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad,
                              Tensor& momentum_buf) {
  // Without momentum the buffer is not read and may be undefined.
  float* buf = p.momentum > 0.0f ? momentum_buf.data<float>() : nullptr;
  cuda_detail::launch_sgd_step(param.data<float>(), grad.data<float>(), buf, param.numel(), p.lr, p.momentum,
                               p.dampening, p.weight_decay, p.nesterov, stream_of(ctx));
}

void CudaBackend::do_adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m,
                               Tensor& v) {
  // The CPU's constants, bias corrections in double (beta2^t stays accurate for large t).
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const auto step_size = static_cast<float>(p.lr / bc1);
  const auto inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float l2 = p.decoupled_weight_decay ? 0.0f : p.weight_decay;
  const float shrink = p.decoupled_weight_decay ? 1.0f - p.lr * p.weight_decay : 1.0f;
  cuda_detail::launch_adam_step(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                                param.numel(), p.beta1, p.beta2, p.eps, l2, shrink, step_size, inv_sqrt_bc2,
                                stream_of(ctx));
}

}  // namespace cudl
