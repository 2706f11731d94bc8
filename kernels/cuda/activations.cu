// Pointwise activations: y = f(x), dx = f'(x) * dy. CPU twin: kernels/cpu/activations.cpp.
// Templated on the element type (kernels/cuda/float_types.cuh: f32, bf16, f16; float inside) and on
// the activation, so the inner loop has no switch; both are chosen in the launchers. Vectorised
// (16-byte accesses) through launch_map.
#include <cmath>

#include "cudl/kernels/cuda/float_types.cuh"

namespace cudl::cuda_detail {

namespace {

template <Activation A>
__device__ __forceinline__ float activate(float alpha, float x) {
  if constexpr (A == Activation::relu) {
    return x > 0.0f ? x : 0.0f;
  } else if constexpr (A == Activation::leaky_relu) {
    return x > 0.0f ? x : alpha * x;
  } else if constexpr (A == Activation::sigmoid) {
    return 1.0f / (1.0f + expf(-x));
  } else if constexpr (A == Activation::relu6) {
    return x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
  } else {
    return tanhf(x);
  }
}

// `saved` is x for ReLU-like activations and y for sigmoid/tanh.
template <Activation A>
__device__ __forceinline__ float activate_grad(float alpha, float saved, float dy) {
  if constexpr (A == Activation::relu) {
    return saved > 0.0f ? dy : 0.0f;
  } else if constexpr (A == Activation::leaky_relu) {
    return saved > 0.0f ? dy : alpha * dy;
  } else if constexpr (A == Activation::sigmoid) {
    return dy * saved * (1.0f - saved);
  } else if constexpr (A == Activation::relu6) {
    return saved > 0.0f && saved < 6.0f ? dy : 0.0f;
  } else {
    return dy * __fsub_rn(1.0f, __fmul_rn(saved, saved));  // y*y rounded first, as on the CPU (no FMA)
  }
}

template <Activation A>
struct Forward {
  float alpha;
  __device__ float operator()(std::int64_t, float x) const { return activate<A>(alpha, x); }
};

template <Activation A>
struct Backward {
  float alpha;
  __device__ float operator()(std::int64_t, float saved, float dy) const { return activate_grad<A>(alpha, saved, dy); }
};

// Calls f(std::integral_constant<Activation, A>{}) for the runtime activation a.
template <class F>
void dispatch_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::relu:
      return f(std::integral_constant<Activation, Activation::relu>{});
    case Activation::leaky_relu:
      return f(std::integral_constant<Activation, Activation::leaky_relu>{});
    case Activation::sigmoid:
      return f(std::integral_constant<Activation, Activation::sigmoid>{});
    case Activation::tanh:
      return f(std::integral_constant<Activation, Activation::tanh>{});
    case Activation::relu6:
      return f(std::integral_constant<Activation, Activation::relu6>{});
  }
}

}  // namespace

void launch_activation_forward(Activation a, float alpha, const void* x, void* y, FloatType t, std::int64_t n,
                               cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_activation(a, [&](auto act) {
      launch_map("activation_forward_kernel", Forward<decltype(act)::value>{alpha}, n, stream, static_cast<T*>(y),
                 static_cast<const T*>(x));
    });
  });
}

void launch_activation_backward(Activation a, float alpha, const void* saved, const void* dy, void* dx, FloatType t,
                                std::int64_t n, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_activation(a, [&](auto act) {
      launch_map("activation_backward_kernel", Backward<decltype(act)::value>{alpha}, n, stream, static_cast<T*>(dx),
                 static_cast<const T*>(saved), static_cast<const T*>(dy));
    });
  });
}

}  // namespace cudl::cuda_detail
