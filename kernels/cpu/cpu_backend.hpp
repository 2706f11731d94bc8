#pragma once
// The CPU backend: every op, OpenMP-parallel loops and OpenBLAS GEMMs. Always built; the
// reference the CUDA backend is tested against. Definitions are split by op family across
// kernels/cpu/*.cpp.
#include "engine/backend.hpp"

namespace cudl {

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override;
  void gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
            Tensor& c) override;
  void bias_add(Context& ctx, Tensor& y, const Tensor& bias) override;
  void bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate) override;
  void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) override;
  void conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                            Tensor& dx) override;
  void conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                              bool accumulate) override;
  void activation_forward(Context& ctx, Activation a, float alpha, const Tensor& x, Tensor& y) override;
  void activation_backward(Context& ctx, Activation a, float alpha, const Tensor& x, const Tensor& y, const Tensor& dy,
                           Tensor& dx) override;
  void maxpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) override;
  void maxpool2d_backward(Context& ctx, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p,
                          Tensor& dx) override;
  void avgpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y) override;
  void avgpool2d_backward(Context& ctx, const Tensor& dy, const Pool2dParams& p, Tensor& dx) override;
  void softmax_forward(Context& ctx, const Tensor& x, Tensor& y) override;
  void softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void log_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) override;
  void log_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void softmax_cross_entropy_forward(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& probs,
                                     Tensor& loss) override;
  void softmax_cross_entropy_backward(Context& ctx, const Tensor& probs, const Tensor& labels, float dloss,
                                      Tensor& dlogits) override;
  void gram_forward(Context& ctx, const Tensor& x, Tensor& g) override;
  void gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx) override;
  void mse_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) override;
  void mse_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) override;
  void l1_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) override;
  void l1_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) override;
  void tv_loss_forward(Context& ctx, const Tensor& x, Tensor& loss) override;
  void tv_loss_backward(Context& ctx, const Tensor& x, float dloss, Tensor& dx, bool accumulate) override;
  void dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset, Tensor& y,
                       Tensor& mask) override;
  void mul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) override;
  void sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf) override;
  void adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v) override;
  void sum(Context& ctx, const Tensor& x, Tensor& out) override;
  void mean(Context& ctx, const Tensor& x, Tensor& out) override;
  void max(Context& ctx, const Tensor& x, Tensor& out) override;
  void argmax_rows(Context& ctx, const Tensor& x, Tensor& out) override;
  void accuracy(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& out) override;
  void fill(Context& ctx, Tensor& x, float value) override;
  void copy(Context& ctx, const Tensor& src, Tensor& dst) override;
  void axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y) override;
  void scale(Context& ctx, Tensor& x, float alpha) override;
  void fill_uniform(Context& ctx, Tensor& x, float low, float high, std::uint64_t seed, std::uint64_t offset) override;
  void fill_normal(Context& ctx, Tensor& x, float mean, float stddev, std::uint64_t seed,
                   std::uint64_t offset) override;
  void channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) override;
  void channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx) override;
  void batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                               float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                               Tensor& save_invstd) override;
  void batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var, float eps, Tensor& y) override;
  void batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                          const Tensor& save_invstd, Tensor& dx, Tensor& dgamma, Tensor& dbeta) override;
  void dot(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) override;
  void clamp(Context& ctx, Tensor& x, float low, float high) override;
  void axpy_scalar(Context& ctx, float sign, const Tensor& alpha, const Tensor& x, Tensor& y) override;
  void abs_sum(Context& ctx, const Tensor& x, Tensor& out) override;
  void scalar_op(Context& ctx, ScalarOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
};

}  // namespace cudl
