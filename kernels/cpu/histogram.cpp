// match_histograms: histogram matching by sorting, row by row. CUDA twin: kernels/cuda/histogram.cu.
// Both sort the same distinct 64-bit keys (engine/float_order.hpp), so ranks, quantiles and
// therefore every output bit agree.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cudl/engine/float_order.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"

namespace cudl {

namespace {

std::vector<std::uint64_t> sorted_keys(const float* row, std::int64_t n) {
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    keys[static_cast<std::size_t>(i)] = float_order::ascending_key(row[i], static_cast<std::uint32_t>(i));
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace

void CpuBackend::do_match_histograms(Context&, const Tensor& source, const Tensor& reference, Tensor& out) {
  const std::int64_t rows = source.dim(0), n = source.dim(1), m = reference.dim(1);
  const float* src = source.data<float>();
  const float* ref = reference.data<float>();
  float* dst = out.data<float>();
  // Rows are colour channels (three of them): one thread each; a row's sort is the work.
#pragma omp parallel for if (rows > 1 && n * rows >= cpu::kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::vector<std::uint64_t> s = sorted_keys(src + r * n, n);
    const std::vector<std::uint64_t> q = sorted_keys(ref + r * m, m);
    // Gather first: out may be source.
    std::vector<float> matched(static_cast<std::size_t>(n));
    for (std::int64_t rank = 0; rank < n; ++rank) {
      const std::uint32_t i = float_order::ascending_position(s[static_cast<std::size_t>(rank)]);
      const auto quantile =
          static_cast<std::size_t>((2 * static_cast<std::uint64_t>(rank) + 1) * static_cast<std::uint64_t>(m) /
                                   (2 * static_cast<std::uint64_t>(n)));
      const float v = src[r * n + i];
      matched[i] = v != v ? v : ref[r * m + float_order::ascending_position(q[quantile])];
    }
    std::copy(matched.begin(), matched.end(), dst + r * n);
  }
}

}  // namespace cudl
