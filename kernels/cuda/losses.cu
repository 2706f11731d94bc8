// Regression losses (mean squared error, mean absolute error) and total variation, forward and
// backward. CPU twin: kernels/cpu/losses.cpp. The forward passes reduce deterministically in two
// passes (kernels/cuda/reduce.cuh). MSE and L1 take any float dtype for a, b and da
// (float_types.cuh: widened exactly, terms in double, da rounded once; the backward passes use
// 16-byte accesses through launch_map); total variation is f32 only.
#include <cmath>
#include <cstdint>

#include "cudl/kernels/cuda/launch.cuh"
#include "cudl/kernels/cuda/reduce.cuh"

namespace cudl::cuda_detail {

namespace {

// The CPU's terms: differences formed in double from the (widened) inputs.
template <class T>
struct SquaredDiff {
  const T* a;
  const T* b;
  __device__ double operator()(std::int64_t i) const {
    const double d = static_cast<double>(widen(a[i])) - static_cast<double>(widen(b[i]));
    return d * d;
  }
};

template <class T>
struct AbsDiff {
  const T* a;
  const T* b;
  __device__ double operator()(std::int64_t i) const {
    return fabs(static_cast<double>(widen(a[i])) - static_cast<double>(widen(b[i])));
  }
};

// The squared differences of element i with its lower and right neighbours, x viewed as
// [planes, H, W]. Index is the type the row and column are computed in: 32-bit when the tensor has
// fewer than 2^32 elements (an image always does), so no 64-bit division per element.
template <class Index>
struct TotalVariation {
  const float* x;
  Index height, width;
  float beta;  // 2: the sum of squares; else Σ (a² + b²)^(β/2) per pixel (kernels/cpu/losses.cpp)
  __device__ double operator()(std::int64_t i) const {
    const Index j = static_cast<Index>(i);
    const Index w = j % width;
    const Index h = (j / width) % height;
    if (beta != 2.0f) {
      const float v = x[i];
      const float a = h + 1 < height ? x[i + width] - v : 0.0f;
      const float b = w + 1 < width ? x[i + 1] - v : 0.0f;
      const double s = static_cast<double>(a) * a + static_cast<double>(b) * b;
      return s > 0 ? pow(s, 0.5 * beta) : 0.0;
    }
    const double v = x[i];
    double acc = 0.0;
    if (h + 1 < height) {
      const double d = x[i + width] - v;
      acc += d * d;
    }
    if (w + 1 < width) {
      const double d = x[i + 1] - v;
      acc += d * d;
    }
    return acc;
  }
};

// A pixel's forward differences (0 at an edge) and (β/2)·s^(β/2−1), 0 where s = 0: the CPU's twins.
__device__ inline void tv_diffs(const float* q, unsigned height, unsigned width, unsigned i, unsigned j, float& a,
                                float& b) {
  const unsigned p = i * width + j;
  a = i + 1 < height ? q[p + width] - q[p] : 0.0f;
  b = j + 1 < width ? q[p + 1] - q[p] : 0.0f;
}

__device__ inline float tv_factor(float a, float b, float beta) {
  const float s = a * a + b * b;
  return s > 0.0f ? 0.5f * beta * powf(s, 0.5f * beta - 1.0f) : 0.0f;
}

struct MseGrad {
  float scale;
  __device__ float operator()(std::int64_t, float a, float b) const { return scale * (a - b); }
};

struct L1Grad {
  float scale;
  __device__ float operator()(std::int64_t, float a, float b) const {
    const float d = a - b;
    return d > 0.0f ? scale : (d < 0.0f ? -scale : 0.0f);  // sign(0) = 0, like PyTorch
  }
};

// Each element gathers the (up to four) differences it takes part in, in the CPU's order and
// form: g = Σ ±(difference), then dx = (accumulate ? dx : 0) + 2 dloss * g, with __fmul_rn and
// __fadd_rn so nvcc does not fuse the last step into an FMA the CPU does not do.
__global__ void tv_backward_kernel(Planes s, const float* x, float* dx, int height, int width, float k, bool accumulate,
                                   float beta) {
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t) {
    const float* q = x + plane * s.size;
    float* d = dx + plane * s.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      const unsigned i = p / static_cast<unsigned>(width);
      const unsigned j = p - i * static_cast<unsigned>(width);
      const float v = q[p];
      float g = 0.0f;
      if (beta == 2.0f) {
        if (i > 0) g += v - q[p - width];
        if (i + 1 < static_cast<unsigned>(height)) g -= q[p + width] - v;
        if (j > 0) g += v - q[p - 1];
        if (j + 1 < static_cast<unsigned>(width)) g -= q[p + 1] - v;
      } else {
        const auto hu = static_cast<unsigned>(height), wu = static_cast<unsigned>(width);
        float a = 0.0f, b = 0.0f;
        tv_diffs(q, hu, wu, i, j, a, b);
        g -= tv_factor(a, b, beta) * (a + b);
        if (i > 0) {
          tv_diffs(q, hu, wu, i - 1, j, a, b);
          g += tv_factor(a, b, beta) * a;
        }
        if (j > 0) {
          tv_diffs(q, hu, wu, i, j - 1, a, b);
          g += tv_factor(a, b, beta) * b;
        }
      }
      d[p] = __fadd_rn(accumulate ? d[p] : 0.0f, __fmul_rn(k, g));
    }
  });
}

}  // namespace

void launch_mse_loss_forward(const void* a, const void* b, FloatType t, std::int64_t n, float* loss, void* scratch,
                             cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    reduce_to_scalar<SumOp>(SquaredDiff<T>{static_cast<const T*>(a), static_cast<const T*>(b)}, n,
                            DivideBy{static_cast<double>(n)}, loss, scratch, stream);
  });
}

void launch_l1_loss_forward(const void* a, const void* b, FloatType t, std::int64_t n, float* loss, void* scratch,
                            cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    reduce_to_scalar<SumOp>(AbsDiff<T>{static_cast<const T*>(a), static_cast<const T*>(b)}, n,
                            DivideBy{static_cast<double>(n)}, loss, scratch, stream);
  });
}

void launch_mse_loss_backward(const void* a, const void* b, void* da, FloatType t, std::int64_t n, float scale,
                              cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map("mse_backward_kernel", MseGrad{scale}, n, stream, static_cast<T*>(da), static_cast<const T*>(a),
               static_cast<const T*>(b));
  });
}

void launch_l1_loss_backward(const void* a, const void* b, void* da, FloatType t, std::int64_t n, float scale,
                             cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map("l1_backward_kernel", L1Grad{scale}, n, stream, static_cast<T*>(da), static_cast<const T*>(a),
               static_cast<const T*>(b));
  });
}

void launch_tv_loss_forward(const float* x, std::int64_t planes, std::int64_t height, std::int64_t width, float beta,
                            float* loss, void* scratch, cudaStream_t stream) {
  const std::int64_t n = planes * height * width;
  if (n <= static_cast<std::int64_t>(UINT32_MAX)) {
    const TotalVariation<unsigned> tv{x, static_cast<unsigned>(height), static_cast<unsigned>(width), beta};
    reduce_to_scalar<SumOp>(tv, n, DivideBy{1.0}, loss, scratch, stream);
  } else {
    reduce_to_scalar<SumOp>(TotalVariation<std::int64_t>{x, height, width, beta}, n, DivideBy{1.0}, loss, scratch,
                            stream);
  }
}

void launch_tv_loss_backward(const float* x, float* dx, const Planes& s, int height, int width, float beta, float dloss,
                             bool accumulate, cudaStream_t stream) {
  launch_planes("tv_backward_kernel", tv_backward_kernel, s, stream, x, dx, height, width, 2.0f * dloss, accumulate,
                beta);
}

}  // namespace cudl::cuda_detail
