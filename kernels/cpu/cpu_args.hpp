#pragma once
// Shared by the CPU ops: the size above which loops go parallel, the guard that keeps OpenBLAS
// single-threaded inside our own OpenMP loops, and the dtype dispatch and f32 widening that let
// one kernel template serve f32, bf16 and f16. (Argument checks happen once, in the op interface's
// front: engine/backend.cpp.)
#include <cstdint>
#include <string_view>

#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/half.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl::cpu {

// Loops at or above this many elements are split across OpenMP threads; below it, thread start-up
// costs more than the loop.
inline constexpr std::int64_t kParallelThreshold = 1 << 15;

// Row-major C = alpha op(A) op(B) + beta C with explicit leading dimensions, on the library every
// CPU GEMM uses (kernels/cpu/gemm.cpp says which and why): the Gram ops call it too, so no op
// wakes a second thread pool. `gemm` is the context's choice (Context::cpu_gemm).
void sgemm(CpuGemm gemm, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
           const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);

}  // namespace cudl::cpu

namespace cudl::cpu {

// OpenBLAS keeps its own thread pool. A GEMM called from inside one of our OpenMP loops would
// start that pool's threads on cores our loop already uses; for the loop's duration each GEMM
// runs on its calling thread instead.
class SingleThreadedBlas {
 public:
  explicit SingleThreadedBlas(bool active);
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace cudl::cpu

namespace cudl::cpu {

// Calls f(T{}) with T the element type of a float dtype (float, bf16 or f16). Kernels are
// templates over T that read through load() and write through store() (engine/half.hpp), so the
// dtype switch sits outside their loops and the float instance is the same code as before halves.
template <class F>
decltype(auto) dispatch_float(DType dtype, std::string_view op, F&& f) {
  switch (dtype) {
    case DType::f32:
      return f(float{});
    case DType::bf16:
      return f(bf16{});
    case DType::f16:
      return f(f16{});
    case DType::i32:
      break;
  }
  CUDL_THROW("{}: the CPU backend has no kernel for {}", op, dtype_name(dtype));
}

// Exact widening of n halves (or floats) into f32, and the one rounding back.
template <class T>
void widen(const T* src, float* dst, std::int64_t n) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) dst[i] = load(src[i]);
}

template <class T>
void narrow(const float* src, T* dst, std::int64_t n) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) dst[i] = store<T>(src[i]);
}

// Any float tensor into f32 (a copy for f32 itself), and f32 values into a float tensor of any
// dtype, rounding once.
void widen(const Tensor& src, float* dst);
void narrow(const float* src, Tensor& dst);

// An f32 tensor of t's shape in the context's pool: the widened path of the ops whose half inputs
// run through their f32 kernel (convolutions and GEMMs without a native half kernel). With
// `copy_values` it holds t's values widened (exact); else it is uninitialised, for an output.
class F32Copy {
 public:
  F32Copy(Context& ctx, const Tensor& t, bool copy_values);
  Tensor& tensor() { return tensor_; }
  float* data() { return tensor_.data<float>(); }

 private:
  Workspace buffer_;
  Tensor tensor_;
};

}  // namespace cudl::cpu
