// Reductions: sum / mean / max through cub::DeviceReduce, and dot and the losses (MSE, L1, total
// variation) through a deterministic two-pass reduction of our own. Results land in one-element
// device tensors; nothing here waits for the device.
#include <cmath>

#include <cub/device/device_reduce.cuh>

#include "kernels/cuda/launch.hpp"
#include "kernels/cuda/reduce_util.cuh"

namespace cudl::cuda_detail {

namespace {

constexpr unsigned kBlock = 256;
constexpr unsigned kFinalBlock = 1024;
static_assert(kLossPartials <= 65535, "partials fit one grid dimension");

__global__ void scale_scalar_kernel(float* out, float scale) { out[0] *= scale; }

// Pass 1: block b writes partials[b] = Σ f(i) over its grid-stride share of [0, n).
template <class F>
__global__ void __launch_bounds__(kBlock) partial_sums_kernel(F f, std::int64_t n, float* partials) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) acc += f(i);
  float total = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

struct SquaredDiff {
  const float* a;
  const float* b;
  __device__ float operator()(std::int64_t i) const {
    const float d = a[i] - b[i];
    return d * d;
  }
};
struct Product {
  const float* a;
  const float* b;
  __device__ float operator()(std::int64_t i) const { return a[i] * b[i]; }
};

struct AbsValue {
  const float* x;
  __device__ float operator()(std::int64_t i) const { return fabsf(x[i]); }
};

struct AbsDiff {
  const float* a;
  const float* b;
  __device__ float operator()(std::int64_t i) const { return fabsf(a[i] - b[i]); }
};

struct TotalVariation {
  const float* x;
  std::int64_t height, width;
  __device__ float operator()(std::int64_t i) const {
    const std::int64_t w = i % width;
    const std::int64_t h = (i / width) % height;
    const float v = x[i];
    float acc = 0.0f;
    if (h + 1 < height) {
      const float d = x[i + width] - v;
      acc += d * d;
    }
    if (w + 1 < width) {
      const float d = x[i + 1] - v;
      acc += d * d;
    }
    return acc;
  }
};

template <class F>
void reduce_loss(F f, std::int64_t n, float divisor, float* partials, float* loss, cudaStream_t stream) {
  const unsigned blocks = n > 0 ? (grid_for(n, kBlock) < static_cast<unsigned>(kLossPartials)
                                       ? grid_for(n, kBlock)
                                       : static_cast<unsigned>(kLossPartials))
                                : 1u;
  if (n > 0) {
    partial_sums_kernel<F><<<blocks, kBlock, 0, stream>>>(f, n, partials);
    check_launch("partial_sums_kernel");
  }
  sum_to_scalar_kernel<kFinalBlock><<<1, kFinalBlock, 0, stream>>>(partials, n > 0 ? blocks : 0, divisor, loss);
  check_launch("sum_to_scalar_kernel");
}

__global__ void mse_backward_kernel(const float* a, const float* b, float* da, std::int64_t n, float scale) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) da[i] = scale * (a[i] - b[i]);
}

__global__ void l1_backward_kernel(const float* a, const float* b, float* da, std::int64_t n, float scale) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const float d = a[i] - b[i];
    da[i] = d > 0.0f ? scale : (d < 0.0f ? -scale : 0.0f);  // sign(0) = 0, like PyTorch
  }
}

__global__ void tv_backward_kernel(const float* x, float* dx, std::int64_t n, std::int64_t height,
                                   std::int64_t width, float dloss, bool accumulate) {
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) {
    const std::int64_t w = i % width;
    const std::int64_t h = (i / width) % height;
    const float v = x[i];
    float g = 0.0f;
    if (h > 0) g += 2.0f * (v - x[i - width]);
    if (h + 1 < height) g -= 2.0f * (x[i + width] - v);
    if (w > 0) g += 2.0f * (v - x[i - 1]);
    if (w + 1 < width) g -= 2.0f * (x[i + 1] - v);
    dx[i] = accumulate ? dx[i] + dloss * g : dloss * g;
  }
}

}  // namespace

std::size_t reduce_sum_temp_bytes(std::int64_t n) {
  std::size_t bytes = 0;
  CUDL_STATUS_CHECK(cub::DeviceReduce::Sum(nullptr, bytes, static_cast<const float*>(nullptr),
                                           static_cast<float*>(nullptr), n));
  return bytes;
}

std::size_t reduce_max_temp_bytes(std::int64_t n) {
  std::size_t bytes = 0;
  CUDL_STATUS_CHECK(cub::DeviceReduce::Max(nullptr, bytes, static_cast<const float*>(nullptr),
                                           static_cast<float*>(nullptr), n));
  return bytes;
}

void launch_reduce_sum(const float* x, std::int64_t n, float scale, float* out, void* temp, std::size_t temp_bytes,
                       cudaStream_t stream) {
  CUDL_STATUS_CHECK(cub::DeviceReduce::Sum(temp, temp_bytes, x, out, n, stream));
  if (scale != 1.0f) {
    scale_scalar_kernel<<<1, 1, 0, stream>>>(out, scale);
    check_launch("scale_scalar_kernel");
  }
}

void launch_reduce_max(const float* x, std::int64_t n, float* out, void* temp, std::size_t temp_bytes,
                       cudaStream_t stream) {
  CUDL_STATUS_CHECK(cub::DeviceReduce::Max(temp, temp_bytes, x, out, n, stream));
}

void launch_mse_loss_forward(const float* a, const float* b, std::int64_t n, float* partials, float* loss,
                             cudaStream_t stream) {
  reduce_loss(SquaredDiff{a, b}, n, static_cast<float>(n), partials, loss, stream);
}

void launch_l1_loss_forward(const float* a, const float* b, std::int64_t n, float* partials, float* loss,
                            cudaStream_t stream) {
  reduce_loss(AbsDiff{a, b}, n, static_cast<float>(n), partials, loss, stream);
}
void launch_dot(const float* a, const float* b, std::int64_t n, float* partials, float* out, cudaStream_t stream) {
  reduce_loss(Product{a, b}, n, 1.0f, partials, out, stream);
}
void launch_abs_sum(const float* x, std::int64_t n, float* partials, float* out, cudaStream_t stream) {
  reduce_loss(AbsValue{x}, n, 1.0f, partials, out, stream);
}


void launch_mse_loss_backward(const float* a, const float* b, float* da, std::int64_t n, float dloss,
                              cudaStream_t stream) {
  if (n <= 0) return;
  const float scale = 2.0f * dloss / static_cast<float>(n);
  mse_backward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(a, b, da, n, scale);
  check_launch("mse_backward_kernel");
}

void launch_l1_loss_backward(const float* a, const float* b, float* da, std::int64_t n, float dloss,
                             cudaStream_t stream) {
  if (n <= 0) return;
  const float scale = dloss / static_cast<float>(n);
  l1_backward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(a, b, da, n, scale);
  check_launch("l1_backward_kernel");
}

void launch_tv_loss_forward(const float* x, std::int64_t planes, std::int64_t height, std::int64_t width,
                            float* partials, float* loss, cudaStream_t stream) {
  reduce_loss(TotalVariation{x, height, width}, planes * height * width, 1.0f, partials, loss, stream);
}

void launch_tv_loss_backward(const float* x, float* dx, std::int64_t planes, std::int64_t height,
                             std::int64_t width, float dloss, bool accumulate, cudaStream_t stream) {
  const std::int64_t n = planes * height * width;
  if (n <= 0) return;
  tv_backward_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(x, dx, n, height, width, dloss, accumulate);
  check_launch("tv_backward_kernel");
}

}  // namespace cudl::cuda_detail
