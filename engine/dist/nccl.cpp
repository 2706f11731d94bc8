// NCCL for CUDA ranks: one ncclAllReduce (ncclAvg) over the gradient block on the context's stream.
// Compiled when CMake finds NCCL in the CUDA toolkit (CUDL_HAVE_NCCL); otherwise only the
// functions that say it is missing.
#include "cudl/engine/dist/mpi.hpp"

#if CUDL_HAVE_NCCL
#include <nccl.h>

#include <chrono>

#include "cudl/engine/cuda/cuda_runtime.hpp"
#include "cudl/engine/dist/mpi_communicator.hpp"
#include "cudl/engine/tensor.hpp"
#endif

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

#if CUDL_HAVE_NCCL

namespace {

using Clock = std::chrono::steady_clock;

#define CUDL_NCCL_CHECK(call, what)                                                                              \
  do {                                                                                                           \
    ncclResult_t cudl_nccl_ = (call);                                                                            \
    CUDL_CHECK(cudl_nccl_ == ncclSuccess, "{}: {} failed: {} ({})", what, #call, ncclGetErrorString(cudl_nccl_), \
               ncclGetLastError(nullptr));                                                                       \
  } while (0)

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const MpiSession& session, Context& ctx, double timeout_seconds)
      : mpi_(session, timeout_seconds), device_(ctx.device().index) {
    CUDL_CHECK(ctx.device().is_cuda() && ctx.cuda(), "NcclCommunicator: needs a CUDA context, got {}", ctx.device());
    make_device_current(device_);
    ncclUniqueId id{};
    if (mpi_.rank() == 0) CUDL_NCCL_CHECK(ncclGetUniqueId(&id), "NcclCommunicator");
    mpi_.broadcast_bytes(&id, static_cast<int>(sizeof id), 0, "NcclCommunicator (the NCCL id)");
    CUDL_NCCL_CHECK(ncclCommInitRank(&comm_, mpi_.size(), id, mpi_.rank()), "NcclCommunicator");
    // Timing only off: the event marks the last all-reduce's completion for the watchdog.
    CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "NcclCommunicator");
  }
  ~NcclCommunicator() override {
    // Destructors only log: a communicator torn down after an error may have peers gone.
    if (done_) cudaEventDestroy(done_);
    if (comm_) {
      const ncclResult_t r = ncclCommDestroy(comm_);
      if (r != ncclSuccess) fmt::print(stderr, "cudl: warning: ncclCommDestroy: {}\n", ncclGetErrorString(r));
    }
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return mpi_.rank(); }
  int size() const override { return mpi_.size(); }
  int local_rank() const override { return mpi_.local_rank(); }
  std::string name() const override { return "nccl"; }

  void allreduce_mean(Context& ctx, Tensor& block) override {
    CUDL_CHECK(block.device() == ctx.device() && block.dtype() == DType::f32,
               "allreduce_mean (nccl): the block must be f32 on {}, got {} on {}", ctx.device(),
               dtype_name(block.dtype()), block.device());
    const auto start = Clock::now();
    // The watchdog lags one step: the previous all-reduce has long finished unless a peer died,
    // so waiting for it here costs nothing and keeps the host at most one step ahead, without a
    // sync on this step's work.
    wait_done("allreduce_mean (gradients)");
    CUDL_NCCL_CHECK(ncclAllReduce(block.raw(), block.raw(), static_cast<std::size_t>(block.numel()), ncclFloat, ncclAvg,
                                  comm_, ctx.cuda()->stream),
                    "allreduce_mean (gradients)");
    CUDL_CUDA_CHECK(cudaEventRecord(done_, ctx.cuda()->stream), "allreduce_mean (gradients)");
    pending_ = true;
    allreduce_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  }
  void allreduce_sum(std::vector<double>& values) override { mpi_.allreduce_sum(values); }
  void broadcast(Context& ctx, Tensor& block, int root) override {
    CUDL_CHECK(block.device() == ctx.device() && block.dtype() == DType::f32,
               "broadcast (nccl): the block must be f32 on {}, got {} on {}", ctx.device(), dtype_name(block.dtype()),
               block.device());
    CUDL_NCCL_CHECK(ncclBroadcast(block.raw(), block.raw(), static_cast<std::size_t>(block.numel()), ncclFloat, root,
                                  comm_, ctx.cuda()->stream),
                    "broadcast (parameters)");
    CUDL_CUDA_CHECK(cudaEventRecord(done_, ctx.cuda()->stream), "broadcast (parameters)");
    pending_ = true;
    wait_done("broadcast (parameters)");
  }
  [[noreturn]] void abort(int code) override {
    // Frees peers blocked in NCCL kernels on this side; MPI_Abort then ends every rank.
    if (comm_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    mpi_.abort(code);
  }

 private:
  void wait_done(const char* what) {
    if (!pending_) return;
    poll_until_done(
        [&] {
          const cudaError_t q = cudaEventQuery(done_);
          if (q == cudaSuccess) return true;
          CUDL_CHECK(q == cudaErrorNotReady, "{}: cudaEventQuery: {}", what, cudaGetErrorString(q));
          ncclResult_t async = ncclSuccess;
          CUDL_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async), what);
          CUDL_CHECK(async == ncclSuccess, "{}: NCCL reports {} on rank {} of {} (did another rank die?)", what,
                     ncclGetErrorString(async), rank(), size());
          return false;
        },
        what, rank(), size(), mpi_.timeout_seconds());
    pending_ = false;
  }

  MpiCommunicator mpi_;  // bootstrap, host values, abort
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaEvent_t done_ = nullptr;
  bool pending_ = false;
};

}  // namespace

bool nccl_compiled() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(const MpiSession& session, Context& ctx, double timeout_seconds) {
  return std::make_unique<NcclCommunicator>(session, ctx, timeout_seconds);
}

#else

bool nccl_compiled() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(const MpiSession& /*session*/, Context& ctx,
                                                     double /*timeout_seconds*/) {
  CUDL_THROW(
      "distributed training on {}: this cudl was built without NCCL, which averages gradients on CUDA devices "
      "(rebuild with the CUDA toolkit's nccl.h and libnccl found, CUDL_DISTRIBUTED=ON), or train with --device cpu",
      ctx.device());
}

#endif

}  // namespace cudl
