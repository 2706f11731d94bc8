#include <cblas.h>

#include "cudl/kernels/cpu/cpu_args.hpp"

namespace cudl::cpu {

SingleThreadedBlas::SingleThreadedBlas(bool active) {
  if (!active) return;
  previous_ = openblas_get_num_threads();
  openblas_set_num_threads(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (previous_ > 0) openblas_set_num_threads(previous_);
}

}  // namespace cudl::cpu
