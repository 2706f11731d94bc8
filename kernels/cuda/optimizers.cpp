// CudaBackend: the fused SGD and Adam steps. Kernels in kernels/cuda/optimizers.cu; CPU twin
// kernels/cpu/optimizers.cpp. Arguments were checked by the Backend front.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::stream_of;

void CudaBackend::do_sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad,
                              Tensor& momentum_buf) {
  // Without momentum the buffer is not read and may be undefined.
  float* buf = p.momentum > 0.0f ? momentum_buf.data<float>() : nullptr;
  // With p.scalars the kernel reads the learning rate on the device (a replayed graph's launch
  // keeps its arguments); p.lr is then not used.
  const float* scalars = p.scalars.defined() ? p.scalars.data<float>() : nullptr;
  cuda_detail::launch_sgd_step(param.data<float>(), grad.data<float>(), buf, param.numel(), p.lr, p.momentum,
                               p.dampening, p.weight_decay, p.nesterov, scalars, stream_of(ctx));
}

void CudaBackend::do_adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m,
                               Tensor& v) {
  // The CPU's constants (optimizer_scalars: bias corrections in double), as kernel arguments, or
  // read on the device from p.scalars, which the host filled with the same function.
  const float l2 = p.decoupled_weight_decay ? 0.0f : p.weight_decay;
  const float* scalars = p.scalars.defined() ? p.scalars.data<float>() : nullptr;
  OptimizerStepValues s;
  if (!scalars) s = optimizer_scalars(p);
  cuda_detail::launch_adam_step(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                                param.numel(), p.beta1, p.beta2, p.eps, l2, s.v[kOptAdamShrink], s.v[kOptAdamStepSize],
                                s.v[kOptAdamInvSqrtBc2], scalars, stream_of(ctx));
}

}  // namespace cudl
