// The per-channel affine map over dim 1 (input normalisation) and its backward, and batch norm +
// ReLU fused for training (plain batch norm is cuDNN's, kernels/cudnn/normalization.cpp). CPU twin:
// kernels/cpu/normalization.cpp. x, y, dy and dx are any float dtype (float_types.cuh: float
// inside, one rounding per stored value); scale, shift and the batch-norm parameters and statistics
// are f32. 16-byte accesses when each plane holds whole packs and the pointers are aligned.
#include <initializer_list>

#include "cudl/kernels/cuda/float_types.cuh"

namespace cudl::cuda_detail {

namespace {

// s.size counts packs of N elements (the launcher divides the plane size by N).
template <int N, class T>
__global__ void channel_affine_kernel(Planes s, const T* x, const float* scale, const float* shift, T* y) {
  using P = Pack<T, N>;
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float k = scale[c], b = shift[c];
    const P* xp = reinterpret_cast<const P*>(x) + plane * s.size;
    P* yp = reinterpret_cast<P*>(y) + plane * s.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      const P xv = xp[p];
      P yv;
      // __fmul_rn/__fadd_rn: no FMA contraction, so y matches the CPU's x * s + b bit for bit.
#pragma unroll
      for (int j = 0; j < N; ++j) yv.v[j] = narrow<T>(__fadd_rn(__fmul_rn(widen(xv.v[j]), k), b));
      yp[p] = yv;
    }
  });
}

template <int N, class T>
__global__ void channel_scale_kernel(Planes s, const T* dy, const float* scale, T* dx) {
  using P = Pack<T, N>;
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float k = scale[c];
    const P* dyp = reinterpret_cast<const P*>(dy) + plane * s.size;
    P* dxp = reinterpret_cast<P*>(dx) + plane * s.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      const P g = dyp[p];
      P r;
#pragma unroll
      for (int j = 0; j < N; ++j) r.v[j] = narrow<T>(widen(g.v[j]) * k);
      dxp[p] = r;
    }
  });
}

// Launches kernel<N, T> over packs of N when every plane holds whole packs and both pointers are
// 16-byte aligned, else kernel<1, T>.
template <class T, class... Args>
void launch_channel(const char* name, void (*vector_kernel)(Planes, Args...), void (*scalar_kernel)(Planes, Args...),
                    const Planes& s, const void* in, const void* out, cudaStream_t stream, Args... args) {
  constexpr int N = kVec<T>;
  if (s.size % N == 0 && aligned16(in) && aligned16(out)) {
    Planes packs = s;
    packs.size = s.size / N;
    launch_planes(name, vector_kernel, packs, stream, args...);
  } else {
    launch_planes(name, scalar_kernel, s, stream, args...);
  }
}

// ---- batch norm + ReLU, fused for training ----
// The per-channel sums (the statistics, the backward's two sums) run one block per channel with
// double accumulators, as the CPU's loops do, combined in a fixed order (each thread's strided
// share, then the warps, then the block), so results are the same run to run. The elementwise
// passes (the apply, dx) are plane kernels like channel_affine's.
constexpr unsigned kSumBlock = 256;

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// The block's total of v, returned to every thread (`shared` holds kSumBlock / 32 doubles).
__device__ double block_sum(double v, double* shared) {
  __shared__ double total;
  v = warp_sum(v);
  if ((threadIdx.x & 31u) == 0) shared[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) t += shared[w];
    total = t;
  }
  __syncthreads();
  const double result = total;
  __syncthreads();  // shared and total are reused by the next call
  return result;
}

// Calls f(i) for this thread's share of channel `c`'s values (flat indices): plane by plane when a
// plane fills the block, else over the channel's values as one range (so that [N, C] and 7x7 maps
// keep every thread busy), at the price of a division per value.
template <class F>
__device__ __forceinline__ void for_channel(const Planes& s, std::int64_t c, F f) {
  const auto size = static_cast<unsigned>(s.size);
  if (size >= blockDim.x) {
    for (std::int64_t n = 0; n < s.samples; ++n) {
      const std::int64_t base = (n * s.channels + c) * s.size;
      for (unsigned i = threadIdx.x; i < size; i += blockDim.x) f(base + i);
    }
    return;
  }
  const std::int64_t values = s.samples * s.size;
  for (std::int64_t j = threadIdx.x; j < values; j += blockDim.x) {
    const std::int64_t n = j / s.size;
    f((n * s.channels + c) * s.size + (j - n * s.size));
  }
}

// Block c: channel c's batch mean and biased variance in two passes (no cancellation for data far
// from zero), the saved mean and 1/sqrt(var + eps), and the running update with the unbiased
// variance: batchnorm_forward_train's conventions (engine/backend.hpp).
template <class T>
__global__ void bn_stats_kernel(Planes s, const T* x, float eps, float momentum, float* running_mean,
                                float* running_var, float* save_mean, float* save_invstd) {
  __shared__ double partial[kSumBlock / 32];
  const std::int64_t c = blockIdx.x;
  const double count = static_cast<double>(s.samples) * s.size;
  double sum = 0;
  for_channel(s, c, [&](std::int64_t i) { sum += widen(x[i]); });
  const double mean = block_sum(sum, partial) / count;
  double ss = 0;
  for_channel(s, c, [&](std::int64_t i) {
    const double dev = widen(x[i]) - mean;
    ss += dev * dev;
  });
  const double var = block_sum(ss, partial) / count;
  if (threadIdx.x != 0) return;
  const double mom = momentum;
  save_mean[c] = static_cast<float>(mean);
  save_invstd[c] = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
  running_mean[c] = static_cast<float>((1.0 - mom) * running_mean[c] + mom * mean);
  running_var[c] = static_cast<float>((1.0 - mom) * running_var[c] + mom * var * count / (count - 1.0));
}

// y = max((x - mean) * gamma * invstd + beta, 0), rounded once (v > 0 ? v : 0: NaN gives 0, as
// the ReLU kernel does).
template <int N, class T>
__global__ void bn_relu_apply_kernel(Planes s, const T* x, const float* gamma, const float* beta, const float* mean,
                                     const float* invstd, T* y) {
  using P = Pack<T, N>;
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float mul = gamma[c] * invstd[c], m = mean[c], b = beta[c];
    const P* xp = reinterpret_cast<const P*>(x) + plane * s.size;
    P* yp = reinterpret_cast<P*>(y) + plane * s.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      const P xv = xp[p];
      P yv;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float v = (widen(xv.v[j]) - m) * mul + b;
        yv.v[j] = narrow<T>(v > 0.0f ? v : 0.0f);
      }
      yp[p] = yv;
    }
  });
}

// Block c: with g = dy where y > 0, else 0 (the ReLU's mask, read from the fused output) and
// x̂ = (x - mean) * invstd, dbeta += Σ g and dgamma += Σ g x̂; then dx = A g + B (x - mean) + C per
// channel, the CPU's gamma * invstd / m * (m g - Σ g - x̂ Σ g x̂) with its coefficients folded here
// in double: coef[3c..3c+2] = A, B, C.
template <class T>
__global__ void bn_relu_backward_sums_kernel(Planes s, const T* x, const T* y, const T* dy, const float* gamma,
                                             const float* mean, const float* invstd, float* dgamma, float* dbeta,
                                             float* coef) {
  __shared__ double partial[kSumBlock / 32];
  const std::int64_t c = blockIdx.x;
  const double m = mean[c], inv = invstd[c];
  double sum_g = 0, sum_gx = 0;
  for_channel(s, c, [&](std::int64_t i) {
    const float g = widen(y[i]) > 0.0f ? widen(dy[i]) : 0.0f;
    sum_g += g;
    sum_gx += g * ((widen(x[i]) - m) * inv);
  });
  sum_g = block_sum(sum_g, partial);
  sum_gx = block_sum(sum_gx, partial);
  if (threadIdx.x != 0) return;
  const double count = static_cast<double>(s.samples) * s.size;
  const double k = static_cast<double>(gamma[c]) * inv / count;
  coef[3 * c] = static_cast<float>(k * count);
  coef[3 * c + 1] = static_cast<float>(-k * sum_gx * inv);
  coef[3 * c + 2] = static_cast<float>(-k * sum_g);
  dgamma[c] = static_cast<float>(dgamma[c] + sum_gx);
  dbeta[c] = static_cast<float>(dbeta[c] + sum_g);
}

template <int N, class T>
__global__ void bn_relu_backward_dx_kernel(Planes s, const T* x, const T* y, const T* dy, const float* mean,
                                           const float* coef, T* dx) {
  using P = Pack<T, N>;
  const auto size = static_cast<unsigned>(s.size);
  for_each_plane(s, [&](std::int64_t plane, std::int64_t c) {
    const float a = coef[3 * c], b = coef[3 * c + 1], k = coef[3 * c + 2], m = mean[c];
    const std::int64_t base = plane * s.size;
    const P* xp = reinterpret_cast<const P*>(x) + base;
    const P* yp = reinterpret_cast<const P*>(y) + base;
    const P* gp = reinterpret_cast<const P*>(dy) + base;
    P* dxp = reinterpret_cast<P*>(dx) + base;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      const P xv = xp[p], yv = yp[p], gv = gp[p];
      P r;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float g = widen(yv.v[j]) > 0.0f ? widen(gv.v[j]) : 0.0f;
        r.v[j] = narrow<T>(a * g + b * (widen(xv.v[j]) - m) + k);
      }
      dxp[p] = r;
    }
  });
}

// Whether every pointer is 16-byte aligned and each plane holds whole packs of T.
template <class T>
bool packs_fit(const Planes& s, std::initializer_list<const void*> pointers) {
  if (s.size % kVec<T> != 0) return false;
  for (const void* p : pointers)
    if (!aligned16(p)) return false;
  return true;
}

}  // namespace

void launch_channel_affine(const void* x, const float* scale, const float* shift, void* y, FloatType t, const Planes& s,
                           cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_channel<T>("channel_affine_kernel", channel_affine_kernel<kVec<T>, T>, channel_affine_kernel<1, T>, s, x, y,
                      stream, static_cast<const T*>(x), scale, shift, static_cast<T*>(y));
  });
}

void launch_channel_scale(const void* dy, const float* scale, void* dx, FloatType t, const Planes& s,
                          cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_channel<T>("channel_scale_kernel", channel_scale_kernel<kVec<T>, T>, channel_scale_kernel<1, T>, s, dy, dx,
                      stream, static_cast<const T*>(dy), scale, static_cast<T*>(dx));
  });
}

void launch_batchnorm_relu_forward_train(const void* x, const float* gamma, const float* beta, float eps,
                                         float momentum, float* running_mean, float* running_var, void* y,
                                         float* save_mean, float* save_invstd, FloatType t, const Planes& s,
                                         cudaStream_t stream) {
  if (s.samples <= 0 || s.channels <= 0 || s.size <= 0) return;
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_grid("bn_stats_kernel", bn_stats_kernel<T>, dim3(static_cast<unsigned>(s.channels)), dim3(kSumBlock), stream,
                s, static_cast<const T*>(x), eps, momentum, running_mean, running_var, save_mean, save_invstd);
    launch_channel<T>("bn_relu_apply_kernel", bn_relu_apply_kernel<kVec<T>, T>, bn_relu_apply_kernel<1, T>, s, x, y,
                      stream, static_cast<const T*>(x), gamma, beta, static_cast<const float*>(save_mean),
                      static_cast<const float*>(save_invstd), static_cast<T*>(y));
  });
}

void launch_batchnorm_relu_backward(const void* x, const void* y, const void* dy, const float* gamma,
                                    const float* save_mean, const float* save_invstd, void* dx, float* dgamma,
                                    float* dbeta, float* coef, FloatType t, const Planes& s, cudaStream_t stream) {
  if (s.samples <= 0 || s.channels <= 0 || s.size <= 0) return;
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto* xt = static_cast<const T*>(x);
    const auto* yt = static_cast<const T*>(y);
    const auto* dyt = static_cast<const T*>(dy);
    launch_grid("bn_relu_backward_sums_kernel", bn_relu_backward_sums_kernel<T>,
                dim3(static_cast<unsigned>(s.channels)), dim3(kSumBlock), stream, s, xt, yt, dyt, gamma, save_mean,
                save_invstd, dgamma, dbeta, coef);
    const float* cf = coef;
    if (packs_fit<T>(s, {x, y, dy, dx})) {
      Planes packs = s;
      packs.size = s.size / kVec<T>;
      launch_planes("bn_relu_backward_dx_kernel", bn_relu_backward_dx_kernel<kVec<T>, T>, packs, stream, xt, yt, dyt,
                    save_mean, cf, static_cast<T*>(dx));
    } else {
      launch_planes("bn_relu_backward_dx_kernel", bn_relu_backward_dx_kernel<1, T>, s, stream, xt, yt, dyt, save_mean,
                    cf, static_cast<T*>(dx));
    }
  });
}

}  // namespace cudl::cuda_detail
