// Row-wise kernels over [rows, cols]: softmax and log-softmax (forward, backward) and the fused
// softmax cross-entropy. One warp per row; the row loop is warp-uniform, so every lane reaches
// the shuffles. CPU twin: kernels/cpu/softmax.cpp.
#include <cmath>

#include "cudl/kernels/cuda/launch.cuh"
#include "cudl/kernels/cuda/reduce.cuh"

namespace cudl::cuda_detail {

namespace {

// Max and Σ exp(x - max) of one row, on every lane.
__device__ __forceinline__ void row_max_sum(const float* xr, std::int64_t cols, int lane, float* max_out,
                                            float* sum_out) {
  float m = -INFINITY;
  for (std::int64_t c = lane; c < cols; c += 32) m = fmaxf(m, xr[c]);
  m = warp_max(m);
  float s = 0.0f;
  for (std::int64_t c = lane; c < cols; c += 32) s += expf(xr[c] - m);
  *max_out = m;
  *sum_out = warp_sum(s);
}

__global__ void softmax_forward_kernel(std::int64_t rows, const float* x, float* y, std::int64_t cols, bool log) {
  const int lane = lane_id();
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m, s;
    row_max_sum(xr, cols, lane, &m, &s);
    if (log) {
      const float log_s = logf(s);
      for (std::int64_t c = lane; c < cols; c += 32) yr[c] = xr[c] - m - log_s;
    } else {
      for (std::int64_t c = lane; c < cols; c += 32) yr[c] = expf(xr[c] - m) / s;
    }
  }
}

__global__ void softmax_backward_kernel(std::int64_t rows, const float* y, const float* dy, float* dx,
                                        std::int64_t cols, bool log) {
  const int lane = lane_id();
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const float* yr = y + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    float dot = 0.0f;
    if (log) {
      for (std::int64_t c = lane; c < cols; c += 32) dot += dyr[c];
    } else {
      for (std::int64_t c = lane; c < cols; c += 32) dot += dyr[c] * yr[c];
    }
    dot = warp_sum(dot);
    if (log) {
      for (std::int64_t c = lane; c < cols; c += 32) dxr[c] = dyr[c] - expf(yr[c]) * dot;
    } else {
      for (std::int64_t c = lane; c < cols; c += 32) dxr[c] = yr[c] * (dyr[c] - dot);
    }
  }
}

__global__ void cross_entropy_forward_kernel(std::int64_t rows, const float* logits, const std::int32_t* labels,
                                             float* probs, float* row_loss, std::int64_t cols, int* fault) {
  const int lane = lane_id();
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const float* xr = logits + r * cols;
    float* pr = probs + r * cols;
    float m, s;
    row_max_sum(xr, cols, lane, &m, &s);
    for (std::int64_t c = lane; c < cols; c += 32) pr[c] = expf(xr[c] - m) / s;
    if (lane == 0) {
      const std::int32_t label = labels[r];
      if (label >= 0 && label < cols) {
        row_loss[r] = -(xr[label] - m - logf(s));
      } else {
        row_loss[r] = NAN;
        raise_fault(fault, DeviceFault::label_out_of_range);
      }
    }
  }
}

__global__ void cross_entropy_backward_kernel(std::int64_t rows, const float* probs, const std::int32_t* labels,
                                              float* dlogits, std::int64_t cols, float scale, int* fault) {
  const int lane = lane_id();
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const std::int32_t label = labels[r];
    const bool valid = label >= 0 && label < cols;
    if (!valid && lane == 0) raise_fault(fault, DeviceFault::label_out_of_range);
    const float* pr = probs + r * cols;
    float* dr = dlogits + r * cols;
    for (std::int64_t c = lane; c < cols; c += 32) {
      const float onehot = c == label ? 1.0f : 0.0f;
      dr[c] = valid ? (pr[c] - onehot) * scale : NAN;
    }
  }
}

}  // namespace

void launch_softmax_forward(const float* x, float* y, std::int64_t rows, std::int64_t cols, bool log,
                            cudaStream_t stream) {
  if (cols <= 0) return;
  launch_rows("softmax_forward_kernel", softmax_forward_kernel, rows, stream, x, y, cols, log);
}

void launch_softmax_backward(const float* y, const float* dy, float* dx, std::int64_t rows, std::int64_t cols, bool log,
                             cudaStream_t stream) {
  if (cols <= 0) return;
  launch_rows("softmax_backward_kernel", softmax_backward_kernel, rows, stream, y, dy, dx, cols, log);
}

void launch_softmax_cross_entropy_forward(const float* logits, const std::int32_t* labels, float* probs,
                                          float* row_loss, float* loss, std::int64_t rows, std::int64_t cols,
                                          int* fault, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;  // the front refuses empty logits; nothing to read or write
  launch_rows("cross_entropy_forward_kernel", cross_entropy_forward_kernel, rows, stream, logits, labels, probs,
              row_loss, cols, fault);
  reduce_small_to_scalar<SumOp>(AsDouble{row_loss}, rows, DivideBy{static_cast<double>(rows)}, loss, stream);
}

void launch_softmax_cross_entropy_backward(const float* probs, const std::int32_t* labels, float* dlogits,
                                           std::int64_t rows, std::int64_t cols, float scale, int* fault,
                                           cudaStream_t stream) {
  launch_rows("cross_entropy_backward_kernel", cross_entropy_backward_kernel, rows, stream, probs, labels, dlogits,
              cols, scale, fault);
}

}  // namespace cudl::cuda_detail
