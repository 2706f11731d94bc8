// Row-wise kernels over [rows, cols]: softmax and log-softmax (forward, backward), the fused
// softmax cross-entropy, argmax and accuracy. One warp per row; the row loop is warp-uniform,
// so every lane reaches the shuffles.
#include <cmath>

#include "kernels/cuda/launch.hpp"
#include "kernels/cuda/reduce_util.cuh"

namespace cudl::cuda_detail {

namespace {

constexpr unsigned kBlock = 256;
constexpr unsigned kWarpsPerBlock = kBlock / 32;
constexpr unsigned kFinalBlock = 1024;

unsigned grid_for_rows(std::int64_t rows) { return grid_for(rows, kWarpsPerBlock); }

__device__ __forceinline__ std::int64_t global_warp() {
  return (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
}
__device__ __forceinline__ std::int64_t warp_stride() {
  return (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
}

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

__global__ void softmax_forward_kernel(const float* x, float* y, std::int64_t rows, std::int64_t cols, bool log) {
  const int lane = static_cast<int>(threadIdx.x & 31);
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

__global__ void softmax_backward_kernel(const float* y, const float* dy, float* dx, std::int64_t rows,
                                        std::int64_t cols, bool log) {
  const int lane = static_cast<int>(threadIdx.x & 31);
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

__global__ void cross_entropy_forward_kernel(const float* logits, const std::int32_t* labels, float* probs,
                                             float* row_loss, std::int64_t rows, std::int64_t cols) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const float* xr = logits + r * cols;
    float* pr = probs + r * cols;
    float m, s;
    row_max_sum(xr, cols, lane, &m, &s);
    for (std::int64_t c = lane; c < cols; c += 32) pr[c] = expf(xr[c] - m) / s;
    if (lane == 0) {
      const std::int32_t label = labels[r];
      row_loss[r] = (label >= 0 && label < cols) ? -(xr[label] - m - logf(s)) : NAN;
    }
  }
}

__global__ void cross_entropy_backward_kernel(const float* probs, const std::int32_t* labels, float* dlogits,
                                              std::int64_t rows, std::int64_t cols, float scale) {
  const std::int64_t total = rows * cols;
  for (std::int64_t i = global_thread(); i < total; i += global_stride()) {
    const std::int64_t r = i / cols, c = i - r * cols;
    const float onehot = labels[r] == c ? 1.0f : 0.0f;
    dlogits[i] = (probs[i] - onehot) * scale;
  }
}

// First index of the row maximum, on every lane. Each lane scans its columns in increasing
// order (strict >), then lanes combine preferring the larger value, and on ties the lower index.
__device__ __forceinline__ std::int64_t row_argmax(const float* xr, std::int64_t cols, int lane) {
  float best = -INFINITY;
  std::int64_t arg = -1;
  for (std::int64_t c = lane; c < cols; c += 32) {
    const float v = xr[c];
    if (arg < 0 || v > best) {
      best = v;
      arg = c;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other_v = __shfl_xor_sync(kFullMask, best, offset);
    const std::int64_t other_arg = __shfl_xor_sync(kFullMask, arg, offset);
    const bool take =
        other_arg >= 0 && (arg < 0 || other_v > best || (other_v == best && other_arg < arg));
    if (take) {
      best = other_v;
      arg = other_arg;
    }
  }
  return arg;
}

__global__ void argmax_rows_kernel(const float* x, std::int32_t* out, std::int64_t rows, std::int64_t cols) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const std::int64_t arg = row_argmax(x + r * cols, cols, lane);
    if (lane == 0) out[r] = static_cast<std::int32_t>(arg);
  }
}

__global__ void accuracy_kernel(const float* logits, const std::int32_t* labels, float* correct, std::int64_t rows,
                                std::int64_t cols) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const std::int64_t arg = row_argmax(logits + r * cols, cols, lane);
    if (lane == 0) correct[r] = arg == labels[r] ? 1.0f : 0.0f;
  }
}

}  // namespace

void launch_softmax_forward(const float* x, float* y, std::int64_t rows, std::int64_t cols, bool log,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  softmax_forward_kernel<<<grid_for_rows(rows), kBlock, 0, stream>>>(x, y, rows, cols, log);
  check_launch("softmax_forward_kernel");
}

void launch_softmax_backward(const float* y, const float* dy, float* dx, std::int64_t rows, std::int64_t cols,
                             bool log, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  softmax_backward_kernel<<<grid_for_rows(rows), kBlock, 0, stream>>>(y, dy, dx, rows, cols, log);
  check_launch("softmax_backward_kernel");
}

void launch_softmax_cross_entropy_forward(const float* logits, const std::int32_t* labels, float* probs,
                                          float* row_loss, float* loss, std::int64_t rows, std::int64_t cols,
                                          cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  cross_entropy_forward_kernel<<<grid_for_rows(rows), kBlock, 0, stream>>>(logits, labels, probs, row_loss, rows,
                                                                           cols);
  check_launch("cross_entropy_forward_kernel");
  sum_to_scalar_kernel<kFinalBlock><<<1, kFinalBlock, 0, stream>>>(row_loss, rows, static_cast<float>(rows), loss);
  check_launch("sum_to_scalar_kernel");
}

void launch_softmax_cross_entropy_backward(const float* probs, const std::int32_t* labels, float* dlogits,
                                           std::int64_t rows, std::int64_t cols, float scale, cudaStream_t stream) {
  const std::int64_t total = rows * cols;
  if (total <= 0) return;
  cross_entropy_backward_kernel<<<grid_for(total, kBlock), kBlock, 0, stream>>>(probs, labels, dlogits, rows, cols,
                                                                               scale);
  check_launch("cross_entropy_backward_kernel");
}

void launch_argmax_rows(const float* x, std::int32_t* out, std::int64_t rows, std::int64_t cols,
                        cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  argmax_rows_kernel<<<grid_for_rows(rows), kBlock, 0, stream>>>(x, out, rows, cols);
  check_launch("argmax_rows_kernel");
}

void launch_accuracy(const float* logits, const std::int32_t* labels, float* correct, float* out, std::int64_t rows,
                     std::int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  accuracy_kernel<<<grid_for_rows(rows), kBlock, 0, stream>>>(logits, labels, correct, rows, cols);
  check_launch("accuracy_kernel");
  sum_to_scalar_kernel<kFinalBlock><<<1, kFinalBlock, 0, stream>>>(correct, rows, static_cast<float>(rows), out);
  check_launch("sum_to_scalar_kernel");
}

}  // namespace cudl::cuda_detail
