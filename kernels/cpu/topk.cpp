// top_k: the k best columns of each row of [N, K] logits. CUDA twin: kernels/cuda/topk.cu.
// Both backends rank by the same 64-bit key (engine/float_order.hpp's descending_key), so their
// answers are identical, ties and NaN included, not merely close.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "cudl/engine/float_order.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

namespace {

template <class T>
void top_k_rows(const T* x, std::int64_t n, std::int64_t cols, std::int64_t k, std::int32_t* indices, float* values) {
  const auto kk = static_cast<std::ptrdiff_t>(k);
#pragma omp parallel for if (n * cols >= cpu::kParallelThreshold)
  for (std::int64_t r = 0; r < n; ++r) {
    const T* row = x + r * cols;
    std::vector<std::uint64_t> keys(static_cast<std::size_t>(cols));
    for (std::int64_t c = 0; c < cols; ++c)
      keys[static_cast<std::size_t>(c)] = float_order::descending_key(load(row[c]), static_cast<std::uint32_t>(c));
    std::partial_sort(keys.begin(), keys.begin() + kk, keys.end(), std::greater<>());
    for (std::int64_t j = 0; j < k; ++j) {
      const auto col = static_cast<std::int64_t>(float_order::descending_position(keys[static_cast<std::size_t>(j)]));
      indices[r * k + j] = static_cast<std::int32_t>(col);
      if (values != nullptr) values[r * k + j] = load(row[col]);
    }
  }
}

}  // namespace

void CpuBackend::do_top_k(Context&, const Tensor& x, Tensor& indices, Tensor& values) {
  // Columns are stored as 32-bit complements and returned as i32.
  CUDL_CHECK(x.dim(1) <= INT32_MAX, "top_k: x={} has more than 2^31-1 columns", x.shape());
  float* pv = values.defined() ? values.data<float>() : nullptr;
  cpu::dispatch_float(x.dtype(), "top_k", [&](auto tag) {
    top_k_rows(x.data<decltype(tag)>(), x.dim(0), x.dim(1), indices.dim(1), indices.data<std::int32_t>(), pv);
  });
}

}  // namespace cudl
