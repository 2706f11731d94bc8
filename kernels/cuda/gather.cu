// gather_rows: out[i] = src[index[i]] over the rows of src, copied as bytes in the widest unit the
// row size and both addresses allow (16 bytes for MNIST's 3136-byte rows from the pool's aligned
// blocks). CPU twin: kernels/cpu/gather.cpp.
#include <cstdint>

#include "cudl/kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

// One thread per unit of out; I is the flat index's type: 32-bit when out has fewer than 2^32
// units, so the row/column split is a 32-bit division rather than a 64-bit one.
template <class V, class I>
__global__ void gather_rows_kernel(std::int64_t n, const V* src, std::int64_t src_rows, const std::int32_t* index,
                                   I units_per_row, V* out, int* fault) {
  for (std::int64_t k = global_thread(); k < n; k += global_stride()) {
    const I i = static_cast<I>(k);
    const I row = i / units_per_row, col = i - row * units_per_row;
    const std::int32_t from = index[row];
    if (from < 0 || from >= src_rows) {
      out[i] = V{};
      raise_fault(fault, DeviceFault::gather_index_out_of_range);
      continue;
    }
    out[i] = src[static_cast<std::int64_t>(from) * units_per_row + col];
  }
}

template <class V>
void launch_units(const void* src, std::int64_t src_rows, const std::int32_t* index, std::int64_t rows,
                  std::size_t row_bytes, void* out, int* fault, cudaStream_t stream) {
  const auto per_row = static_cast<std::int64_t>(row_bytes / sizeof(V));
  const std::int64_t n = rows * per_row;
  const auto* s = static_cast<const V*>(src);
  auto* o = static_cast<V*>(out);
  if (n < (std::int64_t{1} << 32))
    launch_linear("gather_rows_kernel", gather_rows_kernel<V, std::uint32_t>, n, stream, s, src_rows, index,
                  static_cast<std::uint32_t>(per_row), o, fault);
  else
    launch_linear("gather_rows_kernel", gather_rows_kernel<V, std::int64_t>, n, stream, s, src_rows, index, per_row, o,
                  fault);
}

}  // namespace

void launch_gather_rows(const void* src, std::int64_t src_rows, const std::int32_t* index, std::int64_t rows,
                        std::size_t row_bytes, void* out, int* fault, cudaStream_t stream) {
  if (rows <= 0 || row_bytes == 0) return;
  // The widest unit dividing the row size and both base addresses (every row then starts aligned).
  const auto bits = row_bytes | reinterpret_cast<std::uintptr_t>(src) | reinterpret_cast<std::uintptr_t>(out);
  if (bits % 16 == 0)
    launch_units<uint4>(src, src_rows, index, rows, row_bytes, out, fault, stream);
  else if (bits % 8 == 0)
    launch_units<uint2>(src, src_rows, index, rows, row_bytes, out, fault, stream);
  else if (bits % 4 == 0)
    launch_units<std::uint32_t>(src, src_rows, index, rows, row_bytes, out, fault, stream);
  else if (bits % 2 == 0)
    launch_units<std::uint16_t>(src, src_rows, index, rows, row_bytes, out, fault, stream);
  else
    launch_units<std::uint8_t>(src, src_rows, index, rows, row_bytes, out, fault, stream);
}

}  // namespace cudl::cuda_detail
