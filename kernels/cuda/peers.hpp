#pragma once
// Library baselines that `cudl bench` times beside cudl's own CUDA kernels on the same buffer
// (issue 24: each own reduction beside its Thrust/CUB equivalent), so a row shows how far ours is
// from what a user would get by calling the library. Not ops: nothing but the bench calls them,
// and the CPU has no row for them. CUDA builds only (kernels/cuda/peers.cu + peers.cpp).
#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

// out[0] = cub::DeviceReduce::Sum of x (f32, on ctx's CUDA device) into a one-element f32 tensor:
// CUB's own float accumulator and reduction tree (cudl's sum accumulates in double, in a fixed
// order), its scratch from ctx's pool, on ctx's stream.
void cub_sum(Context& ctx, const Tensor& x, Tensor& out);

}  // namespace cudl
