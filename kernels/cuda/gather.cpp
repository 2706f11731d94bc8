// CudaBackend: gather_rows. Kernel in kernels/cuda/gather.cu; CPU twin kernels/cpu/gather.cpp.
// Arguments were checked by the Backend front. The indices stay on the device (checking them on
// the host would cost a copy and a wait per batch, the host work a device-resident dataset is
// there to remove): an index out of range zeroes its row and sets the device fault word, which
// the next synchronising host read turns into an Error naming gather_rows.
#include "cudl/engine/cuda/cuda_runtime.hpp"
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

void CudaBackend::do_gather_rows(Context& ctx, const Tensor& src, const Tensor& index, Tensor& out) {
  const std::int64_t n = src.dim(0);
  const std::size_t row_bytes = n > 0 ? src.nbytes() / static_cast<std::size_t>(n) : 0;
  if (row_bytes == 0) return;
  cuda_detail::launch_gather_rows(src.raw(), n, index.data<std::int32_t>(), index.dim(0), row_bytes, out.raw(),
                                  device_fault_word(ctx), cuda_detail::stream_of(ctx));
}

}  // namespace cudl
