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

// Output channels per pass over a pixel's taps: the sums of a block stay in vector registers.
constexpr std::int64_t kBlock = 64;

struct Geometry {
  std::int64_t h, w, p, q, k, r, s;
  Conv2dParams prm;
};

// One output row (n, oh): for each pixel, acc[k] = Σ_taps x · wt[tap][k] (taps in row-major
// order, f32), + bias, ReLU, one rounding into y's dtype.
template <class T>
CUDL_CPU_CLONES void output_row(const T* x, const float* wt, const float* bias, bool relu, const Geometry& g,
                                std::int64_t oh, T* y) {
  for (std::int64_t ow = 0; ow < g.q; ++ow) {
    T* out = y + ow * g.k;
    for (std::int64_t k0 = 0; k0 < g.k; k0 += kBlock) {
      const std::int64_t width = std::min(kBlock, g.k - k0);
      float acc[kBlock];
      for (std::int64_t j = 0; j < width; ++j) acc[j] = 0.0f;
      for (std::int64_t r = 0; r < g.r; ++r) {
        const std::int64_t ih = oh * g.prm.stride_h - g.prm.pad_h + r * g.prm.dilation_h;
        if (ih < 0 || ih >= g.h) continue;
        for (std::int64_t s = 0; s < g.s; ++s) {
          const std::int64_t iw = ow * g.prm.stride_w - g.prm.pad_w + s * g.prm.dilation_w;
          if (iw < 0 || iw >= g.w) continue;
          const float v = load(x[ih * g.w + iw]);
          const float* wrow = wt + (r * g.s + s) * g.k + k0;
          for (std::int64_t j = 0; j < width; ++j) acc[j] += v * wrow[j];
        }
      }
      if (bias != nullptr)
        for (std::int64_t j = 0; j < width; ++j) acc[j] += bias[k0 + j];
      if (relu)
        for (std::int64_t j = 0; j < width; ++j) acc[j] = acc[j] > 0.0f ? acc[j] : 0.0f;
      for (std::int64_t j = 0; j < width; ++j) out[k0 + j] = store<T>(acc[j]);
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
#pragma omp parallel for schedule(static) if (y.numel() * taps >= kParallelThreshold)
    for (std::int64_t row = 0; row < rows; ++row) {
      const std::int64_t n = row / g.p, oh = row % g.p;
      output_row(px + n * g.h * g.w, wt.data(), pb, relu, g, oh, py + row * g.q * g.k);
    }
  });
  return true;
}

}  // namespace cudl::cpu
