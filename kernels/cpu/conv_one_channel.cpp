// The forward convolution of a one-channel image (a grayscale network's first layer, MNIST's
// conv1) into a channels_last output: each output pixel is R*S taps, each a scalar times a row of
// K weights, so the loop runs over K in vectors and writes one contiguous NHWC row per pixel.
// oneDNN has no NHWC half kernel for one input channel: it writes a blocked layout and reorders it
// (measured, mnist_cnn bf16 batch 128 on the 2-core AMX VM: 0.8-0.9 ms for the convolution and
// 1.3 ms for the reorder per forward, ONEDNN_VERBOSE).
#include "cudl/kernels/cpu/conv_one_channel.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cudl/engine/half.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl::cpu {

namespace {

struct Geometry {
  std::int64_t h, w, p, q, k, r, s;
  Conv2dParams prm;
};

// The first and one-past-last output column whose tap at kernel column `s` reads inside the row.
std::int64_t first_column(const Geometry& g, std::int64_t s) {
  const std::int64_t off = g.prm.pad_w - s * g.prm.dilation_w;  // ow*stride must reach this
  return off <= 0 ? 0 : std::min(g.q, (off + g.prm.stride_w - 1) / g.prm.stride_w);
}
std::int64_t end_column(const Geometry& g, std::int64_t s) {
  const std::int64_t off = g.w - 1 + g.prm.pad_w - s * g.prm.dilation_w;  // ow*stride must not pass this
  return off < 0 ? 0 : std::min(g.q, off / g.prm.stride_w + 1);
}

// One output row (n, oh) into acc [Q, K] f32: taps in row-major order, each adding x * wt[tap]
// to every pixel it reaches (a contiguous run of K per pixel), then + bias, ReLU and one rounding
// of the whole row into y.
template <class T>
CUDL_CPU_CLONES void output_row(const T* x, const float* wt, const float* bias, bool relu, const Geometry& g,
                                std::int64_t oh, float* __restrict acc, T* __restrict y) {
  const std::int64_t k = g.k, row = g.q * g.k;
  for (std::int64_t i = 0; i < row; ++i) acc[i] = 0.0f;
  for (std::int64_t r = 0; r < g.r; ++r) {
    const std::int64_t ih = oh * g.prm.stride_h - g.prm.pad_h + r * g.prm.dilation_h;
    if (ih < 0 || ih >= g.h) continue;
    const T* xr = x + ih * g.w;
    for (std::int64_t s = 0; s < g.s; ++s) {
      const float* __restrict wrow = wt + (r * g.s + s) * k;
      const std::int64_t shift = s * g.prm.dilation_w - g.prm.pad_w;
      for (std::int64_t ow = first_column(g, s), end = end_column(g, s); ow < end; ++ow) {
        const float v = load(xr[ow * g.prm.stride_w + shift]);
        float* __restrict a = acc + ow * k;
        for (std::int64_t j = 0; j < k; ++j) a[j] += v * wrow[j];
      }
    }
  }
  if (bias != nullptr)
    for (std::int64_t ow = 0; ow < g.q; ++ow)
      for (std::int64_t j = 0; j < k; ++j) acc[ow * k + j] += bias[j];
  if (relu)
    for (std::int64_t i = 0; i < row; ++i) acc[i] = acc[i] > 0.0f ? acc[i] : 0.0f;
  for (std::int64_t i = 0; i < row; ++i) y[i] = store<T>(acc[i]);
}

// The same row when K is a multiple of kLanes: pixel by pixel, each block of kLanes channels summed
// over all the taps in registers (the row buffer above reads and writes its sums once per tap).
constexpr std::int64_t kLanes = 32;

template <class T>
CUDL_CPU_CLONES void output_row_blocked(const T* x, const float* wt, const float* bias, bool relu, const Geometry& g,
                                        std::int64_t oh, T* __restrict y) {
  const std::int64_t k = g.k;
  for (std::int64_t ow = 0; ow < g.q; ++ow) {
    for (std::int64_t k0 = 0; k0 < k; k0 += kLanes) {
      float acc[kLanes] = {};
      for (std::int64_t r = 0; r < g.r; ++r) {
        const std::int64_t ih = oh * g.prm.stride_h - g.prm.pad_h + r * g.prm.dilation_h;
        if (ih < 0 || ih >= g.h) continue;
        const T* xr = x + ih * g.w;
        for (std::int64_t s = 0; s < g.s; ++s) {
          const std::int64_t iw = ow * g.prm.stride_w - g.prm.pad_w + s * g.prm.dilation_w;
          if (iw < 0 || iw >= g.w) continue;
          const float v = load(xr[iw]);
          const float* __restrict wrow = wt + (r * g.s + s) * k + k0;
          for (std::int64_t j = 0; j < kLanes; ++j) acc[j] += v * wrow[j];
        }
      }
      T* out = y + ow * k + k0;
      for (std::int64_t j = 0; j < kLanes; ++j) {
        float v = acc[j] + (bias != nullptr ? bias[k0 + j] : 0.0f);
        if (relu) v = v > 0.0f ? v : 0.0f;
        out[j] = store<T>(v);
      }
    }
  }
}

}  // namespace

bool one_channel_conv_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p, bool relu,
                              Tensor& y) {
  if (x.dim(1) != 1 || p.groups != 1 || !y.channels_last() || y.numel() == 0) return false;
  const Geometry g{x.dim(2), x.dim(3), y.dim(2), y.dim(3), y.dim(1), w.dim(2), w.dim(3), p};
  // The weights as [R*S, K] f32: one row of K per tap.
  const std::int64_t taps = g.r * g.s;
  std::vector<float> wt(static_cast<std::size_t>(taps * g.k));
  dispatch_float(w.dtype(), "conv2d_forward", [&](auto tag) {
    using T = decltype(tag);
    const T* pw = w.data<T>();
    for (std::int64_t k = 0; k < g.k; ++k)
      for (std::int64_t t = 0; t < taps; ++t) wt[static_cast<std::size_t>(t * g.k + k)] = load(pw[k * taps + t]);
  });
  const float* pb = bias.defined() ? bias.data<float>() : nullptr;
  const std::int64_t rows = y.dim(0) * g.p;
  dispatch_float(x.dtype(), "conv2d_forward", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();  // one channel: NCHW and NHWC are the same bytes
    T* py = y.data<T>();
#pragma omp parallel if (y.numel() * taps >= kParallelThreshold)
    {
      std::vector<float> acc(static_cast<std::size_t>(g.q * g.k));  // one output row, per thread
#pragma omp for schedule(static)
      for (std::int64_t row = 0; row < rows; ++row) {
        const std::int64_t n = row / g.p, oh = row % g.p;
        if (g.k % kLanes == 0)
          output_row_blocked(px + n * g.h * g.w, wt.data(), pb, relu, g, oh, py + row * g.q * g.k);
        else
          output_row(px + n * g.h * g.w, wt.data(), pb, relu, g, oh, acc.data(), py + row * g.q * g.k);
      }
    }
  });
  return true;
}

}  // namespace cudl::cpu
