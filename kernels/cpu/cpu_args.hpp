#pragma once
// Argument checks every CPU op makes before it touches raw pointers: a tensor from another
// device or of another dtype would otherwise be read as garbage (or segfault) instead of failing
// with a message that names the op.
#include <string_view>

#include "engine/check.hpp"

namespace cudl::cpu {

inline void host_tensor(std::string_view op, std::string_view name, const Tensor& t, DType dtype = DType::f32) {
  check::defined(op, name, t);
  check::on_device(op, name, t, Device::cpu());
  check::dtype_is(op, name, t, dtype);
}

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
