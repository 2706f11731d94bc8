// CudaBackend: match_histograms. Kernels and CUB's sorts in kernels/cuda/histogram.cu; CPU
// twin kernels/cpu/histogram.cpp. Arguments were checked by the Backend front; scratch (the sort
// keys) comes from the context's pool.
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

void CudaBackend::do_match_histograms(Context& ctx, const Tensor& source, const Tensor& reference, Tensor& out) {
  // CUB's sort counts a row's items in int.
  cuda_detail::to_int("match_histograms", "source's row length", source.dim(1), source.shape());
  cuda_detail::to_int("match_histograms", "reference's row length", reference.dim(1), reference.shape());
  const std::int64_t rows = source.dim(0), n = source.dim(1), m = reference.dim(1);
  const std::size_t bytes = cuda_detail::match_histograms_scratch_bytes(rows, n, m);
  Workspace scratch(ctx, bytes);
  cuda_detail::launch_match_histograms(source.data<float>(), reference.data<float>(), out.data<float>(), rows, n, m,
                                       scratch.data(), bytes, cuda_detail::stream_of(ctx));
}

}  // namespace cudl
