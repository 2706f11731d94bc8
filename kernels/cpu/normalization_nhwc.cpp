// Batch norm and the per-channel affine map on channels_last tensors: the channel is the
// contiguous dimension, so each row (one pixel of one sample) is a vector over C. The per-channel
// sums visit the values of a channel in the NCHW kernels' order (sample by sample, pixel by pixel,
// kernels/cpu/normalization.cpp), so every result is the same bits in either format. OpenMP over
// blocks of channels for the sums (each thread owns its channels' sums, and the order within a
// channel never depends on the thread count), over rows for the elementwise passes.
#include "cudl/kernels/cpu/normalization_nhwc.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "cudl/kernels/cpu/batchnorm_parts.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"

namespace cudl::cpu {

namespace {

// Channels per block of the sums: small enough that ResNet's 64-channel layers split across the
// threads, while a block's sums stay in registers as the rows stream by.
constexpr std::int64_t kChannelBlock = 16;

struct Rows {
  std::int64_t rows, channels;  // N*H*W rows of C values
};

Rows rows_of(const Tensor& x) { return {x.dim(0) * x.dim(2) * x.dim(3), x.dim(1)}; }

// f(c0, c1) for each block [c0, c1) of channels, in parallel when there is enough work.
template <class F>
void for_channel_blocks(const Rows& r, F f) {
  const std::int64_t blocks = (r.channels + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (r.rows * r.channels >= kParallelThreshold && blocks > 1)
  for (std::int64_t b = 0; b < blocks; ++b) f(b * kChannelBlock, std::min(r.channels, (b + 1) * kChannelBlock));
}

// f(row) for every row, in parallel when there is enough work (elementwise passes: no order).
template <class F>
void for_rows(const Rows& r, F f) {
#pragma omp parallel for schedule(static) if (r.rows * r.channels >= kParallelThreshold)
  for (std::int64_t row = 0; row < r.rows; ++row) f(row);
}

// y = (x - mean) * gamma * invstd + beta per channel, with Relu max(that, 0) before the one rounding
// (the NCHW kernel's formula and order of operations).
template <class T, bool Relu>
void normalise_rows(const Rows& r, const T* x, const float* gamma, const float* beta, const double* mean,
                    const double* invstd, T* y) {
  std::vector<double> mul(static_cast<std::size_t>(r.channels));
  for (std::int64_t c = 0; c < r.channels; ++c)
    mul[static_cast<std::size_t>(c)] = static_cast<double>(gamma[c]) * invstd[c];
  const double* pm = mul.data();
  for_rows(r, [&](std::int64_t row) {
    const T* xs = x + row * r.channels;
    T* ys = y + row * r.channels;
    for (std::int64_t c = 0; c < r.channels; ++c) {
      const auto v = static_cast<float>((load(xs[c]) - mean[c]) * pm[c] + static_cast<double>(beta[c]));
      ys[c] = store<T>(Relu ? (v > 0.0f ? v : 0.0f) : v);
    }
  });
}

}  // namespace

template <class T, bool Relu>
void batchnorm_train_nhwc(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, float momentum,
                          Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                          Tensor& save_invstd) {
  const Rows r = rows_of(x);
  const T* px = x.data<T>();
  const auto count = static_cast<double>(r.rows);
  TrainStats stats(r.channels, count, eps, momentum, running_mean, running_var, save_mean, save_invstd);
  for_channel_blocks(r, [&](std::int64_t c0, std::int64_t c1) {
    // Two passes (mean, then squared deviations), as the NCHW kernel.
    double s[kChannelBlock] = {}, ss[kChannelBlock] = {}, m[kChannelBlock];
    for (std::int64_t row = 0; row < r.rows; ++row) {
      const T* xs = px + row * r.channels + c0;
      for (std::int64_t j = 0; j < c1 - c0; ++j) s[j] += load(xs[j]);
    }
    for (std::int64_t j = 0; j < c1 - c0; ++j) m[j] = s[j] / count;
    for (std::int64_t row = 0; row < r.rows; ++row) {
      const T* xs = px + row * r.channels + c0;
      for (std::int64_t j = 0; j < c1 - c0; ++j) {
        const double dev = load(xs[j]) - m[j];
        ss[j] += dev * dev;
      }
    }
    for (std::int64_t c = c0; c < c1; ++c) stats.set(c, m[c - c0], ss[c - c0]);
  });
  normalise_rows<T, Relu>(r, px, gamma.data<float>(), beta.data<float>(), stats.mean(), stats.invstd(), y.data<T>());
}

template <class T>
void batchnorm_eval_nhwc(const Tensor& x, const Tensor& gamma, const Tensor& beta, const double* mean,
                         const double* invstd, Tensor& y) {
  normalise_rows<T, false>(rows_of(x), x.data<T>(), gamma.data<float>(), beta.data<float>(), mean, invstd, y.data<T>());
}

template <class T, bool Relu>
void batchnorm_backward_nhwc(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                             const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                             Tensor& dbeta) {
  const Rows r = rows_of(x);
  const auto p = backward_ptrs<T, Relu>(x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  const auto count = static_cast<double>(r.rows);
  const auto channels = static_cast<std::size_t>(r.channels);
  std::vector<double> sums(2 * channels), ks(channels);
  double* sum_dy = sums.data();
  double* sum_dy_xhat = sum_dy + channels;
  for_channel_blocks(r, [&](std::int64_t c0, std::int64_t c1) {
    const std::int64_t width = c1 - c0;
    double m[kChannelBlock], inv[kChannelBlock], s[kChannelBlock] = {}, sx[kChannelBlock] = {};
    for (std::int64_t j = 0; j < width; ++j) {
      m[j] = p.mean[c0 + j];
      inv[j] = p.invstd[c0 + j];
    }
    for (std::int64_t row = 0; row < r.rows; ++row) {
      const std::int64_t at = row * r.channels + c0;
      const T* xs = p.x + at;
      const T* gs = p.dy + at;
      const T* ys = Relu ? p.y + at : nullptr;
      for (std::int64_t j = 0; j < width; ++j) {
        const float g = grad_at<Relu>(gs, ys, j);
        s[j] += g;
        sx[j] += g * ((load(xs[j]) - m[j]) * inv[j]);
      }
    }
    for (std::int64_t j = 0; j < width; ++j) {
      sum_dy[c0 + j] = s[j];
      sum_dy_xhat[c0 + j] = sx[j];
      p.dgamma[c0 + j] = static_cast<float>(p.dgamma[c0 + j] + sx[j]);
      p.dbeta[c0 + j] = static_cast<float>(p.dbeta[c0 + j] + s[j]);
    }
  });
  for (std::int64_t c = 0; c < r.channels; ++c)
    ks[static_cast<std::size_t>(c)] = static_cast<double>(p.gamma[c]) * static_cast<double>(p.invstd[c]) / count;
  const double* k = ks.data();
  for_rows(r, [&](std::int64_t row) {
    const std::int64_t at = row * r.channels;
    const T* xs = p.x + at;
    const T* gs = p.dy + at;
    const T* ys = Relu ? p.y + at : nullptr;
    T* out = p.dx + at;
    for (std::int64_t c = 0; c < r.channels; ++c) {
      const float g = grad_at<Relu>(gs, ys, c);
      const double xhat = (load(xs[c]) - static_cast<double>(p.mean[c])) * static_cast<double>(p.invstd[c]);
      out[c] = store<T>(static_cast<float>(k[c] * (count * g - sum_dy[c] - xhat * sum_dy_xhat[c])));
    }
  });
}

template <class T>
void channel_affine_nhwc(const Tensor& x, const float* scale, const float* shift, Tensor& y) {
  const Rows r = rows_of(x);
  const T* px = x.data<T>();
  T* py = y.data<T>();  // may alias x: each element is read before it is written
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelThreshold)
  for (std::int64_t row = 0; row < r.rows; ++row) {
    const std::int64_t at = row * r.channels;
    if (shift == nullptr) {  // the backward map: no + 0, which would turn -0 into +0
      for (std::int64_t c = 0; c < r.channels; ++c) py[at + c] = store<T>(load(px[at + c]) * scale[c]);
    } else {
      for (std::int64_t c = 0; c < r.channels; ++c) py[at + c] = store<T>(load(px[at + c]) * scale[c] + shift[c]);
    }
  }
}

#define CUDL_NHWC_INSTANTIATE(T)                                                                                   \
  template void batchnorm_train_nhwc<T, false>(const Tensor&, const Tensor&, const Tensor&, float, float, Tensor&, \
                                               Tensor&, Tensor&, Tensor&, Tensor&);                                \
  template void batchnorm_train_nhwc<T, true>(const Tensor&, const Tensor&, const Tensor&, float, float, Tensor&,  \
                                              Tensor&, Tensor&, Tensor&, Tensor&);                                 \
  template void batchnorm_eval_nhwc<T>(const Tensor&, const Tensor&, const Tensor&, const double*, const double*,  \
                                       Tensor&);                                                                   \
  template void batchnorm_backward_nhwc<T, false>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,      \
                                                  const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&);        \
  template void batchnorm_backward_nhwc<T, true>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,       \
                                                 const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&);         \
  template void channel_affine_nhwc<T>(const Tensor&, const float*, const float*, Tensor&);
CUDL_NHWC_INSTANTIATE(float)
CUDL_NHWC_INSTANTIATE(bf16)
CUDL_NHWC_INSTANTIATE(f16)
#undef CUDL_NHWC_INSTANTIATE

}  // namespace cudl::cpu
