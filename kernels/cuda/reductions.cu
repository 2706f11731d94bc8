// Reductions into one-element tensors (sum, mean, max, dot) and per-row ones (argmax, accuracy).
// CPU twin: kernels/cpu/reductions.cpp. Results land in device tensors; nothing here waits. The
// inputs of sum, mean, max, argmax_rows and accuracy are any float dtype (widened exactly; the
// sums run in double as for f32); dot is f32 only.
#include <cmath>

#include "cudl/kernels/cuda/launch.cuh"
#include "cudl/kernels/cuda/reduce.cuh"

namespace cudl::cuda_detail {

namespace {

// The CPU's dot term: the product in double.
struct Product {
  const float* a;
  const float* b;
  __device__ double operator()(std::int64_t i) const { return static_cast<double>(a[i]) * b[i]; }
};

// The CPU's argmax of one row (kernels/cpu/reductions.cpp), on every lane: the first column holding
// the maximum of the row's non-NaN values (a NaN never wins, wherever it sits; strict > keeps the
// first of equal maxima, +0 and -0 included), and column 0 for a row of NaN only.
// Here each lane finds the first maximum among its own non-NaN columns (none if it has only NaN),
// and the lanes combine by larger value, then lower column. That choice is a total order on the
// candidates, so the butterfly gives the sequential scan's answer whatever the combining order.
template <class T>
__device__ __forceinline__ std::int64_t row_argmax(const T* xr, std::int64_t cols, int lane) {
  float best = -INFINITY;
  std::int64_t arg = -1;  // no non-NaN column seen yet
  for (std::int64_t c = lane; c < cols; c += 32) {
    const float v = widen(xr[c]);
    if (!isnan(v) && (arg < 0 || v > best)) {
      best = v;
      arg = c;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other_v = __shfl_xor_sync(kFullMask, best, offset);
    const std::int64_t other_arg = __shfl_xor_sync(kFullMask, arg, offset);
    const bool take = other_arg >= 0 && (arg < 0 || other_v > best || (other_v == best && other_arg < arg));
    if (take) {
      best = other_v;
      arg = other_arg;
    }
  }
  return arg < 0 ? 0 : arg;  // a row of NaN only: column 0, as on the CPU
}

template <class T>
__global__ void argmax_rows_kernel(std::int64_t rows, const T* x, std::int32_t* out, std::int64_t cols) {
  const int lane = lane_id();
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const std::int64_t arg = row_argmax(x + r * cols, cols, lane);
    if (lane == 0) out[r] = static_cast<std::int32_t>(arg);
  }
}

template <class T>
__global__ void accuracy_kernel(std::int64_t rows, const T* logits, const std::int32_t* labels, float* correct,
                                std::int64_t cols, int* fault) {
  const int lane = lane_id();
  for (std::int64_t r = global_warp(); r < rows; r += warp_stride()) {
    const std::int64_t arg = row_argmax(logits + r * cols, cols, lane);
    if (lane == 0) {
      const std::int32_t label = labels[r];
      if (label < 0 || label >= cols) raise_fault(fault, DeviceFault::label_out_of_range);
      correct[r] = arg == label ? 1.0f : 0.0f;
    }
  }
}

}  // namespace

// Our own two-pass reduction rather than cub::DeviceReduce::Sum: terms and total in double like the
// CPU, a fixed partial count, and the mean divided before the one rounding to float.
void launch_sum(const void* x, FloatType t, std::int64_t n, double divisor, float* out, void* scratch,
                cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    reduce_to_scalar<SumOp>(AsDouble{static_cast<const T*>(x)}, n, DivideBy{divisor}, out, scratch, stream);
  });
}

// Our own reduction rather than cub::DeviceReduce::Max: CUB seeds with the lowest finite float
// and its max operator takes a NaN depending on where it falls in the reduction tree.
void launch_max(const void* x, FloatType t, std::int64_t n, float* out, void* scratch, cudaStream_t stream) {
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    reduce_to_scalar<MaxOp>(MaxTerm{static_cast<const T*>(x)}, n, MaxFinish{}, out, scratch, stream);
  });
}

void launch_dot(const float* a, const float* b, std::int64_t n, float* out, void* scratch, cudaStream_t stream) {
  reduce_to_scalar<SumOp>(Product{a, b}, n, DivideBy{1.0}, out, scratch, stream);
}

void launch_argmax_rows(const void* x, FloatType t, std::int32_t* out, std::int64_t rows, std::int64_t cols,
                        cudaStream_t stream) {
  if (cols <= 0) return;
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_rows("argmax_rows_kernel", argmax_rows_kernel<T>, rows, stream, static_cast<const T*>(x), out, cols);
  });
}

void launch_accuracy(const void* logits, FloatType t, const std::int32_t* labels, float* correct, float* out,
                     std::int64_t rows, std::int64_t cols, int* fault, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_rows("accuracy_kernel", accuracy_kernel<T>, rows, stream, static_cast<const T*>(logits), labels, correct,
                cols, fault);
  });
  // The count is exact in double, so out[0] is the CPU's correct / n rounded once.
  reduce_small_to_scalar<SumOp>(AsDouble{correct}, rows, DivideBy{static_cast<double>(rows)}, out, stream);
}

}  // namespace cudl::cuda_detail
