#pragma once
// The pieces the CPU's NCHW batch-norm kernels (normalization.cpp) and its channels_last ones
// (normalization_nhwc.cpp) share, so that both formats compute each value with the same
// expression and give the same bits: the per-channel statistics of training, the fused ReLU's
// mask, and the backward kernel's view of its tensors.
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cudl/engine/half.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl::cpu {

// What batch-norm training keeps per channel once that channel's sums are in: the mean and
// invstd it normalises with (double), the saved ones backward reads (f32), and the running ones.
class TrainStats {
 public:
  TrainStats(std::int64_t channels, double count, float eps, float momentum, Tensor& running_mean, Tensor& running_var,
             Tensor& save_mean, Tensor& save_invstd)
      : mean_(static_cast<std::size_t>(channels)),
        invstd_(mean_.size()),
        count_(count),
        eps_(eps),
        momentum_(momentum),
        running_mean_(running_mean.data<float>()),
        running_var_(running_var.data<float>()),
        save_mean_(save_mean.data<float>()),
        save_invstd_(save_invstd.data<float>()) {}

  // Channel c from its mean m and its sum of squared deviations ss. Channels are independent:
  // threads may set different ones at once.
  void set(std::int64_t c, double m, double ss) {
    const double var = ss / count_;  // biased: what the batch is normalised with
    const double inv = 1.0 / std::sqrt(var + static_cast<double>(eps_));
    const auto uc = static_cast<std::size_t>(c);
    mean_[uc] = m;
    invstd_[uc] = inv;
    save_mean_[c] = static_cast<float>(m);
    save_invstd_[c] = static_cast<float>(inv);
    const double mom = momentum_;
    running_mean_[c] = static_cast<float>((1.0 - mom) * running_mean_[c] + mom * m);
    running_var_[c] = static_cast<float>((1.0 - mom) * running_var_[c] + mom * var * count_ / (count_ - 1.0));
  }

  const double* mean() const { return mean_.data(); }
  const double* invstd() const { return invstd_.data(); }

 private:
  std::vector<double> mean_, invstd_;
  double count_;
  float eps_, momentum_;
  float *running_mean_, *running_var_, *save_mean_, *save_invstd_;
};

// dy where the ReLU's output y is positive, else +0 (what ReLU's backward gives whatever dy holds,
// inf and NaN included), without a branch: a layer's output signs are close to random, and a
// mispredicted branch per value made the fused backward slower than the two passes it replaces.
inline float relu_masked(float g, float y) {
  const std::uint32_t keep = 0u - static_cast<std::uint32_t>(y > 0.0f);
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(g) & keep);
}

// The gradient that batch norm's backward reads at i: dy, masked by the fused ReLU's output y
// with Relu (y is not read without).
template <bool Relu, class T>
float grad_at(const T* dy, [[maybe_unused]] const T* y, std::int64_t i) {
  const float g = load(dy[i]);
  if constexpr (Relu) return relu_masked(g, load(y[i]));
  return g;
}

// The tensors of a batch-norm backward call as typed pointers (backward_ptrs below).
template <class T>
struct BackwardPtrs {
  const T* x;
  const T* dy;
  const T* y;  // the fused forward's output, null without the ReLU
  const float* gamma;
  const float* mean;    // save_mean
  const float* invstd;  // save_invstd
  T* dx;
  float* dgamma;
  float* dbeta;
};

// With Relu, y is the fused forward's output (dy counts only where y > 0); without, y is not read
// and may be undefined.
template <class T, bool Relu>
BackwardPtrs<T> backward_ptrs(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                              const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                              Tensor& dbeta) {
  return {x.data<T>(),
          dy.data<T>(),
          Relu ? y.data<T>() : nullptr,
          gamma.data<float>(),
          save_mean.data<float>(),
          save_invstd.data<float>(),
          dx.data<T>(),
          dgamma.data<float>(),
          dbeta.data<float>()};
}

}  // namespace cudl::cpu
