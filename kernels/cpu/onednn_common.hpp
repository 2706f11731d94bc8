#pragma once
// What the CPU backend's oneDNN users share: one engine and the dtype mapping (onednn_conv.cpp: the
// convolutions; onednn_matmul.cpp: the half GEMMs; onednn_linear.cpp: Linear + bias + ReLU), and
// for the two matmul users, when a product stays on the calling thread. Only for builds with oneDNN.
#include <omp.h>

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>

#include "cudl/engine/dtype.hpp"

namespace cudl::cpu::onednn_detail {

// As in kernels/cpu/gemm.cpp: a product this small runs on the calling thread (a team's barrier
// costs more than it saves, and waits for descheduled threads on a loaded machine).
inline constexpr std::int64_t kSerialGemmMacs = 1 << 24;

inline dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// oneDNN's name for a float dtype (undef for i32, which no matmul takes).
inline dnnl::memory::data_type to_dnnl(DType t) {
  using dt = dnnl::memory::data_type;
  switch (t) {
    case DType::f32:
      return dt::f32;
    case DType::bf16:
      return dt::bf16;
    case DType::f16:
      return dt::f16;
    case DType::i32:
      break;
  }
  return dt::undef;
}

// Sets this thread's OpenMP team size for its lifetime (oneDNN sizes its team from it).
class SerialTeam {
 public:
  explicit SerialTeam(bool serial) : previous_(omp_get_max_threads()), active_(serial) {
    if (active_) omp_set_num_threads(1);
  }
  ~SerialTeam() {
    if (active_) omp_set_num_threads(previous_);
  }
  SerialTeam(const SerialTeam&) = delete;
  SerialTeam& operator=(const SerialTeam&) = delete;

 private:
  int previous_;
  bool active_;
};

}  // namespace cudl::cpu::onednn_detail
