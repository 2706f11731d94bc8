// NCCL for CUDA ranks (issue 27): the gradient all-reduce (ncclAvg) on a communication stream of
// its own, ordered after the gradients it reduces by events, so the buckets that backward has
// finished are reduced while the rest of backward runs on the context's stream. The communicator
// is non-blocking (ncclConfig_t::blocking = 0): no NCCL call can block the host, and every wait
// (creating the communicator, a step's all-reduce, a host read of the device) polls events and
// ncclCommGetAsyncError against --dist-timeout. On a timeout or an error the communicator is
// aborted (ncclCommAbort) before the Error is thrown: that ends the NCCL kernels a dead peer left
// waiting, so the streams behind them drain and the destructors run while the Error unwinds
// (the loader's staging, the pool, the context all wait on the stream) return.
//
// Compiled when CMake finds NCCL in the CUDA toolkit (CUDL_HAVE_NCCL); otherwise only the
// functions that say it is missing.
#include "cudl/engine/dist/mpi.hpp"

#if CUDL_HAVE_NCCL
#include <nccl.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "cudl/engine/cuda/cuda_runtime.hpp"
#include "cudl/engine/dist/mpi_communicator.hpp"
#include "cudl/engine/tensor.hpp"
#endif

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

#if CUDL_HAVE_NCCL

namespace {

// A pair of timing events around one all-reduce on the communication stream.
struct Timed {
  cudaEvent_t start = nullptr, end = nullptr;
};

class NcclCommunicator final : public Communicator {
 public:
  // `mpi`: the job's bootstrap and host channel; null for one rank alone (no MPI: the kit's one GPU).
  NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, Context& ctx, double timeout_seconds)
      : mpi_(std::move(mpi)),
        rank_(mpi_ ? mpi_->rank() : 0),
        size_(mpi_ ? mpi_->size() : 1),
        local_rank_(mpi_ ? mpi_->local_rank() : 0),
        timeout_(timeout_seconds),
        device_(ctx.device().index) {
    CUDL_CHECK(ctx.device().is_cuda() && ctx.cuda(), "NcclCommunicator: needs a CUDA context, got {}", ctx.device());
    CUDL_CHECK(timeout_seconds > 0, "NcclCommunicator: the timeout must be > 0 seconds, got {}", timeout_seconds);
    try {
      make_device_current(device_);
      CUDL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "NcclCommunicator (its stream)");
      for (cudaEvent_t* e : {&ready_, &done_, &read_})
        CUDL_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming), "NcclCommunicator (its events)");
      ncclUniqueId id{};
      if (rank_ == 0) settle(ncclGetUniqueId(&id), "ncclGetUniqueId");
      if (mpi_) mpi_->broadcast_bytes(&id, static_cast<int>(sizeof id), 0, "NcclCommunicator (the NCCL id)");
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;  // returns at once; the state is polled below, against the timeout
      settle(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config),
             "ncclCommInitRankConfig (creating the communicator)");
    } catch (...) {
      release();  // no destructor runs for an object whose constructor threw
      throw;
    }
  }

  // Destructors only log: a communicator torn down after an error may have its peers gone.
  ~NcclCommunicator() override { release(); }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string name() const override { return "nccl"; }

  void allreduce_mean(Context& ctx, Tensor& block) override {
    start_allreduce_mean(ctx, block);
    finish_collectives(ctx);
  }

  // One bucket: on the communication stream once ctx's stream has produced it (the event), timed by
  // events around the all-reduce itself. The host does not wait.
  void start_allreduce_mean(Context& ctx, Tensor part) override {
    check_block(ctx, part, "allreduce_mean (nccl)");
    usable("allreduce_mean (gradients)");
    CudaDeviceGuard guard(device_);  // the events and the stream are this GPU's, whatever is current
    if (!in_step_) {
      // The previous step's all-reduce must be over before its timing events are reused; it has long
      // finished unless a peer died, and this keeps the host at most one step ahead of it.
      wait_step("allreduce_mean (gradients)");
      in_step_ = true;
      used_ = 0;
    }
    after(ctx.cuda()->stream, stream_, "allreduce_mean (gradients)");
    if (used_ == timed_.size()) add_timing_events();
    const Timed& t = timed_[used_++];
    CUDL_CUDA_CHECK(cudaEventRecord(t.start, stream_), "allreduce_mean (gradients)");
    settle(ncclAllReduce(part.raw(), part.raw(), static_cast<std::size_t>(part.numel()), ncclFloat, ncclAvg, comm_,
                         stream_),
           "ncclAllReduce (gradients)");
    CUDL_CUDA_CHECK(cudaEventRecord(t.end, stream_), "allreduce_mean (gradients)");
  }

  // The step's buckets are queued: ctx's stream (the optimizer step) waits for them on the device.
  void finish_collectives(Context& ctx) override {
    if (!in_step_) return;
    in_step_ = false;
    CudaDeviceGuard guard(device_);
    CUDL_CUDA_CHECK(cudaEventRecord(done_, stream_), "allreduce_mean (gradients)");
    CUDL_CUDA_CHECK(cudaStreamWaitEvent(ctx.cuda()->stream, done_, 0), "allreduce_mean (gradients)");
    step_pending_ = true;
  }

  void allreduce_sum(std::vector<double>& values) override {
    if (mpi_) mpi_->allreduce_sum(values);  // one rank: the sum is the values
  }

  void broadcast(Context& ctx, Tensor& block, int root) override {
    check_block(ctx, block, "broadcast (nccl)");
    usable("broadcast (parameters)");
    CudaDeviceGuard guard(device_);
    after(ctx.cuda()->stream, stream_, "broadcast (parameters)");
    settle(ncclBroadcast(block.raw(), block.raw(), static_cast<std::size_t>(block.numel()), ncclFloat, root, comm_,
                         stream_),
           "ncclBroadcast (parameters)");
    after(stream_, ctx.cuda()->stream, "broadcast (parameters)");
    synchronize(ctx);
  }

  void synchronize(Context& ctx) override {
    CudaDeviceGuard guard(device_);
    CUDL_CUDA_CHECK(cudaEventRecord(read_, ctx.cuda()->stream), "synchronize (nccl)");
    watch(read_, "waiting for the device (a step's all-reduce)");
    if (!in_step_) wait_step("allreduce_mean (gradients)");  // done already: reads its timing
  }

  void abort_collectives() override {
    if (!comm_) return;
    const ncclResult_t r = ncclCommAbort(comm_);
    comm_ = nullptr;
    if (r != ncclSuccess && r != ncclInProgress)
      fmt::print(stderr, "cudl: warning: ncclCommAbort: {}\n", ncclGetErrorString(r));
  }

  [[noreturn]] void abort(int code) override {
    abort_collectives();  // frees peers blocked in NCCL kernels on this side
    if (mpi_) mpi_->abort(code);
    std::_Exit(code);
  }

 private:
  // Throws naming `what` after aborting the communicator, so nothing waits on it while the Error unwinds.
  template <class... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
    const std::string message = fmt::format(format, std::forward<Args>(args)...);
    abort_collectives();
    throw Error(message);
  }

  void usable(const char* what) {
    if (!comm_)
      fail("{}: the NCCL communicator of rank {} of {} was aborted after an earlier error or timeout", what, rank_,
           size_);
  }

  static void check_block(const Context& ctx, const Tensor& block, const char* what) {
    CUDL_CHECK(block.device() == ctx.device() && block.dtype() == DType::f32,
               "{}: the block must be f32 on {}, got {} on {}", what, ctx.device(), dtype_name(block.dtype()),
               block.device());
  }

  // A NCCL call on the non-blocking communicator: ncclInProgress means it goes on in the background
  // (the collective may not be on the stream yet), so the state is polled until it settles.
  void settle(ncclResult_t result, const char* what) {
    if (result == ncclInProgress) {
      poll(what, [&] { return state(what) != ncclInProgress; });
      result = ncclSuccess;
    }
    if (result != ncclSuccess)
      fail("{} failed on rank {} of {}: {} ({})", what, rank_, size_, ncclGetErrorString(result),
           ncclGetLastError(comm_));
  }

  // The communicator's asynchronous state; an error (a peer gone, a network failure) aborts and throws.
  ncclResult_t state(const char* what) {
    if (!comm_) return ncclSuccess;  // creation failed before there was a communicator to ask
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
    if (r != ncclSuccess) async = r;
    if (async != ncclSuccess && async != ncclInProgress)
      fail("{}: NCCL reports {} on rank {} of {} ({}; did another rank die?)", what, ncclGetErrorString(async), rank_,
           size_, ncclGetLastError(comm_));
    return async;
  }

  // Polls `done` against the timeout; on a timeout the communicator is aborted before the Error.
  template <class Done>
  void poll(const char* what, Done done) {
    try {
      poll_until_done(done, what, rank_, size_, timeout_);
    } catch (const Error&) {
      abort_collectives();
      throw;
    }
  }

  // Waits, within the timeout, for `event` (on the device), watching NCCL's state meanwhile.
  void watch(cudaEvent_t event, const char* what) {
    poll(what, [&] {
      const cudaError_t q = cudaEventQuery(event);
      if (q == cudaSuccess) return true;
      if (q != cudaErrorNotReady) fail("{}: cudaEventQuery: {}", what, cudaGetErrorString(q));
      state(what);
      return false;
    });
  }

  // Makes `waiter` wait, on the device, for what `producer` has queued so far.
  void after(cudaStream_t producer, cudaStream_t waiter, const char* what) {
    CUDL_CUDA_CHECK(cudaEventRecord(ready_, producer), "{}", what);
    CUDL_CUDA_CHECK(cudaStreamWaitEvent(waiter, ready_, 0), "{}", what);
  }

  // The last step's all-reduce, within the timeout; then its time on the communication stream.
  void wait_step(const char* what) {
    if (!step_pending_) return;
    watch(done_, what);
    step_pending_ = false;
    for (std::size_t i = 0; i < used_; ++i) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, timed_[i].start, timed_[i].end) == cudaSuccess) allreduce_seconds_ += ms / 1e3;
    }
    used_ = 0;
  }

  void add_timing_events() {
    Timed t;
    CUDL_CUDA_CHECK(cudaEventCreate(&t.start), "allreduce_mean (timing events)");
    if (const cudaError_t e = cudaEventCreate(&t.end); e != cudaSuccess) {
      cudaEventDestroy(t.start);
      CUDL_CUDA_CHECK(e, "allreduce_mean (timing events)");
    }
    timed_.push_back(t);
  }

  // A clean teardown: ncclCommFinalize flushes what is queued (non-blocking: polled), then
  // ncclCommDestroy frees it. A peer that is gone makes the flush time out: then abort instead.
  void finalize() noexcept {
    try {
      settle(ncclCommFinalize(comm_), "ncclCommFinalize");
    } catch (const std::exception& e) {
      fmt::print(stderr, "cudl: warning: {}\n", e.what());  // aborted already
    }
    if (!comm_) return;
    const ncclResult_t r = ncclCommDestroy(comm_);
    comm_ = nullptr;
    if (r != ncclSuccess) fmt::print(stderr, "cudl: warning: ncclCommDestroy: {}\n", ncclGetErrorString(r));
  }

  void release() noexcept {
    CudaDeviceGuard guard(device_, std::nothrow);
    if (comm_) finalize();
    for (Timed& t : timed_) {
      cudaEventDestroy(t.start);
      cudaEventDestroy(t.end);
    }
    timed_.clear();
    for (cudaEvent_t* e : {&ready_, &done_, &read_})
      if (*e) cudaEventDestroy(std::exchange(*e, nullptr));
    if (stream_) cudaStreamDestroy(std::exchange(stream_, nullptr));
  }

  std::unique_ptr<MpiCommunicator> mpi_;  // bootstrap, host values, abort; null for one rank alone
  int rank_, size_, local_rank_;
  double timeout_;
  int device_;
  ncclComm_t comm_ = nullptr;      // null once aborted (or destroyed)
  cudaStream_t stream_ = nullptr;  // the communication stream
  cudaEvent_t ready_ = nullptr;    // orders one stream after the other
  cudaEvent_t done_ = nullptr;     // the last step's all-reduces, on stream_
  cudaEvent_t read_ = nullptr;     // synchronize(): ctx's stream up to a host read
  std::vector<Timed> timed_;       // one pair per bucket, reused every step
  std::size_t used_ = 0;           // pairs recorded in the current (or last) step
  bool in_step_ = false;           // buckets started, finish_collectives not yet called
  bool step_pending_ = false;      // done_ recorded and not yet seen complete
};

}  // namespace

bool nccl_compiled() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(const MpiSession& session, Context& ctx, double timeout_seconds) {
  return std::make_unique<NcclCommunicator>(std::make_unique<MpiCommunicator>(session, timeout_seconds), ctx,
                                            timeout_seconds);
}

std::unique_ptr<Communicator> make_single_rank_nccl_communicator(Context& ctx, double timeout_seconds) {
  return std::make_unique<NcclCommunicator>(nullptr, ctx, timeout_seconds);
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

std::unique_ptr<Communicator> make_single_rank_nccl_communicator(Context& ctx, double /*timeout_seconds*/) {
  CUDL_THROW("a NCCL communicator on {}: this cudl was built without NCCL", ctx.device());
}

#endif

}  // namespace cudl
