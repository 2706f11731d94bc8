// The per-channel affine map over dim 1 (input normalisation) and its backward (batch norm is
// cuDNN's, kernels/cudnn/normalization.cpp). CPU twin: kernels/cpu/normalization.cpp. x, y, dy and
// dx are any float dtype (float_types.cuh: float inside, one rounding per stored value); scale and
// shift are f32. 16-byte accesses when each plane holds whole packs and the pointers are aligned.
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

}  // namespace cudl::cuda_detail
