// Max and average pooling on the CPU, OpenMP over the N*C planes.
#include <algorithm>
#include <cmath>
#include <limits>

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
void maxpool_2x2(const float* in, std::int64_t w, std::int64_t p, std::int64_t q, float* out, std::int32_t* arg) {
  for (std::int64_t oh = 0; oh < p; ++oh) {
    const float* r0 = in + 2 * oh * w;
    const float* r1 = r0 + w;
    const std::int32_t base = static_cast<std::int32_t>(2 * oh * w);
    const std::int32_t w32 = static_cast<std::int32_t>(w);
    float* o = out + oh * q;
    std::int32_t* a = arg + oh * q;
    // Selects, not branches (random data would mispredict half of them), so the loop vectorises.
#pragma omp simd
    for (std::int64_t ow = 0; ow < q; ++ow) {
      const std::int32_t c = static_cast<std::int32_t>(2 * ow);
      float best = r0[c];
      std::int32_t where = base + c;
      const float v1 = r0[c + 1], v2 = r1[c], v3 = r1[c + 1];
      bool take = v1 > best || (v1 != v1 && best == best);
      best = take ? v1 : best;
      where = take ? base + c + 1 : where;
      take = v2 > best || (v2 != v2 && best == best);
      best = take ? v2 : best;
      where = take ? base + w32 + c : where;
      take = v3 > best || (v3 != v3 && best == best);
      best = take ? v3 : best;
      where = take ? base + w32 + c + 1 : where;
      o[ow] = best;
      a[ow] = where;
    }
  }
}

}  // namespace

void CpuBackend::do_maxpool2d_forward(Context&, const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const auto g = geometry(x.shape(), y.shape());
  const float* px = x.data<float>();
  float* py = y.data<float>();
  std::int32_t* pa = argmax.data<std::int32_t>();
  if (p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2 && p.pad_h == 0 && p.pad_w == 0) {
#pragma omp parallel for schedule(static) if (x.numel() >= cpu::kParallelThreshold)
    for (std::int64_t plane = 0; plane < g.planes; ++plane)
      maxpool_2x2(px + plane * g.h * g.w, g.w, g.p, g.q, py + plane * g.p * g.q, pa + plane * g.p * g.q);
    return;
  }
#pragma omp parallel for schedule(static) if (window_work(y, p) >= kParallelWork)
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const float* in = px + plane * g.h * g.w;
    for (std::int64_t oh = 0; oh < g.p; ++oh) {
      for (std::int64_t ow = 0; ow < g.q; ++ow) {
        const std::int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        float best = -std::numeric_limits<float>::infinity();
        std::int64_t where = -1;
        // Row-major scan with a strict comparison: the first maximum wins ties. NaN wins and
        // stays (as in PyTorch), so a NaN input is never hidden.
        for (std::int64_t ih = std::max<std::int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, g.h); ++ih) {
          for (std::int64_t iw = std::max<std::int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, g.w); ++iw) {
            const float v = in[ih * g.w + iw];
            if (where < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              where = ih * g.w + iw;
            }
          }
        }
        const std::int64_t o = (plane * g.p + oh) * g.q + ow;
        py[o] = best;
        pa[o] = static_cast<std::int32_t>(where);
      }
    }
  }
}

void CpuBackend::do_maxpool2d_backward(Context&, const Tensor& dy, const Tensor& argmax, const Pool2dParams&,
                                       Tensor& dx) {
  constexpr std::string_view op = "maxpool2d_backward";
  const auto g = geometry(dx.shape(), dy.shape());
  const float* pdy = dy.data<float>();
  const std::int32_t* pa = argmax.data<std::int32_t>();
  float* pdx = dx.data<float>();
  std::int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (dy.numel() >= kParallelWork)
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    float* out = pdx + plane * g.h * g.w;
    std::fill(out, out + g.h * g.w, 0.0f);
    for (std::int64_t o = plane * g.p * g.q; o < (plane + 1) * g.p * g.q; ++o) {
      const std::int64_t where = pa[o];
      if (where < 0 || where >= g.h * g.w) {
        ++bad;
        continue;
      }
      out[where] += pdy[o];
    }
  }
  CUDL_CHECK(bad == 0, "{}: {} argmax entries lie outside the {}x{} input plane (dx={}, argmax={})", op, bad, g.h, g.w,
             dx.shape(), argmax.shape());
}

void CpuBackend::do_avgpool2d_forward(Context&, const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const auto g = geometry(x.shape(), y.shape());
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const float inv = 1.0f / static_cast<float>(p.kernel_h * p.kernel_w);
#pragma omp parallel for schedule(static) if (window_work(y, p) >= kParallelWork)
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const float* in = px + plane * g.h * g.w;
    for (std::int64_t oh = 0; oh < g.p; ++oh) {
      for (std::int64_t ow = 0; ow < g.q; ++ow) {
        const std::int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        float s = 0.0f;
        for (std::int64_t ih = std::max<std::int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, g.h); ++ih)
          for (std::int64_t iw = std::max<std::int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, g.w); ++iw)
            s += in[ih * g.w + iw];
        py[(plane * g.p + oh) * g.q + ow] = s * inv;
      }
    }
  }
}

void CpuBackend::do_avgpool2d_backward(Context&, const Tensor& dy, const Pool2dParams& p, Tensor& dx) {
  const auto g = geometry(dx.shape(), dy.shape());
  const float* pdy = dy.data<float>();
  float* pdx = dx.data<float>();
  const float inv = 1.0f / static_cast<float>(p.kernel_h * p.kernel_w);
#pragma omp parallel for schedule(static) if (window_work(dy, p) >= kParallelWork)
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    float* out = pdx + plane * g.h * g.w;
    std::fill(out, out + g.h * g.w, 0.0f);
    for (std::int64_t oh = 0; oh < g.p; ++oh) {
      for (std::int64_t ow = 0; ow < g.q; ++ow) {
        const float d = pdy[(plane * g.p + oh) * g.q + ow] * inv;
        const std::int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        for (std::int64_t ih = std::max<std::int64_t>(h0, 0); ih < std::min(h0 + p.kernel_h, g.h); ++ih)
          for (std::int64_t iw = std::max<std::int64_t>(w0, 0); iw < std::min(w0 + p.kernel_w, g.w); ++iw)
            out[ih * g.w + iw] += d;
      }
    }
  }
}

}  // namespace cudl
