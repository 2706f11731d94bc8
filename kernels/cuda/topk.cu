// top_k on the device: the k best columns of each row of [N, K] logits, so that classify, predict
// and eval copy N*k indices to the host instead of N*K logits. CPU twin: kernels/cpu/topk.cpp.
//
// Each element becomes one 64-bit key that orders exactly as the CPU ranks (engine/float_order.hpp's
// descending_key, the same function on both), every key of a row distinct; CUB's segmented radix sort orders each row's
// keys descending, and the first k of each row are decoded. Distinct keys make the result independent of the sort's
// stability and of its internal order: the same bits as the CPU's partial_sort. Thrust serves here for the row-offset
// iterators only; its headers stay in this one file.
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <cstdint>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "cudl/engine/float_order.hpp"
#include "cudl/kernels/cuda/float_types.cuh"
#include "cudl/kernels/cuda/launch.cuh"
#include "cudl/kernels/cuda/scratch.cuh"

namespace cudl::cuda_detail {

namespace {

template <class T>
__global__ void top_k_keys_kernel(std::int64_t n, const T* x, std::int64_t cols, std::uint64_t* keys) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride())
    keys[i] = float_order::descending_key(widen(x[i]), static_cast<std::uint32_t>(i % cols));
}

template <class T>
__global__ void top_k_pick_kernel(std::int64_t n, const T* x, const std::uint64_t* sorted, std::int64_t cols,
                                  std::int64_t k, std::int32_t* indices, float* values) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const std::int64_t r = i / k, j = i - r * k;
    const auto col = static_cast<std::int64_t>(float_order::descending_position(sorted[r * cols + j]));
    indices[i] = static_cast<std::int32_t>(col);
    if (values != nullptr) values[i] = widen(x[r * cols + col]);
  }
}

// Row r's keys start at r * cols (the end offsets are the same iterator shifted by one row).
struct RowStart {
  int cols;
  __host__ __device__ int operator()(int r) const { return r * cols; }
};

using RowOffsets = thrust::transform_iterator<RowStart, thrust::counting_iterator<int>>;

RowOffsets row_offsets(std::int64_t cols) {
  return thrust::make_transform_iterator(thrust::make_counting_iterator(0), RowStart{static_cast<int>(cols)});
}

// CUB's storage for sorting rows * cols keys (asked with a null buffer: no work, no launch).
std::size_t sort_bytes(std::int64_t rows, std::int64_t cols) {
  std::size_t bytes = 0;
  const RowOffsets begin = row_offsets(cols);
  CUDL_STATUS_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(
      nullptr, bytes, static_cast<const std::uint64_t*>(nullptr), static_cast<std::uint64_t*>(nullptr),
      static_cast<int>(rows * cols), static_cast<int>(rows), begin, begin + 1));
  return bytes;
}

}  // namespace

std::size_t top_k_scratch_bytes(std::int64_t rows, std::int64_t cols) {
  const std::size_t keys = sort_key_bytes(rows * cols);
  return 2 * keys + scratch_aligned(sort_bytes(rows, cols));
}

void launch_top_k(const void* x, FloatType t, std::int64_t rows, std::int64_t cols, std::int64_t k,
                  std::int32_t* indices, float* values, void* scratch, std::size_t scratch_bytes, cudaStream_t stream) {
  const std::int64_t n = rows * cols;
  if (n <= 0) return;
  const std::size_t key_bytes = sort_key_bytes(n);
  auto* keys_in = static_cast<std::uint64_t*>(scratch);
  auto* keys_out = reinterpret_cast<std::uint64_t*>(static_cast<char*>(scratch) + key_bytes);
  void* sort_storage = static_cast<char*>(scratch) + 2 * key_bytes;
  std::size_t sort_storage_bytes = scratch_bytes - 2 * key_bytes;
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xt = static_cast<const T*>(x);
    launch_linear("top_k_keys_kernel", top_k_keys_kernel<T>, n, stream, xt, cols, keys_in);
    const RowOffsets begin = row_offsets(cols);
    CUDL_STATUS_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(
        sort_storage, sort_storage_bytes, keys_in, keys_out, static_cast<int>(n), static_cast<int>(rows), begin,
        begin + 1, 0, 64, stream));
    launch_linear("top_k_pick_kernel", top_k_pick_kernel<T>, rows * k, stream, xt, keys_out, cols, k, indices, values);
  });
}

}  // namespace cudl::cuda_detail
