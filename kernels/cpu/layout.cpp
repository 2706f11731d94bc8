// Memory formats on the CPU: the NCHW <-> channels_last copy, and which ops read channels_last
// tensors themselves (the others get NCHW copies from the op front, engine/backend.cpp).
#include <algorithm>
#include <array>
#include <cstdint>
#include <string_view>

#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"

namespace cudl {

namespace {

// Per sample, src [rows, cols] -> dst [cols, rows], in square tiles so that both sides are read
// and written a cache line at a time.
template <class T>
void transpose_samples(const T* src, T* dst, std::int64_t samples, std::int64_t rows, std::int64_t cols) {
  constexpr std::int64_t kTile = 32;
  const std::int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  const std::int64_t tiles = samples * row_tiles * col_tiles;
#pragma omp parallel for schedule(static) if (samples * rows * cols >= cpu::kParallelThreshold)
  for (std::int64_t t = 0; t < tiles; ++t) {
    const std::int64_t n = t / (row_tiles * col_tiles), rt = t / col_tiles % row_tiles, ct = t % col_tiles;
    const T* s = src + n * rows * cols;
    T* d = dst + n * rows * cols;
    const std::int64_t r1 = std::min(rows, (rt + 1) * kTile), c1 = std::min(cols, (ct + 1) * kTile);
    for (std::int64_t r = rt * kTile; r < r1; ++r)
      for (std::int64_t c = ct * kTile; c < c1; ++c) d[c * rows + r] = s[r * cols + c];
  }
}

// The ops with channels_last kernels on the CPU. The convolutions go to oneDNN with the
// tensors' own layouts (and fall back through NCHW copies where oneDNN does not take a call).
constexpr std::array<std::string_view, 20> kChannelsLastOps = {
    // kernels/cpu/onednn_conv.cpp (conv_fused.cpp: conv2d_bn_forward's fused primitive, or its
    // composition of the ops below)
    "conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter", "conv2d_bias_relu_forward", "conv2d_bn_forward",
    // kernels/cpu/pooling_nhwc.cpp
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    // kernels/cpu/gemm.cpp, gram.cpp: NHWC loops, GEMM operand flags
    "bias_add", "bias_grad", "gram_forward", "gram_backward",
    // kernels/cpu/normalization_nhwc.cpp
    "channel_affine", "channel_affine_backward", "batchnorm_forward_train", "batchnorm_forward_eval",
    "batchnorm_backward", "batchnorm_relu_forward_train", "batchnorm_relu_backward"};

}  // namespace

// oneDNN's half-precision kernels read and write NHWC (its f32 ones a blocked layout, into which
// NCHW reorders as cheaply as NHWC does).
MemoryFormat CpuBackend::do_preferred_conv_format(const Context& ctx, DType dtype) const {
  return is_half(dtype) && cpu::half_native(dtype, ctx.cpu_conv()) ? MemoryFormat::channels_last
                                                                   : MemoryFormat::contiguous;
}

bool CpuBackend::do_takes_channels_last(std::string_view op) const {
  return std::find(kChannelsLastOps.begin(), kChannelsLastOps.end(), op) != kChannelsLastOps.end();
}

void CpuBackend::do_convert_format(Context&, const Tensor& src, Tensor& dst) {
  const Shape& s = src.shape();
  const std::int64_t c = s[1], hw = s[2] * s[3];
  // NCHW -> NHWC transposes each sample's [C, HW] matrix; NHWC -> NCHW its [HW, C] one.
  const bool to_channels_last = dst.channels_last();
  const std::int64_t rows = to_channels_last ? c : hw, cols = to_channels_last ? hw : c;
  if (dtype_size(src.dtype()) == 2)
    transpose_samples(static_cast<const std::uint16_t*>(src.raw()), static_cast<std::uint16_t*>(dst.raw()), s[0], rows,
                      cols);
  else
    transpose_samples(static_cast<const std::uint32_t*>(src.raw()), static_cast<std::uint32_t*>(dst.raw()), s[0], rows,
                      cols);
}

}  // namespace cudl
