#pragma once
// Shared by the CPU ops: the size above which loops go parallel, and the guard that keeps OpenBLAS
// single-threaded inside our own OpenMP loops. (Argument checks happen once, in the op interface's
// front: engine/backend.cpp.)
#include <cstdint>

namespace cudl::cpu {

// Loops at or above this many elements are split across OpenMP threads; below it, thread start-up
// costs more than the loop.
inline constexpr std::int64_t kParallelThreshold = 1 << 15;

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
