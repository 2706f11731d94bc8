#pragma once
// Batch norm and the per-channel affine map on channels_last tensors (kernels/cpu/
// normalization_nhwc.cpp): the same results, bit for bit, as the NCHW kernels in
// kernels/cpu/normalization.cpp, which call these when x is channels_last.
#include "cudl/engine/half.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl::cpu {

template <class T, bool Relu>
void batchnorm_train_nhwc(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, float momentum,
                          Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean, Tensor& save_invstd);
// mean and invstd: per channel, from the running statistics.
template <class T>
void batchnorm_eval_nhwc(const Tensor& x, const Tensor& gamma, const Tensor& beta, const double* mean,
                         const double* invstd, Tensor& y);
// Relu: y is the fused forward's output, and dy counts only where y > 0.
template <class T, bool Relu>
void batchnorm_backward_nhwc(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                             const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                             Tensor& dbeta);
// y = x * scale[c] (+ shift[c] unless shift is null).
template <class T>
void channel_affine_nhwc(const Tensor& x, const float* scale, const float* shift, Tensor& y);

}  // namespace cudl::cpu
