// CudaBackend: top_k. Kernels and CUB's segmented sort in kernels/cuda/topk.cu; CPU twin
// kernels/cpu/topk.cpp. Arguments were checked by the Backend front; scratch (the sort keys) comes
// from the context's pool.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

void CudaBackend::do_top_k(Context& ctx, const Tensor& x, Tensor& indices, Tensor& values) {
  // CUB's segmented sort counts items and rows in int.
  cuda_detail::to_int("top_k", "N*K", x.numel(), x.shape());
  const std::size_t bytes = cuda_detail::top_k_scratch_bytes(x.dim(0), x.dim(1));
  Workspace scratch(ctx, bytes);
  cuda_detail::launch_top_k(x.raw(), cuda_detail::float_type(x.dtype()), x.dim(0), x.dim(1), indices.dim(1),
                            indices.data<std::int32_t>(), values.defined() ? values.data<float>() : nullptr,
                            scratch.data(), bytes, cuda_detail::stream_of(ctx));
}

}  // namespace cudl
