#pragma once
// The CPU backend: every op, OpenMP-parallel loops and OpenBLAS GEMMs. Always built; the
// reference the CUDA backend is tested against. Definitions are split by op family across
// kernels/cpu/*.cpp.
#include "cudl/engine/backend.hpp"

namespace cudl {

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override;

 protected:
  ConstantHold do_hold_constant(Context& ctx, const Tensor& t) override;
  bool do_takes_channels_last(std::string_view op) const override;
  MemoryFormat do_preferred_conv_format(const Context& ctx, DType dtype) const override;
  void do_convert_format(Context& ctx, const Tensor& src, Tensor& dst) override;
  void do_gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
               Tensor& c) override;
  void do_bias_add(Context& ctx, Tensor& y, const Tensor& bias) override;
  void do_bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate) override;
  void do_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) override;
  void do_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                               Tensor& dx) override;
  void do_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                 bool accumulate) override;
  void do_conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                   const Conv2dParams& p, Tensor& y) override;
  void do_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const BatchNormEval& bn,
                            const Conv2dParams& p, const Tensor& residual, bool relu, Tensor& y) override;
  void do_linear_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                   Tensor& y) override;
  void do_activation_forward(Context& ctx, Activation a, float alpha, const Tensor& x, Tensor& y) override;
  void do_activation_backward(Context& ctx, Activation a, float alpha, const Tensor& x, const Tensor& y,
                              const Tensor& dy, Tensor& dx) override;
  void do_maxpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) override;
  void do_maxpool2d_backward(Context& ctx, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p,
                             Tensor& dx) override;
  void do_avgpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y) override;
  void do_avgpool2d_backward(Context& ctx, const Tensor& dy, const Pool2dParams& p, Tensor& dx) override;
  void do_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) override;
  void do_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void do_log_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) override;
  void do_log_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void do_softmax_cross_entropy_forward(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& probs,
                                        Tensor& loss) override;
  void do_softmax_cross_entropy_backward(Context& ctx, const Tensor& probs, const Tensor& labels, float dloss,
                                         Tensor& dlogits) override;
  void do_gram_forward(Context& ctx, const Tensor& x, Tensor& g) override;
  void do_gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx) override;
  void do_mse_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) override;
  void do_mse_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) override;
  void do_l1_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) override;
  void do_l1_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) override;
  void do_tv_loss_forward(Context& ctx, const Tensor& x, float beta, Tensor& loss) override;
  void do_tv_loss_backward(Context& ctx, const Tensor& x, float beta, float dloss, Tensor& dx,
                           bool accumulate) override;
  void do_dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset, Tensor& y,
                          Tensor& mask) override;
  void do_dropout_forward_counted(Context& ctx, const Tensor& x, float p, std::uint64_t seed, Tensor& counter,
                                  std::uint64_t offset, std::uint64_t advance, Tensor& y, Tensor& mask) override;
  void do_mul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) override;
  void do_sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf) override;
  void do_adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m,
                    Tensor& v) override;
  void do_sum(Context& ctx, const Tensor& x, Tensor& out) override;
  void do_mean(Context& ctx, const Tensor& x, Tensor& out) override;
  void do_max(Context& ctx, const Tensor& x, Tensor& out) override;
  void do_argmax_rows(Context& ctx, const Tensor& x, Tensor& out) override;
  void do_accuracy(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& out) override;
  void do_top_k(Context& ctx, const Tensor& x, Tensor& indices, Tensor& values) override;
  void do_match_histograms(Context& ctx, const Tensor& source, const Tensor& reference, Tensor& out) override;
  void do_fill(Context& ctx, Tensor& x, float value) override;
  void do_copy(Context& ctx, const Tensor& src, Tensor& dst) override;
  void do_axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y) override;
  void do_scale(Context& ctx, Tensor& x, float alpha) override;
  void do_channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) override;
  void do_channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx) override;
  void do_batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                                  float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y,
                                  Tensor& save_mean, Tensor& save_invstd) override;
  void do_batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                 const Tensor& running_mean, const Tensor& running_var, float eps, Tensor& y) override;
  void do_batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                             const Tensor& save_mean, const Tensor& save_invstd, float eps, Tensor& dx, Tensor& dgamma,
                             Tensor& dbeta) override;
  void do_batchnorm_relu_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                       float eps, float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y,
                                       Tensor& save_mean, Tensor& save_invstd) override;
  void do_batchnorm_relu_backward(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                                  const Tensor& save_mean, const Tensor& save_invstd, float eps, Tensor& dx,
                                  Tensor& dgamma, Tensor& dbeta) override;
  void do_cast(Context& ctx, const Tensor& src, Tensor& dst) override;
  void do_dot(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) override;
  void do_clamp(Context& ctx, Tensor& x, float low, float high) override;
  void do_axpy_scalar(Context& ctx, float sign, const Tensor& alpha, const Tensor& x, Tensor& y) override;
  void do_abs_sum(Context& ctx, const Tensor& x, Tensor& out) override;
  void do_scalar_op(Context& ctx, ScalarOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void do_fill_uniform(Context& ctx, Tensor& x, float low, float high, std::uint64_t seed,
                       std::uint64_t offset) override;
  void do_fill_normal(Context& ctx, Tensor& x, float mean, float stddev, std::uint64_t seed,
                      std::uint64_t offset) override;
  void do_gather_rows(Context& ctx, const Tensor& src, const Tensor& index, Tensor& out) override;
};

}  // namespace cudl
