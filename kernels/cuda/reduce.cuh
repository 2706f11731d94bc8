#pragma once
// Warp and block reductions shared by the .cu files (device code only; no fmt), and the
// deterministic two-pass reduction to one value: pass 1 gives each of at most kPartials blocks a
// fixed grid-stride share of the items, pass 2 is one block over the partials. The block count
// depends only on n and every combining order is fixed, so results are identical run to run.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cudl/kernels/cuda/float_types.cuh"

namespace cudl::cuda_detail {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// ---- the generic two-pass reduction ----
// A reduction R names its partial type (R::Value), an identity and an associative, commutative
// combine; a term functor F maps an item index to an R::Value; a finish functor maps the total to
// the float written to out[0].

// Sums in double, like the CPU's loops (kernels/cpu/reductions.cpp, losses.cpp, scalar_ops.cpp):
// each term is formed in double from the float inputs, and the total is divided (by n for a
// mean) in double before the one rounding to float.
struct SumOp {
  using Value = double;
  __device__ static Value identity() { return 0.0; }
  __device__ static Value combine(Value a, Value b) { return a + b; }
  __device__ static Value shfl_xor(Value v, int offset) { return __shfl_xor_sync(kFullMask, v, offset); }
};

// The term of a plain sum: element i (any float dtype, widened exactly), in double.
template <class T>
struct AsDouble {
  const T* x;
  __device__ double operator()(std::int64_t i) const { return static_cast<double>(widen(x[i])); }
};
template <class T>
AsDouble(const T*) -> AsDouble<T>;

// out[0] = total / divisor, rounded once (divisor 1 for a sum, n for a mean).
struct DivideBy {
  double divisor;
  __device__ float operator()(double total) const { return static_cast<float>(total / divisor); }
};

// Max by the CPU's rule (kernels/cpu/reductions.cpp): start from -inf and let each element, in
// index order, replace the maximum when strictly greater. A NaN is never taken, and of equal
// maxima (+0 and -0) the first stays. Candidates are ordered by value, then by lower index, so the
// result does not depend on the combining order.
struct MaxCandidate {
  float value;
  std::int64_t index;  // -1: no candidate (an empty share, or only NaN)
};

struct MaxOp {
  using Value = MaxCandidate;
  __device__ static Value identity() { return {-INFINITY, -1}; }
  __device__ static Value combine(Value a, Value b) {
    if (b.index < 0) return a;
    if (a.index < 0) return b;
    if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
    return a;
  }
  __device__ static Value shfl_xor(Value v, int offset) {
    return {__shfl_xor_sync(kFullMask, v.value, offset), __shfl_xor_sync(kFullMask, v.index, offset)};
  }
};

// The term of max: element i (any float dtype, widened exactly), unless it is NaN.
template <class T>
struct MaxTerm {
  const T* x;
  __device__ MaxCandidate operator()(std::int64_t i) const {
    const float v = widen(x[i]);
    return isnan(v) ? MaxOp::identity() : MaxCandidate{v, i};
  }
};

template <class T>
MaxTerm(const T*) -> MaxTerm<T>;

// out[0] = the maximum, or -inf when there is no candidate (the CPU's seed).
struct MaxFinish {
  __device__ float operator()(MaxCandidate c) const { return c.index < 0 ? -INFINITY : c.value; }
};

// R-combine over the block (blockDim.x a multiple of 32, at most 1024); thread 0 gets the result.
// Every thread of the block must call it (it synchronises the block).
template <class R>
__device__ typename R::Value block_reduce(typename R::Value v) {
  using Value = typename R::Value;
  __shared__ Value scratch[32];
  const int lane = lane_id();
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) v = R::combine(v, R::shfl_xor(v, offset));
  __syncthreads();  // a previous call's warp 0 may still read scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? scratch[lane] : R::identity();
    for (int offset = 16; offset > 0; offset >>= 1) v = R::combine(v, R::shfl_xor(v, offset));
  }
  return v;
}

// Pass 1: partials[b] = the R-combine of f(i) over block b's grid-stride share of [0, n).
template <class R, class F>
__global__ void __launch_bounds__(kBlock) reduce_partials_kernel(std::int64_t n, F f, typename R::Value* partials) {
  typename R::Value acc = R::identity();
#pragma unroll 4
  for (std::int64_t i = global_thread(); i < n; i += global_stride()) acc = R::combine(acc, f(i));
  acc = block_reduce<R>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// One block: out[0] = finish(the R-combine of f(i) over [0, n)), each thread taking i = thread,
// thread + kPartials, ...
template <class R, class F, class Finish>
__global__ void __launch_bounds__(kPartials) reduce_finish_kernel(std::int64_t n, F f, Finish finish, float* out) {
  typename R::Value acc = R::identity();
  for (std::int64_t i = threadIdx.x; i < n; i += kPartials) acc = R::combine(acc, f(i));
  acc = block_reduce<R>(acc);
  if (threadIdx.x == 0) out[0] = finish(acc);
}

// out[0] = finish(the R-combine of f(i) over [0, n)) by one block: for short ranges (one value per
// row of a batch), where a second pass would cost more than it saves.
template <class R, class F, class Finish>
void reduce_small_to_scalar(F f, std::int64_t n, Finish finish, float* out, cudaStream_t stream) {
  launch_grid("reduce_finish_kernel", reduce_finish_kernel<R, F, Finish>, dim3(1), dim3(kPartials), stream, n, f,
              finish, out);
}

template <class Value>
struct PartialAt {
  const Value* partials;
  __device__ Value operator()(std::int64_t i) const { return partials[i]; }
};

// out[0] = finish(the R-combine of f(i) over [0, n)) in two passes; `scratch` holds
// kReduceScratchBytes (at least kPartials values). For n == 0, out[0] = finish(R::identity()).
template <class R, class F, class Finish>
void reduce_to_scalar(F f, std::int64_t n, Finish finish, float* out, void* scratch, cudaStream_t stream) {
  using Value = typename R::Value;
  static_assert(sizeof(Value) * kPartials <= kReduceScratchBytes, "partials fit the scratch");
  auto* partials = static_cast<Value*>(scratch);
  const std::int64_t blocks = n > 0 ? std::min<std::int64_t>(blocks_for(n, kBlock), kPartials) : 0;
  if (blocks > 0)
    launch_grid("reduce_partials_kernel", reduce_partials_kernel<R, F>, dim3(static_cast<unsigned>(blocks)),
                dim3(kBlock), stream, n, f, partials);
  launch_grid("reduce_finish_kernel", reduce_finish_kernel<R, PartialAt<Value>, Finish>, dim3(1), dim3(kPartials),
              stream, blocks, PartialAt<Value>{partials}, finish, out);
}

}  // namespace cudl::cuda_detail
