// Max and average pooling on the CPU, OpenMP over the N*C planes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {
namespace {

// Below this much work a parallel region costs more than it saves (thread wake-up on a busy
// machine is milliseconds).
constexpr std::int64_t kParallelWork = 1 << 16;

struct PoolGeometry {
  std::int64_t planes, h, w, p, q;
};

// Reads (or writes) per pass: every output visits its whole window.
std::int64_t window_work(const Tensor& out, const Pool2dParams& p) { return out.numel() * p.kernel_h * p.kernel_w; }

PoolGeometry geometry(const Shape& x, const Shape& y) { return {x[0] * x[1], x[2], x[3], y[2], y[3]}; }

// The common 2x2, stride-2, unpadded window: four loads and three compares per output, with the
// general path's rules (row-major scan, strict comparison so the first maximum wins ties, a NaN
// wins and stays).
template <class T>
void maxpool_2x2(const T* in, std::int64_t w, std::int64_t p, std::int64_t q, T* out, std::int32_t* arg) {
  for (std::int64_t oh = 0; oh < p; ++oh) {
    const T* r0 = in + 2 * oh * w;
    const T* r1 = r0 + w;
    const std::int32_t base = static_cast<std::int32_t>(2 * oh * w);
    const std::int32_t w32 = static_cast<std::int32_t>(w);
    T* o = out + oh * q;
    std::int32_t* a = arg + oh * q;
    // Selects, not branches (random data would mispredict half of them), so the loop vectorises.
#pragma omp simd
    for (std::int64_t ow = 0; ow < q; ++ow) {
      const std::int32_t c = static_cast<std::int32_t>(2 * ow);
      float best = load(r0[c]);
      std::int32_t where = base + c;
      const float v1 = load(r0[c + 1]), v2 = load(r1[c]), v3 = load(r1[c + 1]);
      bool take = v1 > best || (v1 != v1 && best == best);
      best = take ? v1 : best;
      where = take ? base + c + 1 : where;
      take = v2 > best || (v2 != v2 && best == best);
      best = take ? v2 : best;
      where = take ? base + w32 + c : where;
      take = v3 > best || (v3 != v3 && best == best);
      best = take ? v3 : best;
      where = take ? base + w32 + c + 1 : where;
      o[ow] = store<T>(best);
      a[ow] = where;
    }
  }
}

// Pooling picks or averages in f32; a half output is rounded once (a max is exact).
template <class T>
void maxpool_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const auto g = geometry(x.shape(), y.shape());
  const T* px = x.data<T>();
  T* py = y.data<T>();
  std::int32_t* pa = argmax.data<std::int32_t>();
  if (p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2 && p.pad_h == 0 && p.pad_w == 0) {
#pragma omp parallel for schedule(static) if (x.numel() >= cpu::kParallelThreshold)
    for (std::int64_t plane = 0; plane < g.planes; ++plane)
      maxpool_2x2(px + plane * g.h * g.w, g.w, g.p, g.q, py + plane * g.p * g.q, pa + plane * g.p * g.q);
    return;
  }
#pragma omp parallel for schedule(static) if (window_work(y, p) >= kParallelWork)
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const T* in = px + plane * g.h * g.w;
    for (std::int64_t oh = 0; oh < g.p; ++oh) {
      for (std::int64_t ow = 0; ow < g.q; ++ow) {
        const std::int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        float best = -std::numeric_limits<float>::infinity();
        std::int64_t where = -1;
        // Row-major scan with a strict comparison: the first maximum wins ties. NaN wins and
        // stays (as in PyTorch), so a NaN input is never hidden.
        for (std::int64_t ih = std::max<std::int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, g.h); ++ih) {
          for (std::int64_t iw = std::max<std::int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, g.w); ++iw) {
            const float v = load(in[ih * g.w + iw]);
            if (where < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              where = ih * g.w + iw;
            }
          }
        }
        const std::int64_t o = (plane * g.p + oh) * g.q + ow;
        py[o] = store<T>(best);
        pa[o] = static_cast<std::int32_t>(where);
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

template <class T>
void maxpool_backward(const Tensor& dy, const Tensor& argmax, Tensor& dx) {
  constexpr std::string_view op = "maxpool2d_backward";
  const auto g = geometry(dx.shape(), dy.shape());
  const T* pdy = dy.data<T>();
  const std::int32_t* pa = argmax.data<std::int32_t>();
  T* pdx = dx.data<T>();
  std::int64_t bad = 0;
#pragma omp parallel reduction(+ : bad) if (dy.numel() >= kParallelWork)
  {
    PlaneAccumulator<T> acc(g.h * g.w);
#pragma omp for schedule(static)
    for (std::int64_t plane = 0; plane < g.planes; ++plane) {
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
#pragma omp parallel for schedule(static) if (window_work(y, p) >= kParallelWork)
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const T* in = px + plane * g.h * g.w;
    for (std::int64_t oh = 0; oh < g.p; ++oh) {
      for (std::int64_t ow = 0; ow < g.q; ++ow) {
        const std::int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        float s = 0.0f;
        for (std::int64_t ih = std::max<std::int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, g.h); ++ih)
          for (std::int64_t iw = std::max<std::int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, g.w); ++iw)
            s += load(in[ih * g.w + iw]);
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
#pragma omp parallel if (window_work(dy, p) >= kParallelWork)
  {
    PlaneAccumulator<T> acc(g.h * g.w);
#pragma omp for schedule(static)
    for (std::int64_t plane = 0; plane < g.planes; ++plane) {
      float* out = acc.begin(pdx + plane * g.h * g.w);
      std::fill(out, out + g.h * g.w, 0.0f);
      for (std::int64_t oh = 0; oh < g.p; ++oh) {
        for (std::int64_t ow = 0; ow < g.q; ++ow) {
          const float d = load(pdy[(plane * g.p + oh) * g.q + ow]) * inv;
          const std::int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
          for (std::int64_t ih = std::max<std::int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, g.h); ++ih)
            for (std::int64_t iw = std::max<std::int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, g.w); ++iw)
              out[ih * g.w + iw] += d;
        }
      }
      acc.finish(pdx + plane * g.h * g.w);
    }
  }
}

}  // namespace

void CpuBackend::do_maxpool2d_forward(Context&, const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  cpu::dispatch_float(x.dtype(), "maxpool2d_forward",
                      [&](auto tag) { maxpool_forward<decltype(tag)>(x, p, y, argmax); });
}

void CpuBackend::do_maxpool2d_backward(Context&, const Tensor& dy, const Tensor& argmax, const Pool2dParams&,
                                       Tensor& dx) {
  cpu::dispatch_float(dy.dtype(), "maxpool2d_backward",
                      [&](auto tag) { maxpool_backward<decltype(tag)>(dy, argmax, dx); });
}

void CpuBackend::do_avgpool2d_forward(Context&, const Tensor& x, const Pool2dParams& p, Tensor& y) {
  cpu::dispatch_float(x.dtype(), "avgpool2d_forward", [&](auto tag) { avgpool_forward<decltype(tag)>(x, p, y); });
}

void CpuBackend::do_avgpool2d_backward(Context&, const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  cpu::dispatch_float(dy.dtype(), "avgpool2d_backward", [&](auto tag) { avgpool_backward<decltype(tag)>(dy, p, dx); });
}

}  // namespace cudl
