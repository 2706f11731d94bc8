// top_k: the k best columns of each row of [N, K] logits. CUDA twin: kernels/cuda/topk.cu.
// Both backends rank by the same 64-bit key (rank_key below, and its copy in topk.cu), so their
// answers are identical, ties and NaN included, not merely close.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

namespace {

// A float as an unsigned number that orders like the float: NaN 0 (below everything, -inf
// included), -0 as +0 (they are equal, so the column decides), otherwise the sign bit flipped for
// positives and every bit for negatives (the usual radix-sort order of IEEE floats).
std::uint32_t order_bits(float v) {
  if (std::isnan(v)) return 0;
  if (v == 0.0f) v = 0.0f;
  const auto u = std::bit_cast<std::uint32_t>(v);
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

// Larger is better and every column's key is distinct: the value's order in the high half, the
// complement of the column in the low half (a lower column wins a tie). The CUDA backend sorts
// these keys descending per row.
std::uint64_t rank_key(float v, std::int64_t col) {
  return (static_cast<std::uint64_t>(order_bits(v)) << 32) | (0xFFFFFFFFu - static_cast<std::uint32_t>(col));
}

template <class T>
void top_k_rows(const T* x, std::int64_t n, std::int64_t cols, std::int64_t k, std::int32_t* indices, float* values) {
  const auto kk = static_cast<std::ptrdiff_t>(k);
#pragma omp parallel for if (n * cols >= cpu::kParallelThreshold)
  for (std::int64_t r = 0; r < n; ++r) {
    const T* row = x + r * cols;
    std::vector<std::uint64_t> keys(static_cast<std::size_t>(cols));
    for (std::int64_t c = 0; c < cols; ++c) keys[static_cast<std::size_t>(c)] = rank_key(load(row[c]), c);
    std::partial_sort(keys.begin(), keys.begin() + kk, keys.end(), std::greater<>());
    for (std::int64_t j = 0; j < k; ++j) {
      const auto col =
          static_cast<std::int64_t>(0xFFFFFFFFu - static_cast<std::uint32_t>(keys[static_cast<std::size_t>(j)]));
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
