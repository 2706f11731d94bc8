// Regression losses (mean squared error, mean absolute error) and total variation.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

// The sum over one chunk of f(a[i] - b[i]) in double: 16 running lanes (so the additions do not wait
// on each other's latency; the AVX-512 copy adds them as two vectors), combined pairwise, then the
// tail in order. Inlined into its callers' AVX-512 and baseline copies (a separate function would
// be compiled for the baseline only).
template <class F, class T>
[[gnu::always_inline]] inline double chunk_error_sum(const T* pa, const T* pb, std::int64_t n, F f) {
  constexpr int kLanes = 16;
  double lane[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += f(static_cast<double>(load(pa[i + l])) - load(pb[i + l]));
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  double tail = 0.0;
  for (; i < n; ++i) tail += f(static_cast<double>(load(pa[i])) - load(pb[i]));
  return lane[0] + tail;
}

struct Squared {
  double operator()(double d) const { return d * d; }
};
struct Absolute {
  double operator()(double d) const { return d < 0 ? -d : d; }
};

template <class T>
CUDL_CPU_CLONES double squared_error_chunk(const T* pa, const T* pb, std::int64_t n) {
  return chunk_error_sum(pa, pb, n, Squared{});
}

template <class T>
CUDL_CPU_CLONES double absolute_error_chunk(const T* pa, const T* pb, std::int64_t n) {
  return chunk_error_sum(pa, pb, n, Absolute{});
}

// Chunks of kSimdChunk elements summed on any thread, their sums added in chunk order: the same
// bits for every thread count.
template <class Chunk>
double error_sum(std::int64_t n, Chunk chunk) {
  const std::int64_t chunks = (n + cpu::kSimdChunk - 1) / cpu::kSimdChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks));
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (std::int64_t c = 0; c < chunks; ++c)
    partial[static_cast<std::size_t>(c)] =
        chunk(c * cpu::kSimdChunk, std::min(cpu::kSimdChunk, n - c * cpu::kSimdChunk));
  double s = 0.0;
  for (const double p : partial) s += p;
  return s;
}

template <class T>
double squared_error_sum(const T* pa, const T* pb, std::int64_t n) {
  return error_sum(n, [&](std::int64_t at, std::int64_t len) { return squared_error_chunk(pa + at, pb + at, len); });
}

template <class T>
double absolute_error_sum(const T* pa, const T* pb, std::int64_t n) {
  return error_sum(n, [&](std::int64_t at, std::int64_t len) { return absolute_error_chunk(pa + at, pb + at, len); });
}

template <class T>
void mse_gradient(const T* pa, const T* pb, float k, T* pd, std::int64_t n) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) pd[i] = store<T>(k * (load(pa[i]) - load(pb[i])));
}

template <class T>
void l1_gradient(const T* pa, const T* pb, float k, T* pd, std::int64_t n) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float a = load(pa[i]), b = load(pb[i]);
    pd[i] = store<T>(a > b ? k : (a < b ? -k : 0.0f));
  }
}

}  // namespace

void CpuBackend::do_mse_loss_forward(Context&, const Tensor& a, const Tensor& b, Tensor& loss) {
  const std::int64_t n = a.numel();
  const double s = cpu::dispatch_float(a.dtype(), "mse_loss_forward", [&](auto tag) {
    using T = decltype(tag);
    return squared_error_sum(a.data<T>(), b.data<T>(), n);
  });
  loss.data<float>()[0] = static_cast<float>(s / static_cast<double>(n));
}

void CpuBackend::do_mse_loss_backward(Context&, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  const std::int64_t n = a.numel();
  const float k = static_cast<float>(2.0 * dloss / static_cast<double>(n));
  cpu::dispatch_float(a.dtype(), "mse_loss_backward", [&](auto tag) {
    using T = decltype(tag);
    mse_gradient(a.data<T>(), b.data<T>(), k, da.data<T>(), n);
  });
}

void CpuBackend::do_l1_loss_forward(Context&, const Tensor& a, const Tensor& b, Tensor& loss) {
  const std::int64_t n = a.numel();
  const double s = cpu::dispatch_float(a.dtype(), "l1_loss_forward", [&](auto tag) {
    using T = decltype(tag);
    return absolute_error_sum(a.data<T>(), b.data<T>(), n);
  });
  loss.data<float>()[0] = static_cast<float>(s / static_cast<double>(n));
}

void CpuBackend::do_l1_loss_backward(Context&, const Tensor& a, const Tensor& b, float dloss, Tensor& da) {
  const std::int64_t n = a.numel();
  const float k = static_cast<float>(dloss / static_cast<double>(n));
  cpu::dispatch_float(a.dtype(), "l1_loss_backward", [&](auto tag) {
    using T = decltype(tag);
    l1_gradient(a.data<T>(), b.data<T>(), k, da.data<T>(), n);
  });
}

namespace {

// One pixel's (a² + b²) of the TV loss: a, b its forward differences down and right (0 at an edge).
inline void tv_diffs(const float* q, std::int64_t h, std::int64_t w, std::int64_t i, std::int64_t j, float& a,
                     float& b) {
  const float v = q[i * w + j];
  a = i + 1 < h ? q[(i + 1) * w + j] - v : 0.0f;
  b = j + 1 < w ? q[i * w + j + 1] - v : 0.0f;
}

// (β/2)·s^(β/2−1), the derivative of s^(β/2); 0 where s = 0 (see backend.hpp).
inline float tv_factor(float a, float b, float beta) {
  const float s = a * a + b * b;
  return s > 0.0f ? 0.5f * beta * std::pow(s, 0.5f * beta - 1.0f) : 0.0f;
}

}  // namespace

void CpuBackend::do_tv_loss_forward(Context&, const Tensor& x, float beta, Tensor& loss) {
  const std::int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const float* px = x.data<float>();
  double s = 0.0;
  if (beta == 2.0f) {
#pragma omp parallel for reduction(+ : s) if (x.numel() >= kParallelThreshold)
    for (std::int64_t p = 0; p < planes; ++p) {
      const float* q = px + p * h * w;
      for (std::int64_t i = 0; i < h; ++i) {
        for (std::int64_t j = 0; j < w; ++j) {
          const double v = q[i * w + j];
          if (i + 1 < h) {
            const double d = q[(i + 1) * w + j] - v;
            s += d * d;
          }
          if (j + 1 < w) {
            const double d = q[i * w + j + 1] - v;
            s += d * d;
          }
        }
      }
    }
  } else {
    const double half = 0.5 * beta;
#pragma omp parallel for reduction(+ : s) if (x.numel() >= kParallelThreshold)
    for (std::int64_t p = 0; p < planes; ++p) {
      const float* q = px + p * h * w;
      for (std::int64_t i = 0; i < h; ++i) {
        for (std::int64_t j = 0; j < w; ++j) {
          float a = 0, b = 0;
          tv_diffs(q, h, w, i, j, a, b);
          const double sq = static_cast<double>(a) * a + static_cast<double>(b) * b;
          if (sq > 0) s += std::pow(sq, half);
        }
      }
    }
  }
  loss.data<float>()[0] = static_cast<float>(s);
}

void CpuBackend::do_tv_loss_backward(Context&, const Tensor& x, float beta, float dloss, Tensor& dx, bool accumulate) {
  const std::int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const float* px = x.data<float>();
  float* pd = dx.data<float>();
  const float k = 2.0f * dloss;
  // Each element gathers the (up to three) pixel terms it takes part in, so no two threads write
  // the same output and no atomics are needed.
#pragma omp parallel for if (x.numel() >= kParallelThreshold)
  for (std::int64_t p = 0; p < planes; ++p) {
    const float* q = px + p * h * w;
    float* d = pd + p * h * w;
    for (std::int64_t i = 0; i < h; ++i) {
      for (std::int64_t j = 0; j < w; ++j) {
        const float v = q[i * w + j];
        float g = 0.0f;
        if (beta == 2.0f) {
          if (i > 0) g += v - q[(i - 1) * w + j];
          if (i + 1 < h) g -= q[(i + 1) * w + j] - v;
          if (j > 0) g += v - q[i * w + j - 1];
          if (j + 1 < w) g -= q[i * w + j + 1] - v;
        } else {
          float a = 0, b = 0;
          tv_diffs(q, h, w, i, j, a, b);
          g -= tv_factor(a, b, beta) * (a + b);
          if (i > 0) {
            tv_diffs(q, h, w, i - 1, j, a, b);
            g += tv_factor(a, b, beta) * a;
          }
          if (j > 0) {
            tv_diffs(q, h, w, i, j - 1, a, b);
            g += tv_factor(a, b, beta) * b;
          }
        }
        d[i * w + j] = (accumulate ? d[i * w + j] : 0.0f) + k * g;
      }
    }
  }
}

}  // namespace cudl
