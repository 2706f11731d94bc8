// match_histograms on the device: histogram matching by sorting, so `cudl style --color-transfer
// histogram` recolours its style images where the run is. CPU twin: kernels/cpu/histogram.cpp.
//
// Every value becomes the CPU's 64-bit key (engine/float_order.hpp's ascending_key: the value's
// order, then its column); CUB's radix sort orders each row's keys, source's and reference's; one thread per rank then
// reads the position its key carries and the reference key at the rank's quantile. Distinct keys make the order, and so
// every output bit, the CPU's.
#include <algorithm>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "cudl/engine/float_order.hpp"
#include "cudl/kernels/cuda/launch.cuh"
#include "cudl/kernels/cuda/scratch.cuh"

namespace cudl::cuda_detail {

namespace {

__global__ void histogram_keys_kernel(std::int64_t total, const float* x, std::int64_t cols, std::uint64_t* keys) {
  for (std::int64_t i = global_thread(); i < total; i += global_stride())
    keys[i] = float_order::ascending_key(x[i], static_cast<std::uint32_t>(i % cols));
}

// Item t is rank t % n of row t / n.
__global__ void histogram_pick_kernel(std::int64_t total, const float* source, const float* reference,
                                      const std::uint64_t* source_sorted, const std::uint64_t* reference_sorted,
                                      std::int64_t n, std::int64_t m, float* out) {
  for (std::int64_t t = global_thread(); t < total; t += global_stride()) {
    const std::int64_t r = t / n;
    const auto rank = static_cast<std::uint64_t>(t - r * n);
    const std::int64_t i = r * n + float_order::ascending_position(source_sorted[t]);
    const auto quantile =
        static_cast<std::int64_t>((2 * rank + 1) * static_cast<std::uint64_t>(m) / (2 * static_cast<std::uint64_t>(n)));
    const float v = source[i];
    out[i] = v != v ? v : reference[r * m + float_order::ascending_position(reference_sorted[r * m + quantile])];
  }
}

// Sorts rows * cols keys, ascending within each row; with storage null, only sizes the storage.
// Rows are few and long here (an image's three channels): one device-wide sort per row keeps the
// whole GPU on each, where a segmented sort gives a segment one block.
void sort_rows(void* storage, std::size_t& bytes, const std::uint64_t* in, std::uint64_t* out, std::int64_t rows,
               std::int64_t cols, cudaStream_t stream) {
  if (storage == nullptr) {
    CUDL_STATUS_CHECK(cub::DeviceRadixSort::SortKeys(storage, bytes, in, out, static_cast<int>(cols), 0, 64, stream));
    return;
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    std::size_t row_bytes = bytes;
    CUDL_STATUS_CHECK(cub::DeviceRadixSort::SortKeys(storage, row_bytes, in + r * cols, out + r * cols,
                                                     static_cast<int>(cols), 0, 64, stream));
  }
}

std::size_t sort_bytes(std::int64_t cols) {
  std::size_t bytes = 0;
  sort_rows(nullptr, bytes, nullptr, nullptr, 1, cols, nullptr);
  return bytes;
}

}  // namespace

std::size_t match_histograms_scratch_bytes(std::int64_t rows, std::int64_t n, std::int64_t m) {
  return 2 * sort_key_bytes(rows * n) + 2 * sort_key_bytes(rows * m) +
         scratch_aligned(std::max(sort_bytes(n), sort_bytes(m)));
}

void launch_match_histograms(const float* source, const float* reference, float* out, std::int64_t rows, std::int64_t n,
                             std::int64_t m, void* scratch, std::size_t scratch_bytes, cudaStream_t stream) {
  if (rows * n <= 0) return;
  // The scratch in match_histograms_scratch_bytes' order: the four key buffers, then CUB's storage.
  char* next = static_cast<char*>(scratch);
  auto take_keys = [&](std::int64_t count) {
    auto* keys = reinterpret_cast<std::uint64_t*>(next);
    next += sort_key_bytes(count);
    return keys;
  };
  std::uint64_t* source_in = take_keys(rows * n);
  std::uint64_t* source_out = take_keys(rows * n);
  std::uint64_t* reference_in = take_keys(rows * m);
  std::uint64_t* reference_out = take_keys(rows * m);
  std::size_t storage_bytes = scratch_bytes - static_cast<std::size_t>(next - static_cast<char*>(scratch));
  launch_linear("histogram_keys_kernel", histogram_keys_kernel, rows * n, stream, source, n, source_in);
  launch_linear("histogram_keys_kernel", histogram_keys_kernel, rows * m, stream, reference, m, reference_in);
  sort_rows(next, storage_bytes, source_in, source_out, rows, n, stream);
  sort_rows(next, storage_bytes, reference_in, reference_out, rows, m, stream);
  launch_linear("histogram_pick_kernel", histogram_pick_kernel, rows * n, stream, source, reference, source_out,
                reference_out, n, m, out);
}

}  // namespace cudl::cuda_detail
