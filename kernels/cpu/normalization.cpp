// Per-channel ops over dim 1: the affine map used for input normalisation, and batch norm
// (training with batch statistics, evaluation with running ones, backward; training and backward
// also fused with the ReLU after it). OpenMP over
// channels; every per-channel sum runs in double in a fixed order, so results are deterministic.
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

#include "cudl/engine/channel_dims.hpp"
#include "cudl/kernels/cpu/batchnorm_parts.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/normalization_nhwc.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

// Calls f(c, plane) for every [inner]-long plane of channel c, n = 0..outer-1 in order.
template <class F>
void for_each_plane(const ChannelDims& d, std::int64_t c, F f) {
  for (std::int64_t n = 0; n < d.outer; ++n) f((n * d.channels + c) * d.inner);
}

// y = (x - mean) * mul + beta, with mul = gamma * invstd folded per channel; with Relu, y = max(that, 0)
// in the same pass. The ReLU is applied before the one rounding: v > 0 ? v : 0 then rounded gives the
// bits of rounding v then ReLU (a positive v rounds to a value >= +0, and +0 is what ReLU gives for
// anything else, NaN included), so the fused output is the unfused pair's exactly.
template <class T, bool Relu = false>
void normalise(const ChannelDims& d, const T* x, const float* gamma, const float* beta, const double* mean,
               const double* invstd, T* y) {
  const std::int64_t total = d.outer * d.channels * d.inner;
#pragma omp parallel for schedule(static) if (total >= kParallelThreshold)
  for (std::int64_t c = 0; c < d.channels; ++c) {
    const double mul = static_cast<double>(gamma[c]) * invstd[c];
    const double m = mean[c], b = beta[c];
    for_each_plane(d, c, [&](std::int64_t base) {
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const auto v = static_cast<float>((load(x[base + i]) - m) * mul + b);
        y[base + i] = store<T>(Relu ? (v > 0.0f ? v : 0.0f) : v);
      }
    });
  }
}

}  // namespace

void CpuBackend::do_channel_affine(Context&, const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y) {
  constexpr std::string_view op = "channel_affine";
  const ChannelDims d = channel_dims(op, "x", x);
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (x.channels_last()) return cpu::channel_affine_nhwc<T>(x, scale.data<float>(), shift.data<float>(), y);
    const T* px = x.data<T>();
    const float* ps = scale.data<float>();
    const float* pb = shift.data<float>();
    T* py = y.data<T>();  // may alias x: each element is read before it is written
    const std::int64_t planes = d.outer * d.channels;
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelThreshold)
    for (std::int64_t p = 0; p < planes; ++p) {
      const float s = ps[p % d.channels], b = pb[p % d.channels];
      const std::int64_t base = p * d.inner;
      for (std::int64_t i = 0; i < d.inner; ++i) py[base + i] = store<T>(load(px[base + i]) * s + b);
    }
  });
}

void CpuBackend::do_channel_affine_backward(Context&, const Tensor& dy, const Tensor& scale, Tensor& dx) {
  constexpr std::string_view op = "channel_affine_backward";
  const ChannelDims d = channel_dims(op, "dy", dy);
  cpu::dispatch_float(dy.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (dy.channels_last()) return cpu::channel_affine_nhwc<T>(dy, scale.data<float>(), nullptr, dx);
    const T* pdy = dy.data<T>();
    const float* ps = scale.data<float>();
    T* pdx = dx.data<T>();
    const std::int64_t planes = d.outer * d.channels;
#pragma omp parallel for schedule(static) if (dy.numel() >= kParallelThreshold)
    for (std::int64_t p = 0; p < planes; ++p) {
      const float s = ps[p % d.channels];
      const std::int64_t base = p * d.inner;
      for (std::int64_t i = 0; i < d.inner; ++i) pdx[base + i] = store<T>(load(pdy[base + i]) * s);
    }
  });
}

namespace {

template <class T, bool Relu>
void batchnorm_train(const ChannelDims& d, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                     float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                     Tensor& save_invstd) {
  const T* px = x.data<T>();
  const auto count = static_cast<double>(d.per_channel());
  cpu::TrainStats stats(d.channels, count, eps, momentum, running_mean, running_var, save_mean, save_invstd);
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelThreshold)
  for (std::int64_t c = 0; c < d.channels; ++c) {
    // Two passes (mean, then squared deviations): no cancellation for data far from zero.
    double s = 0;
    for_each_plane(d, c, [&](std::int64_t base) {
      for (std::int64_t i = 0; i < d.inner; ++i) s += load(px[base + i]);
    });
    const double m = s / count;
    double ss = 0;
    for_each_plane(d, c, [&](std::int64_t base) {
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const double dev = load(px[base + i]) - m;
        ss += dev * dev;
      }
    });
    stats.set(c, m, ss);
  }
  normalise<T, Relu>(d, px, gamma.data<float>(), beta.data<float>(), stats.mean(), stats.invstd(), y.data<T>());
}

// With x̂ = (x - mean) * invstd and m values per channel:
//   dbeta = Σ dy, dgamma = Σ dy x̂, dx = gamma * invstd / m * (m dy - dbeta - x̂ dgamma).
// Relu (y the fused forward's output): the gradient of relu(bn(x)), dy replaced by dy where
// y > 0 and 0 elsewhere as it is read, in both passes (ReLU's backward gives the same values:
// 0, not 0 * dy, where the unit is off).
template <class T, bool Relu>
void batchnorm_backward_kernel(const ChannelDims& d, const Tensor& x, const Tensor& y, const Tensor& dy,
                               const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx,
                               Tensor& dgamma, Tensor& dbeta) {
  const auto p = cpu::backward_ptrs<T, Relu>(x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  const auto count = static_cast<double>(d.per_channel());
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelThreshold)
  for (std::int64_t c = 0; c < d.channels; ++c) {
    const double m = p.mean[c], inv = p.invstd[c];
    double sum_dy = 0, sum_dy_xhat = 0;
    for_each_plane(d, c, [&](std::int64_t base) {
      const T* xs = p.x + base;
      const T* gs = p.dy + base;
      const T* ys = Relu ? p.y + base : nullptr;
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const float g = cpu::grad_at<Relu>(gs, ys, i);
        sum_dy += g;
        sum_dy_xhat += g * ((load(xs[i]) - m) * inv);
      }
    });
    const double k = static_cast<double>(p.gamma[c]) * inv / count;
    for_each_plane(d, c, [&](std::int64_t base) {
      const T* xs = p.x + base;
      const T* gs = p.dy + base;
      const T* ys = Relu ? p.y + base : nullptr;
      T* out = p.dx + base;
      for (std::int64_t i = 0; i < d.inner; ++i) {
        const float g = cpu::grad_at<Relu>(gs, ys, i);
        const double xhat = (load(xs[i]) - m) * inv;
        out[i] = store<T>(static_cast<float>(k * (count * g - sum_dy - xhat * sum_dy_xhat)));
      }
    });
    p.dgamma[c] = static_cast<float>(p.dgamma[c] + sum_dy_xhat);
    p.dbeta[c] = static_cast<float>(p.dbeta[c] + sum_dy);
  }
}

// Batch-norm training and backward, plain or fused with the ReLU after it, in either format:
// the dtype picks the kernel's T, x's format the kernel.
template <bool Relu>
void batchnorm_train_op(std::string_view op, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                        float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                        Tensor& save_invstd) {
  const ChannelDims d = channel_dims(op, "x", x);
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (x.channels_last())
      return cpu::batchnorm_train_nhwc<T, Relu>(x, gamma, beta, eps, momentum, running_mean, running_var, y, save_mean,
                                                save_invstd);
    batchnorm_train<T, Relu>(d, x, gamma, beta, eps, momentum, running_mean, running_var, y, save_mean, save_invstd);
  });
}

template <bool Relu>
void batchnorm_backward_op(std::string_view op, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                           const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                           Tensor& dbeta) {
  const ChannelDims d = channel_dims(op, "x", x);
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (x.channels_last())
      return cpu::batchnorm_backward_nhwc<T, Relu>(x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
    batchnorm_backward_kernel<T, Relu>(d, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  });
}

}  // namespace

void CpuBackend::do_batchnorm_forward_train(Context&, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                            float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                            Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  batchnorm_train_op<false>("batchnorm_forward_train", x, gamma, beta, eps, momentum, running_mean, running_var, y,
                            save_mean, save_invstd);
}

void CpuBackend::do_batchnorm_forward_eval(Context&, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                           const Tensor& running_mean, const Tensor& running_var, float eps,
                                           Tensor& y) {
  constexpr std::string_view op = "batchnorm_forward_eval";
  const ChannelDims d = channel_dims(op, "x", x);
  const float* prm = running_mean.data<float>();
  const float* prv = running_var.data<float>();
  std::vector<double> mean(static_cast<std::size_t>(d.channels)), invstd(mean.size());
  for (std::int64_t c = 0; c < d.channels; ++c) {
    const auto uc = static_cast<std::size_t>(c);
    mean[uc] = prm[c];
    invstd[uc] = 1.0 / std::sqrt(static_cast<double>(prv[c]) + static_cast<double>(eps));
  }
  cpu::dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (x.channels_last()) return cpu::batchnorm_eval_nhwc<T>(x, gamma, beta, mean.data(), invstd.data(), y);
    normalise(d, x.data<T>(), gamma.data<float>(), beta.data<float>(), mean.data(), invstd.data(), y.data<T>());
  });
}

void CpuBackend::do_batchnorm_backward(Context&, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                       const Tensor& save_mean, const Tensor& save_invstd, float /*eps*/, Tensor& dx,
                                       Tensor& dgamma, Tensor& dbeta) {
  batchnorm_backward_op<false>("batchnorm_backward", x, Tensor(), dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

void CpuBackend::do_batchnorm_relu_forward_train(Context&, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                 float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                                 Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  batchnorm_train_op<true>("batchnorm_relu_forward_train", x, gamma, beta, eps, momentum, running_mean, running_var, y,
                           save_mean, save_invstd);
}

void CpuBackend::do_batchnorm_relu_backward(Context&, const Tensor& x, const Tensor& y, const Tensor& dy,
                                            const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd,
                                            float /*eps*/, Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  batchnorm_backward_op<true>("batchnorm_relu_backward", x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

}  // namespace cudl
