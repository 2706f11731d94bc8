#pragma once
// Shared by the CPU ops: the size above which loops go parallel, and the guard that keeps OpenBLAS
// single-threaded inside our own OpenMP loops. (Argument checks happen once, in the op interface's
// front: engine/backend.cpp.)
#include <cstdint>

namespace cudl::cpu {

// Loops at or above this many elements are split across OpenMP threads; below it, thread start-up
// costs more than the loop.
inline constexpr std::int64_t kParallelThreshold = 1 << 15;

// Row-major C = alpha op(A) op(B) + beta C with explicit leading dimensions, on the library every
// CPU GEMM uses (kernels/cpu/gemm.cpp says which and why): the Gram ops call it too, so no op
// wakes a second thread pool.
void sgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
           std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);

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
