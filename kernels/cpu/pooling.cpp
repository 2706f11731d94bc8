// Max and average pooling on the CPU, OpenMP over the N*C planes; channels_last tensors go to
// pooling_nhwc.cpp.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/pool_rules.hpp"
#include "cudl/kernels/cpu/pooling_nhwc.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl {
namespace {

struct PoolGeometry {
  std::int64_t planes, h, w, p, q;
};

// Reads (or writes) per pass: every output visits its whole window.
std::int64_t window_work(const Tensor& out, const Pool2dParams& p) { return out.numel() * p.kernel_h * p.kernel_w; }

PoolGeometry geometry(const Shape& x, const Shape& y) { return {x[0] * x[1], x[2], x[3], y[2], y[3]}; }

using cpu::bigger;
using cpu::is_2x2;
using cpu::kPoolParallelWork;
using cpu::max_2x2_taps;
using cpu::nan_first;
using cpu::pool_window;
using cpu::PoolWindow;
using cpu::put;
using cpu::read;

// The common 2x2, stride-2, unpadded window: four loads and selects per output, vectorised (AVX2:
// its rows are short, simd_clones.hpp).
template <class T>
CUDL_CPU_CLONES_AVX2 void maxpool_2x2(const T* in, std::int64_t w, std::int64_t p, std::int64_t q, T* out,
                                      std::int32_t* arg) {
  const auto w32 = static_cast<std::int32_t>(w);
  for (std::int64_t oh = 0; oh < p; ++oh) {
    const T* r0 = in + 2 * oh * w;
    const T* r1 = r0 + w;
    const auto base = static_cast<std::int32_t>(2 * oh * w);
    T* o = out + oh * q;
    std::int32_t* a = arg + oh * q;
    for (std::int64_t ow = 0; ow < q; ++ow) {
      const std::int32_t c = base + static_cast<std::int32_t>(2 * ow);
      const float v0 = read(r0, 2 * ow), v1 = read(r0, 2 * ow + 1), v2 = read(r1, 2 * ow), v3 = read(r1, 2 * ow + 1);
      float best;
      std::int32_t where;
      max_2x2_taps(v0, v1, v2, v3, c, w32, best, where);
      o[ow] = store<T>(best);
      a[ow] = where;
    }
  }
}

// The 2x2 windows of an even-width plane in two passes over f32 buffers, each one flat or
// contiguous loop that vectorises with full vectors, where maxpool_2x2's rows are 12 outputs long
// on MNIST. The four-tap rule picks the largest of (is NaN, value, earlier tap) in that order, and
// picking the larger of two is associative, so pairs can be settled first: pass 1 settles each
// horizontal pair of inputs (a plane of h x w is h*w/2 pairs in a row), pass 2 each vertical pair
// of those winners (the top one earlier in the scan). Same bits as the one-pass rule.

// A horizontal pair of inputs, elements 2j and 2j + 1. A bf16 pair is one 32-bit load, split.
template <class T>
void read_pair(const T* in, std::int64_t j, float& a, float& b) {
  if constexpr (std::is_same_v<T, bf16>) {
    std::uint32_t u;
    std::memcpy(&u, in + 2 * j, sizeof u);  // little-endian: element 2j is the low half
    a = std::bit_cast<float>(u << 16);
    b = std::bit_cast<float>(u & 0xffff0000u);
  } else {
    a = load(in[2 * j]);
    b = load(in[2 * j + 1]);
  }
}

// Pass 1: the winners of the n horizontal pairs starting at `in`, with their plane positions.
template <class T>
CUDL_CPU_CLONES void pair_winners(const T* in, std::int64_t n, float* __restrict best, std::int32_t* __restrict where) {
  for (std::int64_t j = 0; j < n; ++j) {
    const auto at = static_cast<std::int32_t>(2 * j);
    float a, b;
    read_pair(in, j, a, b);
    float v = a;
    std::int32_t i = at;
    bigger(b, at + 1, v, i);
    nan_first(b, at + 1, v, i);
    nan_first(a, at, v, i);
    best[j] = v;
    where[j] = i;
  }
}

// Pass 2: output row oh from the pair winners of input rows 2oh (top) and 2oh + 1 (bottom). The
// buffers are the caller's own (restrict: no alias check and second loop copy per 12-output row).
template <class T>
CUDL_CPU_CLONES_AVX2 void column_winners(const float* __restrict best, const std::int32_t* __restrict where,
                                         std::int64_t p, std::int64_t q, T* __restrict out,
                                         std::int32_t* __restrict arg) {
  for (std::int64_t oh = 0; oh < p; ++oh) {
    const float* top = best + 2 * oh * q;
    const float* bottom = top + q;
    const std::int32_t* top_at = where + 2 * oh * q;
    const std::int32_t* bottom_at = top_at + q;
    for (std::int64_t ow = 0; ow < q; ++ow) {
      float v = top[ow];
      std::int32_t i = top_at[ow];
      bigger(bottom[ow], bottom_at[ow], v, i);
      nan_first(bottom[ow], bottom_at[ow], v, i);
      nan_first(top[ow], top_at[ow], v, i);
      put(out, oh * q + ow, v);
      arg[oh * q + ow] = i;
    }
  }
}

// The outputs [q0, q1) of one output row whose windows lie inside the plane horizontally, over the
// input rows [ih0, ih1) (non-empty): one pass over the outputs per window tap, in row-major order,
// then the NaN pass in reverse (the rules above), so the results are the scalar scan's bits.
template <class T>
CUDL_CPU_CLONES void maxpool_row_interior(const T* in, std::int64_t w, std::int64_t ih0, std::int64_t ih1,
                                          const Pool2dParams& p, std::int64_t q0, std::int64_t q1,
                                          float* __restrict best, std::int32_t* __restrict where) {
  // Locals, not p's fields: `where` is an int array the compiler would otherwise reload them past.
  const std::int64_t sw = p.stride_w, kernel_w = p.kernel_w, first = -p.pad_w;
  for (std::int64_t ow = q0; ow < q1; ++ow) {
    const std::int64_t i = ih0 * w + ow * sw + first;
    best[ow] = read(in, i);
    where[ow] = static_cast<std::int32_t>(i);
  }
  for (std::int64_t ih = ih0; ih < ih1; ++ih) {
    for (std::int64_t kw = ih == ih0 ? 1 : 0; kw < kernel_w; ++kw) {
      const std::int64_t start = ih * w + first + kw;
      for (std::int64_t ow = q0; ow < q1; ++ow)
        bigger(read(in, start + ow * sw), static_cast<std::int32_t>(start + ow * sw), best[ow], where[ow]);
    }
  }
  for (std::int64_t ih = ih1 - 1; ih >= ih0; --ih) {
    for (std::int64_t kw = kernel_w - 1; kw >= 0; --kw) {
      const std::int64_t start = ih * w + first + kw;
      for (std::int64_t ow = q0; ow < q1; ++ow)
        nan_first(read(in, start + ow * sw), static_cast<std::int32_t>(start + ow * sw), best[ow], where[ow]);
    }
  }
}

// One output of the general path, window clipped to the plane. Row-major scan with a strict
// comparison: the first maximum wins ties. NaN wins and stays (as in PyTorch), so a NaN input is
// never hidden. An empty window (padding only) gives -inf and argmax -1.
template <class T>
void maxpool_one(const T* in, std::int64_t h, std::int64_t w, const Pool2dParams& p, std::int64_t oh, std::int64_t ow,
                 float& best_out, std::int32_t& where_out) {
  const PoolWindow win = pool_window(h, w, p, oh, ow);
  float best = -std::numeric_limits<float>::infinity();
  std::int64_t where = -1;
  for (std::int64_t ih = win.h0; ih < win.h1; ++ih) {
    for (std::int64_t iw = win.w0; iw < win.w1; ++iw) {
      const float v = load(in[ih * w + iw]);
      if (where < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
        best = v;
        where = ih * w + iw;
      }
    }
  }
  best_out = best;
  where_out = static_cast<std::int32_t>(where);
}

// Pooling picks or averages in f32; a half output is rounded once (a max is exact).
template <class T>
void maxpool_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const auto g = geometry(x.shape(), y.shape());
  const T* px = x.data<T>();
  T* py = y.data<T>();
  std::int32_t* pa = argmax.data<std::int32_t>();
  if (is_2x2(p) && g.w % 2 == 0) {
#pragma omp parallel if (x.numel() >= cpu::kParallelThreshold)
    {
      // Pass 1's winners for the rows [0, 2p) of one plane (an odd last row is in no window).
      std::vector<float> best(static_cast<std::size_t>(g.p * g.w));
      std::vector<std::int32_t> where(best.size());
#pragma omp for schedule(static)
      for (std::int64_t plane = 0; plane < g.planes; ++plane) {
        pair_winners(px + plane * g.h * g.w, g.p * g.w, best.data(), where.data());
        column_winners(best.data(), where.data(), g.p, g.q, py + plane * g.p * g.q, pa + plane * g.p * g.q);
      }
    }
    return;
  }
  if (is_2x2(p)) {
#pragma omp parallel for schedule(static) if (x.numel() >= cpu::kParallelThreshold)
    for (std::int64_t plane = 0; plane < g.planes; ++plane)
      maxpool_2x2(px + plane * g.h * g.w, g.w, g.p, g.q, py + plane * g.p * g.q, pa + plane * g.p * g.q);
    return;
  }
  // Outputs [q0, q1) have their whole window inside the row; the rest are clipped, one by one.
  const std::int64_t q0 = std::min<std::int64_t>(g.q, (p.pad_w + p.stride_w - 1) / p.stride_w);
  const std::int64_t reach = g.w + p.pad_w - p.kernel_w;
  const std::int64_t q1 = std::max(q0, reach < 0 ? q0 : std::min<std::int64_t>(g.q, reach / p.stride_w + 1));
#pragma omp parallel if (window_work(y, p) >= kPoolParallelWork)
  {
    std::vector<float> best(static_cast<std::size_t>(g.q));
    std::vector<std::int32_t> where(static_cast<std::size_t>(g.q));
#pragma omp for schedule(static)
    for (std::int64_t plane = 0; plane < g.planes; ++plane) {
      const T* in = px + plane * g.h * g.w;
      for (std::int64_t oh = 0; oh < g.p; ++oh) {
        const std::int64_t h0 = oh * p.stride_h - p.pad_h;
        const std::int64_t ih0 = std::max<std::int64_t>(h0, 0), ih1 = std::min(h0 + p.kernel_h, g.h);
        const bool interior = ih0 < ih1 && q0 < q1;
        if (interior) maxpool_row_interior(in, g.w, ih0, ih1, p, q0, q1, best.data(), where.data());
        for (std::int64_t ow = 0; ow < g.q; ++ow)
          if (!interior || ow < q0 || ow >= q1) maxpool_one(in, g.h, g.w, p, oh, ow, best[ow], where[ow]);
        T* out = py + (plane * g.p + oh) * g.q;
        std::int32_t* arg = pa + (plane * g.p + oh) * g.q;
        for (std::int64_t ow = 0; ow < g.q; ++ow) {
          out[ow] = store<T>(best[ow]);
          arg[ow] = where[ow];
        }
      }
    }
  }
}

// The backward passes add overlapping windows' gradients into one input plane. For f32 that plane
// is dx's own; for a half dx it is an f32 buffer per thread, rounded into dx once at the end.
template <class T>
class PlaneAccumulator {
 public:
  explicit PlaneAccumulator(std::int64_t plane_size) {
    if constexpr (!std::is_same_v<T, float>) buffer_.resize(static_cast<std::size_t>(plane_size));
  }
  float* begin(T* out) {
    if constexpr (std::is_same_v<T, float>) {
      return out;
    } else {
      return buffer_.data();
    }
  }
  void finish(T* out) {
    if constexpr (!std::is_same_v<T, float>)
      for (std::size_t i = 0; i < buffer_.size(); ++i) out[i] = store<T>(buffer_[i]);
  }

 private:
  std::vector<float> buffer_;
};

// The 2x2, stride-2 backward of one plane: the windows do not overlap, so each input receives at
// most one gradient and it is stored straight into dx (0 + dy as in the general path's
// accumulation, rounded once), after zeroing the plane: no f32 plane buffer for halves. Returns how
// many argmax entries lie outside their own window: none when they come from maxpool2d_forward;
// else the caller redoes the plane on the general path.
template <class T>
std::int64_t maxpool_2x2_backward(const T* dy, const std::int32_t* arg, std::int64_t h, std::int64_t w, std::int64_t p,
                                  std::int64_t q, T* dx) {
  std::fill(dx, dx + h * w, store<T>(0.0f));
  std::int64_t stray = 0;
  for (std::int64_t oh = 0; oh < p; ++oh) {
    for (std::int64_t ow = 0; ow < q; ++ow) {
      const std::int64_t o = oh * q + ow, corner = 2 * oh * w + 2 * ow;
      // The argmax relative to the window's top-left input (64-bit: a corrupt entry cannot wrap).
      const std::int64_t at = arg[o] - corner;
      // Inside the window: row 0 or 1 and column 0 or 1 (w >= 2). One test that is always true
      // for a forward's argmax, not one branch per position (those mispredict on real data).
      const std::int64_t col = at - (at >= w ? w : 0);
      if (static_cast<std::uint64_t>(col) > 1) {
        ++stray;
        continue;
      }
      dx[corner + at] = store<T>(0.0f + load(dy[o]));
    }
  }
  return stray;
}

template <class T>
void maxpool_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams& params, Tensor& dx) {
  constexpr std::string_view op = "maxpool2d_backward";
  const auto g = geometry(dx.shape(), dy.shape());
  const T* pdy = dy.data<T>();
  const std::int32_t* pa = argmax.data<std::int32_t>();
  T* pdx = dx.data<T>();
  const bool fast = is_2x2(params);
  std::int64_t bad = 0;
#pragma omp parallel reduction(+ : bad) if (dy.numel() >= kPoolParallelWork)
  {
    PlaneAccumulator<T> acc(g.h * g.w);
#pragma omp for schedule(static)
    for (std::int64_t plane = 0; plane < g.planes; ++plane) {
      if (fast && maxpool_2x2_backward(pdy + plane * g.p * g.q, pa + plane * g.p * g.q, g.h, g.w, g.p, g.q,
                                       pdx + plane * g.h * g.w) == 0)
        continue;
      float* out = acc.begin(pdx + plane * g.h * g.w);
      std::fill(out, out + g.h * g.w, 0.0f);
      for (std::int64_t o = plane * g.p * g.q; o < (plane + 1) * g.p * g.q; ++o) {
        const std::int64_t where = pa[o];
        if (where < 0 || where >= g.h * g.w) {
          ++bad;
          continue;
        }
        out[where] += load(pdy[o]);
      }
      acc.finish(pdx + plane * g.h * g.w);
    }
  }
  CUDL_CHECK(bad == 0, "{}: {} argmax entries lie outside the {}x{} input plane (dx={}, argmax={})", op, bad, g.h, g.w,
             dx.shape(), argmax.shape());
}

template <class T>
void avgpool_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const auto g = geometry(x.shape(), y.shape());
  const T* px = x.data<T>();
  T* py = y.data<T>();
  const float inv = 1.0f / static_cast<float>(p.kernel_h * p.kernel_w);
#pragma omp parallel for schedule(static) if (window_work(y, p) >= kPoolParallelWork)
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const T* in = px + plane * g.h * g.w;
    for (std::int64_t oh = 0; oh < g.p; ++oh) {
      for (std::int64_t ow = 0; ow < g.q; ++ow) {
        const PoolWindow win = pool_window(g.h, g.w, p, oh, ow);
        float s = 0.0f;
        for (std::int64_t ih = win.h0; ih < win.h1; ++ih)
          for (std::int64_t iw = win.w0; iw < win.w1; ++iw) s += load(in[ih * g.w + iw]);
        py[(plane * g.p + oh) * g.q + ow] = store<T>(s * inv);
      }
    }
  }
}

template <class T>
void avgpool_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  const auto g = geometry(dx.shape(), dy.shape());
  const T* pdy = dy.data<T>();
  T* pdx = dx.data<T>();
  const float inv = 1.0f / static_cast<float>(p.kernel_h * p.kernel_w);
#pragma omp parallel if (window_work(dy, p) >= kPoolParallelWork)
  {
    PlaneAccumulator<T> acc(g.h * g.w);
#pragma omp for schedule(static)
    for (std::int64_t plane = 0; plane < g.planes; ++plane) {
      float* out = acc.begin(pdx + plane * g.h * g.w);
      std::fill(out, out + g.h * g.w, 0.0f);
      for (std::int64_t oh = 0; oh < g.p; ++oh) {
        for (std::int64_t ow = 0; ow < g.q; ++ow) {
          const float d = load(pdy[(plane * g.p + oh) * g.q + ow]) * inv;
          const PoolWindow win = pool_window(g.h, g.w, p, oh, ow);
          for (std::int64_t ih = win.h0; ih < win.h1; ++ih)
            for (std::int64_t iw = win.w0; iw < win.w1; ++iw) out[ih * g.w + iw] += d;
        }
      }
      acc.finish(pdx + plane * g.h * g.w);
    }
  }
}

}  // namespace

void CpuBackend::do_maxpool2d_forward(Context&, const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  if (x.channels_last()) return cpu::maxpool2d_forward_nhwc(x, p, y, argmax);
  cpu::dispatch_float(x.dtype(), "maxpool2d_forward",
                      [&](auto tag) { maxpool_forward<decltype(tag)>(x, p, y, argmax); });
}

void CpuBackend::do_maxpool2d_backward(Context&, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p,
                                       Tensor& dx) {
  if (dy.channels_last()) return cpu::maxpool2d_backward_nhwc(dy, argmax, p, dx);
  cpu::dispatch_float(dy.dtype(), "maxpool2d_backward",
                      [&](auto tag) { maxpool_backward<decltype(tag)>(dy, argmax, p, dx); });
}

void CpuBackend::do_avgpool2d_forward(Context&, const Tensor& x, const Pool2dParams& p, Tensor& y) {
  if (x.channels_last()) return cpu::avgpool2d_forward_nhwc(x, p, y);
  cpu::dispatch_float(x.dtype(), "avgpool2d_forward", [&](auto tag) { avgpool_forward<decltype(tag)>(x, p, y); });
}

void CpuBackend::do_avgpool2d_backward(Context&, const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  if (dy.channels_last()) return cpu::avgpool2d_backward_nhwc(dy, p, dx);
  cpu::dispatch_float(dy.dtype(), "avgpool2d_backward", [&](auto tag) { avgpool_backward<decltype(tag)>(dy, p, dx); });
}

}  // namespace cudl
