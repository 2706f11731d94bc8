// The bench's library peers (kernels/cuda/peers.hpp): checks and scratch here, CUB in peers.cu.
#include "cudl/kernels/cuda/peers.hpp"

#include <utility>

#include "cudl/engine/check.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

void cub_sum(Context& ctx, const Tensor& x, Tensor& out) {
  constexpr std::string_view op = "cub_sum";
  CUDL_CHECK(ctx.device().is_cuda(), "{}: a CUDA peer, called with a context for {}", op, ctx.device());
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"x", &x}, {"out", &out}}) {
    check::defined(op, name, *t);
    check::on_device(op, name, *t, ctx.device());
    check::dtype_is(op, name, *t, DType::f32);
  }
  check::numel_is(op, "out", out, 1);
  Workspace scratch(ctx, cuda_detail::cub_sum_scratch_bytes(x.numel()));
  cuda_detail::launch_cub_sum(x.data<float>(), x.numel(), out.data<float>(), scratch.data(), scratch.bytes(),
                              cuda_detail::stream_of(ctx));
}

}  // namespace cudl
