// Max and average pooling over NCHW planes, forward and backward. Backward passes gather (each
// input pixel sums the windows that cover it), so they are deterministic and need no atomics.
// CPU twin: kernels/cpu/pooling.cpp. Launched over planes (launch_planes): the plane comes from the
// grid, and the row and column from one 32-bit division of the in-plane offset. x, y, dy and dx are
// any float dtype (float_types.cuh): compared and summed in float, each output rounded once.
#include <cmath>

#include "cudl/kernels/cuda/float_types.cuh"

namespace cudl::cuda_detail {

namespace {

Planes input_planes(const PoolGeometry& g) { return {g.samples, g.channels, g.height * g.width}; }
Planes output_planes(const PoolGeometry& g) { return {g.samples, g.channels, g.out_height * g.out_width}; }

// Row and column of in-plane offset p in a plane `width` wide.
__device__ __forceinline__ void row_col(unsigned p, int width, int* row, int* col) {
  const unsigned r = p / static_cast<unsigned>(width);
  *row = static_cast<int>(r);
  *col = static_cast<int>(p - r * static_cast<unsigned>(width));
}

// The output rows (or columns) whose window covers input row h: [first, last], possibly empty.
// Both quotients are of non-negative numbers, so unsigned division is exact and cheaper.
__device__ __forceinline__ void covering_range(int h, int kernel, int stride, int pad, int out_size, int* first,
                                               int* last) {
  const int lo = h + pad - kernel + 1;  // smallest window start (in padded coordinates) that reaches h
  const auto s = static_cast<unsigned>(stride);
  *first = lo <= 0 ? 0 : static_cast<int>((static_cast<unsigned>(lo) + s - 1) / s);
  const int hi = static_cast<int>(static_cast<unsigned>(h + pad) / s);
  *last = hi < out_size - 1 ? hi : out_size - 1;
}

template <class T>
__global__ void maxpool_forward_kernel(Planes out, const T* x, T* y, std::int32_t* argmax, PoolGeometry g) {
  const auto size = static_cast<unsigned>(out.size);
  const std::int64_t in_size = static_cast<std::int64_t>(g.height) * g.width;
  for_each_plane(out, [&](std::int64_t plane, std::int64_t) {
    const T* xp = x + plane * in_size;
    T* yp = y + plane * out.size;
    std::int32_t* ap = argmax + plane * out.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      int oh, ow;
      row_col(p, g.out_width, &oh, &ow);
      const int h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
      float best = -INFINITY;
      int arg = -1;
      for (int i = 0; i < g.kernel_h; ++i) {
        const int h = h0 + i;
        if (h < 0 || h >= g.height) continue;
        for (int j = 0; j < g.kernel_w; ++j) {
          const int w = w0 + j;
          if (w < 0 || w >= g.width) continue;
          const float v = widen(xp[h * g.width + w]);
          // The CPU's rule: the first in-bounds pixel starts (padding never wins), a strictly greater
          // value replaces it (the first of equal maxima stays), and so does the first NaN; a NaN then
          // stays, so a NaN input is never hidden (as in PyTorch).
          if (arg < 0 || v > best || (isnan(v) && !isnan(best))) {
            best = v;
            arg = h * g.width + w;
          }
        }
      }
      yp[p] = narrow<T>(best);  // exact: best is one of the inputs
      ap[p] = arg;
    }
  });
}

// The CPU refuses an argmax entry outside [0, H*W): the gather below would silently drop it.
__global__ void argmax_range_kernel(std::int64_t n, const std::int32_t* argmax, std::int32_t plane_size, int* fault) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride())
    if (argmax[i] < 0 || argmax[i] >= plane_size) raise_fault(fault, DeviceFault::argmax_out_of_range);
}

template <class T>
__global__ void maxpool_backward_kernel(Planes in, const T* dy, const std::int32_t* argmax, T* dx, PoolGeometry g) {
  const auto size = static_cast<unsigned>(in.size);
  const std::int64_t out_size = static_cast<std::int64_t>(g.out_height) * g.out_width;
  for_each_plane(in, [&](std::int64_t plane, std::int64_t) {
    const T* dyp = dy + plane * out_size;
    const std::int32_t* ap = argmax + plane * out_size;
    T* dxp = dx + plane * in.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      int h, w;
      row_col(p, g.width, &h, &w);
      int oh0, oh1, ow0, ow1;
      covering_range(h, g.kernel_h, g.stride_h, g.pad_h, g.out_height, &oh0, &oh1);
      covering_range(w, g.kernel_w, g.stride_w, g.pad_w, g.out_width, &ow0, &ow1);
      const auto self = static_cast<std::int32_t>(p);
      float acc = 0.0f;
      for (int oh = oh0; oh <= oh1; ++oh)
        for (int ow = ow0; ow <= ow1; ++ow) {
          const int o = oh * g.out_width + ow;
          if (ap[o] == self) acc += widen(dyp[o]);
        }
      dxp[p] = narrow<T>(acc);
    }
  });
}

template <class T>
__global__ void avgpool_forward_kernel(Planes out, const T* x, T* y, PoolGeometry g) {
  const float inv = 1.0f / static_cast<float>(g.kernel_h * g.kernel_w);  // the CPU's factor
  const auto size = static_cast<unsigned>(out.size);
  const std::int64_t in_size = static_cast<std::int64_t>(g.height) * g.width;
  for_each_plane(out, [&](std::int64_t plane, std::int64_t) {
    const T* xp = x + plane * in_size;
    T* yp = y + plane * out.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      int oh, ow;
      row_col(p, g.out_width, &oh, &ow);
      const int h0 = oh * g.stride_h - g.pad_h, w0 = ow * g.stride_w - g.pad_w;
      float acc = 0.0f;
      for (int i = 0; i < g.kernel_h; ++i) {
        const int h = h0 + i;
        if (h < 0 || h >= g.height) continue;
        for (int j = 0; j < g.kernel_w; ++j) {
          const int w = w0 + j;
          if (w < 0 || w >= g.width) continue;
          acc += widen(xp[h * g.width + w]);
        }
      }
      yp[p] = narrow<T>(acc * inv);  // padding counts as zeros (count_include_pad=True)
    }
  });
}

template <class T>
__global__ void avgpool_backward_kernel(Planes in, const T* dy, T* dx, PoolGeometry g) {
  const float inv = 1.0f / static_cast<float>(g.kernel_h * g.kernel_w);  // the CPU's factor
  const auto size = static_cast<unsigned>(in.size);
  const std::int64_t out_size = static_cast<std::int64_t>(g.out_height) * g.out_width;
  for_each_plane(in, [&](std::int64_t plane, std::int64_t) {
    const T* dyp = dy + plane * out_size;
    T* dxp = dx + plane * in.size;
    for (unsigned p = plane_thread(); p < size; p += plane_stride()) {
      int h, w;
      row_col(p, g.width, &h, &w);
      int oh0, oh1, ow0, ow1;
      covering_range(h, g.kernel_h, g.stride_h, g.pad_h, g.out_height, &oh0, &oh1);
      covering_range(w, g.kernel_w, g.stride_w, g.pad_w, g.out_width, &ow0, &ow1);
      float acc = 0.0f;
      for (int oh = oh0; oh <= oh1; ++oh)
        // __fmul_rn/__fadd_rn: the CPU rounds dy * inv, then the sum (no FMA).
        for (int ow = ow0; ow <= ow1; ++ow) acc = __fadd_rn(acc, __fmul_rn(widen(dyp[oh * g.out_width + ow]), inv));
      dxp[p] = narrow<T>(acc);
    }
  });
}

}  // namespace

void launch_maxpool_forward(const void* x, void* y, std::int32_t* argmax, FloatType t, const PoolGeometry& g,
                            cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_planes("maxpool_forward_kernel", maxpool_forward_kernel<T>, output_planes(g), stream,
                  static_cast<const T*>(x), static_cast<T*>(y), argmax, g);
  });
}

void launch_maxpool_backward(const void* dy, const std::int32_t* argmax, void* dx, FloatType t, const PoolGeometry& g,
                             int* fault, cudaStream_t stream) {
  const std::int64_t outputs = g.samples * g.channels * g.out_height * g.out_width;
  launch_linear("argmax_range_kernel", argmax_range_kernel, outputs, stream, argmax,
                static_cast<std::int32_t>(static_cast<std::int64_t>(g.height) * g.width), fault);
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_planes("maxpool_backward_kernel", maxpool_backward_kernel<T>, input_planes(g), stream,
                  static_cast<const T*>(dy), argmax, static_cast<T*>(dx), g);
  });
}

void launch_avgpool_forward(const void* x, void* y, FloatType t, const PoolGeometry& g, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_planes("avgpool_forward_kernel", avgpool_forward_kernel<T>, output_planes(g), stream,
                  static_cast<const T*>(x), static_cast<T*>(y), g);
  });
}

void launch_avgpool_backward(const void* dy, void* dx, FloatType t, const PoolGeometry& g, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_planes("avgpool_backward_kernel", avgpool_backward_kernel<T>, input_planes(g), stream,
                  static_cast<const T*>(dy), static_cast<T*>(dx), g);
  });
}

}  // namespace cudl::cuda_detail
