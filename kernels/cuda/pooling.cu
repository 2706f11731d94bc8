// Max and average pooling over NCHW planes, forward and backward. Backward passes gather (each
// input pixel sums the windows that cover it), so they are deterministic and need no atomics.
// CPU twin: kernels/cpu/pooling.cpp.
#include <cmath>

#include "kernels/cuda/launch.cuh"

namespace cudl::cuda_detail {

namespace {

// The output rows (or columns) whose window covers input row h: [first, last], possibly empty.
__device__ __forceinline__ void covering_range(int h, int kernel, int stride, int pad, int out_size, int* first,
                                               int* last) {
  int lo = h + pad - kernel + 1;  // smallest window start (in padded coordinates) that reaches h
  *first = lo <= 0 ? 0 : (lo + stride - 1) / stride;
  int hi = (h + pad) / stride;
  *last = hi < out_size - 1 ? hi : out_size - 1;
}

__global__ void maxpool_forward_kernel(std::int64_t total, const float* x, float* y, std::int32_t* argmax,
                                       PoolGeometry g) {
  for (std::int64_t idx = global_thread(); idx < total; idx += global_stride()) {
    const int ow = static_cast<int>(idx % g.out_width);
    const int oh = static_cast<int>((idx / g.out_width) % g.out_height);
    const std::int64_t plane = idx / (static_cast<std::int64_t>(g.out_width) * g.out_height);
    const float* xp = x + plane * g.height * g.width;
    const int h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
    float best = -INFINITY;
    int arg = -1;
    for (int i = 0; i < g.kernel_h; ++i) {
      const int h = h0 + i;
      if (h < 0 || h >= g.height) continue;
      for (int j = 0; j < g.kernel_w; ++j) {
        const int w = w0 + j;
        if (w < 0 || w >= g.width) continue;
        const float v = xp[h * g.width + w];
        // The CPU's rule: the first in-bounds pixel starts (padding never wins), a strictly greater
        // value replaces it (the first of equal maxima stays), and so does the first NaN; a NaN then
        // stays, so a NaN input is never hidden (as in PyTorch).
        if (arg < 0 || v > best || (isnan(v) && !isnan(best))) {
          best = v;
          arg = h * g.width + w;
        }
      }
    }
    y[idx] = best;
    argmax[idx] = arg;
  }
}

__global__ void maxpool_backward_kernel(std::int64_t total, const float* dy, const std::int32_t* argmax, float* dx,
                                        PoolGeometry g) {
  for (std::int64_t idx = global_thread(); idx < total; idx += global_stride()) {
    const int w = static_cast<int>(idx % g.width);
    const int h = static_cast<int>((idx / g.width) % g.height);
    const std::int64_t plane = idx / (static_cast<std::int64_t>(g.width) * g.height);
    const std::int64_t out_plane = plane * g.out_height * g.out_width;
    const int self = h * g.width + w;
    int oh0, oh1, ow0, ow1;
    covering_range(h, g.kernel_h, g.stride_h, g.pad_h, g.out_height, &oh0, &oh1);
    covering_range(w, g.kernel_w, g.stride_w, g.pad_w, g.out_width, &ow0, &ow1);
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) {
        const std::int64_t o = out_plane + static_cast<std::int64_t>(oh) * g.out_width + ow;
        if (argmax[o] == self) acc += dy[o];
      }
    dx[idx] = acc;
  }
}

__global__ void avgpool_forward_kernel(std::int64_t total, const float* x, float* y, PoolGeometry g) {
  const float area = static_cast<float>(g.kernel_h * g.kernel_w);
  for (std::int64_t idx = global_thread(); idx < total; idx += global_stride()) {
    const int ow = static_cast<int>(idx % g.out_width);
    const int oh = static_cast<int>((idx / g.out_width) % g.out_height);
    const std::int64_t plane = idx / (static_cast<std::int64_t>(g.out_width) * g.out_height);
    const float* xp = x + plane * g.height * g.width;
    const int h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
    float acc = 0.0f;
    for (int i = 0; i < g.kernel_h; ++i) {
      const int h = h0 + i;
      if (h < 0 || h >= g.height) continue;
      for (int j = 0; j < g.kernel_w; ++j) {
        const int w = w0 + j;
        if (w < 0 || w >= g.width) continue;
        acc += xp[h * g.width + w];
      }
    }
    y[idx] = acc / area;  // padding counts as zeros (count_include_pad=True)
  }
}

__global__ void avgpool_backward_kernel(std::int64_t total, const float* dy, float* dx, PoolGeometry g) {
  const float area = static_cast<float>(g.kernel_h * g.kernel_w);
  for (std::int64_t idx = global_thread(); idx < total; idx += global_stride()) {
    const int w = static_cast<int>(idx % g.width);
    const int h = static_cast<int>((idx / g.width) % g.height);
    const std::int64_t plane = idx / (static_cast<std::int64_t>(g.width) * g.height);
    const float* dyp = dy + plane * g.out_height * g.out_width;
    int oh0, oh1, ow0, ow1;
    covering_range(h, g.kernel_h, g.stride_h, g.pad_h, g.out_height, &oh0, &oh1);
    covering_range(w, g.kernel_w, g.stride_w, g.pad_w, g.out_width, &ow0, &ow1);
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) acc += dyp[oh * g.out_width + ow] / area;
    dx[idx] = acc;
  }
}

std::int64_t input_elements(const PoolGeometry& g) { return g.planes * g.height * g.width; }
std::int64_t output_elements(const PoolGeometry& g) { return g.planes * g.out_height * g.out_width; }

}  // namespace

void launch_maxpool_forward(const float* x, float* y, std::int32_t* argmax, const PoolGeometry& g,
                            cudaStream_t stream) {
  launch_linear("maxpool_forward_kernel", maxpool_forward_kernel, output_elements(g), stream, x, y, argmax, g);
}

void launch_maxpool_backward(const float* dy, const std::int32_t* argmax, float* dx, const PoolGeometry& g,
                             cudaStream_t stream) {
  launch_linear("maxpool_backward_kernel", maxpool_backward_kernel, input_elements(g), stream, dy, argmax, dx, g);
}

void launch_avgpool_forward(const float* x, float* y, const PoolGeometry& g, cudaStream_t stream) {
  launch_linear("avgpool_forward_kernel", avgpool_forward_kernel, output_elements(g), stream, x, y, g);
}

void launch_avgpool_backward(const float* dy, float* dx, const PoolGeometry& g, cudaStream_t stream) {
  launch_linear("avgpool_backward_kernel", avgpool_backward_kernel, input_elements(g), stream, dy, dx, g);
}

}  // namespace cudl::cuda_detail
