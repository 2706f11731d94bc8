// Max and average pooling on channels_last (NHWC) tensors on the CPU. The channel is the
// contiguous dimension there, so each output pixel loops over its window's taps and every tap is
// one contiguous, vectorised pass over the channels. Each channel sees exactly the NCHW kernels'
// arithmetic (pooling.cpp): the same taps in the same order, f32 sums rounded once, the same
// maximum rules (pool_rules.hpp), and backward sums per input element over the outputs in
// row-major order - so both formats give the same bits.
#include "cudl/kernels/cpu/pooling_nhwc.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cudl/engine/check.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/pool_rules.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl::cpu {
namespace {

// Channels per backward task: the backward passes scatter into a sample's input, so the threads
// split it by channel blocks (a sample at a time would leave a batch-1 VGG to one thread). 16 f32
// accumulators per input pixel are one cache line and one AVX-512 vector.
constexpr std::int64_t kChannelBlock = 16;

// x (or dx) [n, c, h, w] stored as [n, h, w, c]; y (or dy) [n, c, p, q] as [n, p, q, c].
struct Geometry {
  std::int64_t n, c, h, w, p, q;
};

Geometry geometry(const Shape& in, const Shape& out) { return {in[0], in[1], in[2], in[3], out[2], out[3]}; }

PoolWindow window(const Geometry& g, const Pool2dParams& p, std::int64_t oh, std::int64_t ow) {
  return pool_window(g.h, g.w, p, oh, ow);
}

// The best tap of one output's (non-empty) window for each of the c channels: `bigger` over the
// taps in row-major order from the first, then `nan_first` over them in reverse (pool_rules.hpp).
template <class T>
CUDL_CPU_CLONES void max_window(const T* in, std::int64_t w, std::int64_t c, const PoolWindow& win,
                                float* __restrict best, std::int32_t* __restrict where) {
  const std::int64_t first = win.h0 * w + win.w0;
  for (std::int64_t k = 0; k < c; ++k) {
    best[k] = read(in + first * c, k);
    where[k] = static_cast<std::int32_t>(first);
  }
  for (std::int64_t ih = win.h0; ih < win.h1; ++ih) {
    for (std::int64_t iw = ih == win.h0 ? win.w0 + 1 : win.w0; iw < win.w1; ++iw) {
      const T* tap = in + (ih * w + iw) * c;
      const auto at = static_cast<std::int32_t>(ih * w + iw);
      for (std::int64_t k = 0; k < c; ++k) bigger(read(tap, k), at, best[k], where[k]);
    }
  }
  for (std::int64_t ih = win.h1 - 1; ih >= win.h0; --ih) {
    for (std::int64_t iw = win.w1 - 1; iw >= win.w0; --iw) {
      const T* tap = in + (ih * w + iw) * c;
      const auto at = static_cast<std::int32_t>(ih * w + iw);
      for (std::int64_t k = 0; k < c; ++k) nan_first(read(tap, k), at, best[k], where[k]);
    }
  }
}

// The f32 sums of one output's window taps for each of the c channels, in row-major tap order.
template <class T>
CUDL_CPU_CLONES void sum_window(const T* in, std::int64_t w, std::int64_t c, const PoolWindow& win,
                                float* __restrict sum) {
  std::fill(sum, sum + c, 0.0f);
  for (std::int64_t ih = win.h0; ih < win.h1; ++ih)
    for (std::int64_t iw = win.w0; iw < win.w1; ++iw) {
      const T* tap = in + (ih * w + iw) * c;
      for (std::int64_t k = 0; k < c; ++k) sum[k] += read(tap, k);
    }
}

// The common 2x2, stride-2, unpadded window of one output pixel: its four taps (top-left at plane
// position i00) in one vectorised pass over the channels, max_2x2_taps.
template <class T>
CUDL_CPU_CLONES void max_2x2(const T* top, const T* bottom, std::int64_t c, std::int32_t i00, std::int32_t w,
                             T* __restrict out, std::int32_t* __restrict arg) {
  for (std::int64_t k = 0; k < c; ++k) {
    const float v0 = read(top, k), v1 = read(top + c, k), v2 = read(bottom, k), v3 = read(bottom + c, k);
    float best;
    std::int32_t where;
    max_2x2_taps(v0, v1, v2, v3, i00, w, best, where);
    put(out, k, best);
    arg[k] = where;
  }
}

template <class T>
void max_forward_2x2(const Geometry& g, const T* px, T* py, std::int32_t* pa) {
#pragma omp parallel for schedule(static) if (g.n * g.p * g.q * g.c * 4 >= kPoolParallelWork)
  for (std::int64_t o = 0; o < g.n * g.p * g.q; ++o) {
    const std::int64_t oh = o / g.q % g.p, ow = o % g.q, i00 = 2 * oh * g.w + 2 * ow;
    const T* top = px + (o / (g.p * g.q) * g.h * g.w + i00) * g.c;
    max_2x2(top, top + g.w * g.c, g.c, static_cast<std::int32_t>(i00), static_cast<std::int32_t>(g.w), py + o * g.c,
            pa + o * g.c);
  }
}

template <class T>
void max_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const Geometry g = geometry(x.shape(), y.shape());
  const T* px = x.data<T>();
  T* py = y.data<T>();
  std::int32_t* pa = argmax.data<std::int32_t>();
  if (is_2x2(p)) return max_forward_2x2(g, px, py, pa);
#pragma omp parallel if (y.numel() * p.kernel_h * p.kernel_w >= kPoolParallelWork)
  {
    std::vector<float> best(static_cast<std::size_t>(g.c));
    std::vector<std::int32_t> where(best.size());
#pragma omp for schedule(static)
    for (std::int64_t o = 0; o < g.n * g.p * g.q; ++o) {
      const PoolWindow win = window(g, p, o / g.q % g.p, o % g.q);
      T* out = py + o * g.c;
      std::int32_t* arg = pa + o * g.c;
      if (win.empty()) {  // padding only: -inf and no argmax, as the NCHW kernel
        std::fill(out, out + g.c, store<T>(-std::numeric_limits<float>::infinity()));
        std::fill(arg, arg + g.c, -1);
        continue;
      }
      max_window(px + o / (g.p * g.q) * g.h * g.w * g.c, g.w, g.c, win, best.data(), where.data());
      for (std::int64_t k = 0; k < g.c; ++k) {
        out[k] = store<T>(best[static_cast<std::size_t>(k)]);
        arg[k] = where[static_cast<std::size_t>(k)];
      }
    }
  }
}

template <class T>
void avg_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const Geometry g = geometry(x.shape(), y.shape());
  const T* px = x.data<T>();
  T* py = y.data<T>();
  const float inv = 1.0f / static_cast<float>(p.kernel_h * p.kernel_w);  // count_include_pad
#pragma omp parallel if (y.numel() * p.kernel_h * p.kernel_w >= kPoolParallelWork)
  {
    std::vector<float> sum(static_cast<std::size_t>(g.c));
#pragma omp for schedule(static)
    for (std::int64_t o = 0; o < g.n * g.p * g.q; ++o) {
      const PoolWindow win = window(g, p, o / g.q % g.p, o % g.q);
      sum_window(px + o / (g.p * g.q) * g.h * g.w * g.c, g.w, g.c, win, sum.data());
      T* out = py + o * g.c;
      for (std::int64_t k = 0; k < g.c; ++k) out[k] = store<T>(sum[static_cast<std::size_t>(k)] * inv);
    }
  }
}

// One backward task: channels [c0, c0 + cb) of sample n, accumulated in f32 over an [h*w, cb]
// buffer and rounded into dx once (an f32 dx gets the same bits: 0 + the same sums in order).
struct Task {
  std::int64_t n, c0, cb;
};

template <class T>
void store_block(const float* acc, const Geometry& g, const Task& t, T* dx) {
  T* out = dx + t.n * g.h * g.w * g.c + t.c0;
  for (std::int64_t i = 0; i < g.h * g.w; ++i)
    for (std::int64_t k = 0; k < t.cb; ++k) out[i * g.c + k] = store<T>(acc[i * t.cb + k]);
}

// Adds each output's gradient to the input its argmax names, outputs in row-major order as the
// NCHW kernel. Returns how many argmax entries lie outside the input plane (skipped).
template <class T>
std::int64_t max_backward_block(const T* dy, const std::int32_t* arg, const Geometry& g, const Task& t, float* acc) {
  const std::int64_t plane = g.h * g.w, first = t.n * g.p * g.q * g.c + t.c0;
  std::int64_t stray = 0;
  std::fill(acc, acc + plane * t.cb, 0.0f);
  for (std::int64_t o = 0; o < g.p * g.q; ++o) {
    for (std::int64_t k = 0; k < t.cb; ++k) {
      const std::int64_t at = arg[first + o * g.c + k];
      if (at < 0 || at >= plane) {
        ++stray;
        continue;
      }
      acc[at * t.cb + k] += load(dy[first + o * g.c + k]);
    }
  }
  return stray;
}

// Adds each output's gradient / window size to every tap of its window, outputs in row-major order.
template <class T>
CUDL_CPU_CLONES void avg_backward_block(const T* dy, const Geometry& g, const Pool2dParams& p, float inv, const Task& t,
                                        float* __restrict acc) {
  float d[kChannelBlock];
  std::fill(acc, acc + g.h * g.w * t.cb, 0.0f);
  for (std::int64_t oh = 0; oh < g.p; ++oh) {
    for (std::int64_t ow = 0; ow < g.q; ++ow) {
      const T* grad = dy + ((t.n * g.p + oh) * g.q + ow) * g.c + t.c0;
      for (std::int64_t k = 0; k < t.cb; ++k) d[k] = load(grad[k]) * inv;
      const PoolWindow win = window(g, p, oh, ow);
      for (std::int64_t ih = win.h0; ih < win.h1; ++ih)
        for (std::int64_t iw = win.w0; iw < win.w1; ++iw) {
          float* tap = acc + (ih * g.w + iw) * t.cb;
          for (std::int64_t k = 0; k < t.cb; ++k) tap[k] += d[k];
        }
    }
  }
}

// Runs body(task, acc) over every (sample, channel block), in parallel when there is enough work,
// each thread with its own accumulator buffer; returns the sum of what the bodies return.
template <class Body>
std::int64_t for_each_block(const Geometry& g, std::int64_t work, Body&& body) {
  const std::int64_t blocks = (g.c + kChannelBlock - 1) / kChannelBlock;
  std::int64_t total = 0;
#pragma omp parallel reduction(+ : total) if (work >= kPoolParallelWork)
  {
    std::vector<float> acc(static_cast<std::size_t>(g.h * g.w * std::min(g.c, kChannelBlock)));
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < g.n * blocks; ++i) {
      const std::int64_t c0 = i % blocks * kChannelBlock;
      total += body(Task{i / blocks, c0, std::min(kChannelBlock, g.c - c0)}, acc.data());
    }
  }
  return total;
}

// The 2x2, stride-2, unpadded backward of one output pixel: its window's four inputs belong to it
// alone, so each gets 0 + dy where the argmax names it and 0 elsewhere (the general path's sums,
// without an accumulator). Returns how many argmax entries lie outside the window (none from
// maxpool2d_forward; else the caller redoes everything on the general path).
template <class T>
CUDL_CPU_CLONES std::int64_t max_backward_2x2(const T* __restrict dy, const std::int32_t* __restrict arg,
                                              std::int64_t c, std::int32_t i00, std::int32_t w, T* __restrict top,
                                              T* __restrict bottom) {
  std::int64_t stray = 0;
  for (std::int64_t k = 0; k < c; ++k) {
    const std::int32_t a = arg[k];
    const float d = 0.0f + load(dy[k]);
    put(top, k, a == i00 ? d : 0.0f);
    put(top + c, k, a == i00 + 1 ? d : 0.0f);
    put(bottom, k, a == i00 + w ? d : 0.0f);
    put(bottom + c, k, a == i00 + w + 1 ? d : 0.0f);
    stray += a != i00 && a != i00 + 1 && a != i00 + w && a != i00 + w + 1 ? 1 : 0;
  }
  return stray;
}

// All of dx through max_backward_2x2, a task per (sample, output row): input rows 2oh and 2oh + 1,
// plus the last row and column where h or w is odd (in no window: zeros). Returns the strays.
template <class T>
std::int64_t max_backward_2x2_all(const Geometry& g, const T* pdy, const std::int32_t* pa, T* pdx) {
  std::int64_t stray = 0;
#pragma omp parallel for schedule(static) reduction(+ : stray) if (g.n * g.h * g.w * g.c >= kPoolParallelWork)
  for (std::int64_t r = 0; r < g.n * g.p; ++r) {
    const std::int64_t n = r / g.p, oh = r % g.p;
    T* sample = pdx + n * g.h * g.w * g.c;
    for (std::int64_t ow = 0; ow < g.q; ++ow) {
      const std::int64_t o = r * g.q + ow, i00 = 2 * oh * g.w + 2 * ow;
      stray += max_backward_2x2(pdy + o * g.c, pa + o * g.c, g.c, static_cast<std::int32_t>(i00),
                                static_cast<std::int32_t>(g.w), sample + i00 * g.c, sample + (i00 + g.w) * g.c);
    }
    for (std::int64_t ih = 2 * oh; ih < 2 * oh + 2; ++ih)  // columns past 2q
      std::fill(sample + (ih * g.w + 2 * g.q) * g.c, sample + (ih + 1) * g.w * g.c, store<T>(0.0f));
    if (oh == g.p - 1)  // rows past 2p
      std::fill(sample + 2 * g.p * g.w * g.c, sample + g.h * g.w * g.c, store<T>(0.0f));
  }
  return stray;
}

template <class T>
void max_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx) {
  const Geometry g = geometry(dx.shape(), dy.shape());
  const T* pdy = dy.data<T>();
  const std::int32_t* pa = argmax.data<std::int32_t>();
  T* pdx = dx.data<T>();
  if (is_2x2(p) && max_backward_2x2_all(g, pdy, pa, pdx) == 0) return;
  const std::int64_t bad = for_each_block(g, dy.numel(), [&](const Task& t, float* acc) {
    const std::int64_t stray = max_backward_block(pdy, pa, g, t, acc);
    store_block(acc, g, t, pdx);
    return stray;
  });
  CUDL_CHECK(bad == 0, "maxpool2d_backward: {} argmax entries lie outside the {}x{} input plane (dx={}, argmax={})",
             bad, g.h, g.w, dx.shape(), argmax.shape());
}

template <class T>
void avg_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  const Geometry g = geometry(dx.shape(), dy.shape());
  const T* pdy = dy.data<T>();
  T* pdx = dx.data<T>();
  const float inv = 1.0f / static_cast<float>(p.kernel_h * p.kernel_w);
  for_each_block(g, dy.numel() * p.kernel_h * p.kernel_w, [&](const Task& t, float* acc) {
    avg_backward_block(pdy, g, p, inv, t, acc);
    store_block(acc, g, t, pdx);
    return std::int64_t{0};
  });
}

}  // namespace

void maxpool2d_forward_nhwc(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  dispatch_float(x.dtype(), "maxpool2d_forward", [&](auto tag) { max_forward<decltype(tag)>(x, p, y, argmax); });
}

void maxpool2d_backward_nhwc(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx) {
  dispatch_float(dy.dtype(), "maxpool2d_backward", [&](auto tag) { max_backward<decltype(tag)>(dy, argmax, p, dx); });
}

void avgpool2d_forward_nhwc(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  dispatch_float(x.dtype(), "avgpool2d_forward", [&](auto tag) { avg_forward<decltype(tag)>(x, p, y); });
}

void avgpool2d_backward_nhwc(const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  dispatch_float(dy.dtype(), "avgpool2d_backward", [&](auto tag) { avg_backward<decltype(tag)>(dy, p, dx); });
}

}  // namespace cudl::cpu
