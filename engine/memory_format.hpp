#pragma once
#include <cstdint>
#include <string_view>

#include "cudl/engine/shape.hpp"

namespace cudl {

// How a 4-D tensor's elements lie in memory. The shape is always the logical [N, C, H, W];
// `channels_last` stores them as [N, H, W, C] (PyTorch's torch.channels_last), the layout the
// half-precision convolution kernels of oneDNN (and cuDNN's tensor cores) read and write, so that
// activations passed from one convolution to the next need no reorder. Ops that lack a
// channels_last kernel get NCHW copies from the op front (engine/backend.cpp): every op accepts
// either format, and the result is the same function.
enum class MemoryFormat : std::uint8_t { contiguous, channels_last };

std::string_view memory_format_name(MemoryFormat f);

// Whether both formats lay out a tensor of `shape` alike (4-D with one channel or one pixel), so
// that changing its format needs no copy.
inline bool formats_share_bytes(const Shape& shape) {
  return shape.rank() == 4 && (shape[1] == 1 || shape[2] * shape[3] == 1);
}

// The storage offset of logical element [n, c, h, w] of a tensor of `shape` [N, C, H, W] in `format`.
inline std::int64_t storage_index(const Shape& shape, MemoryFormat format, std::int64_t n, std::int64_t c,
                                  std::int64_t h, std::int64_t w) {
  return format == MemoryFormat::channels_last ? ((n * shape[2] + h) * shape[3] + w) * shape[1] + c
                                               : ((n * shape[1] + c) * shape[2] + h) * shape[3] + w;
}

}  // namespace cudl
