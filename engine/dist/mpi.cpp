#include "cudl/engine/dist/mpi.hpp"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/dist/job.hpp"
#include "cudl/engine/dist/mpi_communicator.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string mpi_error_string(int status) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(status, text, &length) != MPI_SUCCESS) return fmt::format("MPI error {}", status);
  return std::string(text, static_cast<std::size_t>(length));
}

int checked_count(std::int64_t n, const char* what) {
  // MPI counts are int; the largest model here (VGG19, 143.7M floats) is far below the limit.
  CUDL_CHECK(n >= 0 && n <= std::numeric_limits<int>::max(), "{}: {} elements is more than one MPI call takes ({})",
             what, n, std::numeric_limits<int>::max());
  return static_cast<int>(n);
}

}  // namespace

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

MpiSession::MpiSession() {
  int provided = 0;
  // FUNNELED: only the training thread calls MPI (the loader's staging thread never does).
  const int status = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  CUDL_CHECK(status == MPI_SUCCESS, "MPI_Init_thread failed: {}", mpi_error_string(status));
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // The ranks that share this machine (and its GPUs): the local rank picks cuda:local_rank.
  MPI_Comm local = MPI_COMM_NULL;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_free(&local);
  } else if (const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    local_rank_ = std::atoi(v);
  }
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

MpiCommunicator::MpiCommunicator(const MpiSession& session, double timeout_seconds)
    : rank_(session.rank()), size_(session.size()), local_rank_(session.local_rank()), timeout_(timeout_seconds) {
  CUDL_CHECK(timeout_seconds > 0, "MpiCommunicator: the timeout must be > 0 seconds, got {}", timeout_seconds);
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", "MpiCommunicator");
  // Errors come back to us as codes (MPI's default aborts the job with MPI's own message), so a
  // peer's death is reported as cudl's one line naming the step.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check(int status, const char* call, const char* what) const {
  CUDL_CHECK(status == MPI_SUCCESS, "{}: {} failed on rank {} of {}: {} (did another rank die?)", what, call, rank_,
             size_, mpi_error_string(status));
}

void poll_until_done(const std::function<bool()>& done, const char* what, int rank, int size, double timeout_seconds) {
  const auto start = Clock::now();
  for (long spins = 0;; ++spins) {
    if (done()) return;
    CUDL_CHECK(seconds_since(start) < timeout_seconds,
               "{}: rank {} of {} waited {:g} s (--dist-timeout) for the other ranks: one of them died or hangs; "
               "stopping every rank",
               what, rank, size, timeout_seconds);
    // Spin briefly (a step's all-reduce is usually ready within microseconds of the last rank),
    // then yield the core: on an oversubscribed CPU the rank we wait for may need it.
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void MpiCommunicator::wait(MPI_Request& request, const char* what) {
  poll_until_done(
      [&] {
        int done = 0;
        check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
        return done != 0;
      },
      what, rank_, size_, timeout_);
}

void MpiCommunicator::allreduce_mean(Context& ctx, Tensor& block) {
  CUDL_CHECK(block.device().is_cpu() && block.dtype() == DType::f32,
             "allreduce_mean (mpi): the block must be f32 on the CPU, got {} on {} (CUDA ranks use NCCL)",
             dtype_name(block.dtype()), block.device());
  const auto start = Clock::now();
  const int n = checked_count(block.numel(), "allreduce_mean (mpi)");
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(MPI_IN_PLACE, block.data<float>(), n, MPI_FLOAT, MPI_SUM, comm_, &request), "MPI_Iallreduce",
        "allreduce_mean (gradients)");
  wait(request, "allreduce_mean (gradients)");
  ctx.backend().scale(ctx, block, 1.0f / static_cast<float>(size_));
  allreduce_seconds_ += seconds_since(start);
}

void MpiCommunicator::start(Tensor part, Then then, const char* what, const char* call,
                            const std::function<int(Pending&)>& issue) {
  CUDL_CHECK(part.device().is_cpu() && part.dtype() == DType::f32,
             "{} (mpi): the part must be f32 on the CPU, got {} on {} (CUDA ranks use NCCL)", what,
             dtype_name(part.dtype()), part.device());
  const auto start = Clock::now();
  Pending p;
  p.part = std::move(part);
  p.then = then;
  p.what = what;
  check(issue(p), call, what);
  pending_.push_back(std::move(p));
  allreduce_seconds_ += seconds_since(start);
}

void MpiCommunicator::set_pieces(Pending& p, std::int64_t n) const {
  checked_count(n, p.what);
  for (int r = 0; r < size_; ++r) {
    const Shard s = shard_of(n, r, size_);
    p.counts.push_back(static_cast<int>(s.rows()));
    p.offsets.push_back(static_cast<int>(s.begin));
  }
}

void MpiCommunicator::start_allreduce_mean(Context& /*ctx*/, Tensor part) {
  start(std::move(part), Then::average, "allreduce_mean (a gradient bucket)", "MPI_Iallreduce", [&](Pending& p) {
    const int n = checked_count(p.part.numel(), p.what);
    return MPI_Iallreduce(MPI_IN_PLACE, p.part.data<float>(), n, MPI_FLOAT, MPI_SUM, comm_, &p.request);
  });
}

void MpiCommunicator::start_reduce_scatter_mean(Context& /*ctx*/, Tensor part) {
  start(std::move(part), Then::place_and_average_piece, "reduce_scatter_mean (a gradient bucket)",
        "MPI_Ireduce_scatter", [&](Pending& p) {
          set_pieces(p, p.part.numel());
          // In place: the input is the whole part, and MPI leaves this rank's summed piece at the part's
          // start; finish_collectives() moves it to the piece's own place.
          return MPI_Ireduce_scatter(MPI_IN_PLACE, p.part.data<float>(), p.counts.data(), MPI_FLOAT, MPI_SUM, comm_,
                                     &p.request);
        });
}

void MpiCommunicator::start_allgather(Context& /*ctx*/, Tensor part) {
  start(std::move(part), Then::nothing, "allgather (the updated pieces)", "MPI_Iallgatherv", [&](Pending& p) {
    set_pieces(p, p.part.numel());
    // In place: this rank's piece is already where the others' land.
    return MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, p.part.data<float>(), p.counts.data(), p.offsets.data(),
                           MPI_FLOAT, comm_, &p.request);
  });
}

void MpiCommunicator::progress() {
  // Without a progress thread, MPI moves a non-blocking collective only inside MPI calls.
  for (Pending& p : pending_) {
    if (p.done) continue;
    int done = 0;
    check(MPI_Test(&p.request, &done, MPI_STATUS_IGNORE), "MPI_Test", p.what);
    p.done = done != 0;
  }
}

void MpiCommunicator::finish_collectives(Context& ctx) {
  const auto start = Clock::now();
  const float inverse = 1.0f / static_cast<float>(size_);
  for (Pending& p : pending_) {
    if (!p.done) wait(p.request, p.what);
    if (p.then == Then::average) ctx.backend().scale(ctx, p.part, inverse);
    if (p.then == Then::place_and_average_piece) {
      const auto rank = static_cast<std::size_t>(rank_);
      const auto count = p.counts[rank];
      float* data = p.part.data<float>();
      std::memmove(data + p.offsets[rank], data, static_cast<std::size_t>(count) * sizeof(float));
      Tensor piece = p.part.view(p.offsets[rank], Shape{count});
      ctx.backend().scale(ctx, piece, inverse);
    }
  }
  pending_.clear();
  allreduce_seconds_ += seconds_since(start);
}

void MpiCommunicator::allreduce_sum(std::vector<double>& values) {
  const int n = checked_count(static_cast<std::int64_t>(values.size()), "allreduce_sum (mpi)");
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(MPI_IN_PLACE, values.data(), n, MPI_DOUBLE, MPI_SUM, comm_, &request), "MPI_Iallreduce",
        "allreduce_sum (metrics)");
  wait(request, "allreduce_sum (metrics)");
}

void MpiCommunicator::broadcast(Context& /*ctx*/, Tensor& block, int root) {
  CUDL_CHECK(block.device().is_cpu() && block.dtype() == DType::f32,
             "broadcast (mpi): the block must be f32 on the CPU, got {} on {}", dtype_name(block.dtype()),
             block.device());
  const int n = checked_count(block.numel(), "broadcast (mpi)");
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ibcast(block.data<float>(), n, MPI_FLOAT, root, comm_, &request), "MPI_Ibcast", "broadcast (parameters)");
  wait(request, "broadcast (parameters)");
}

void MpiCommunicator::broadcast_bytes(void* data, int bytes, int root, const char* what) {
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ibcast(data, bytes, MPI_BYTE, root, comm_, &request), "MPI_Ibcast", what);
  wait(request, what);
}

void MpiCommunicator::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest if it ever did
}

std::unique_ptr<Communicator> make_mpi_communicator(const MpiSession& session, double timeout_seconds) {
  return std::make_unique<MpiCommunicator>(session, timeout_seconds);
}

namespace {

// DistributedSession's job in a build with MPI: the session (MPI_Init .. MPI_Finalize) and the
// communicator for a context's device.
class LaunchedJob final : public MpiJob {
 public:
  int rank() const override { return session_.rank(); }
  int size() const override { return session_.size(); }
  int local_rank() const override { return session_.local_rank(); }
  std::unique_ptr<Communicator> connect(Context& ctx, double timeout_seconds) override {
    return ctx.device().is_cuda() ? make_nccl_communicator(session_, ctx, timeout_seconds)
                                  : make_mpi_communicator(session_, timeout_seconds);
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest if it ever did
  }

 private:
  MpiSession session_;
};

}  // namespace

std::unique_ptr<MpiJob> join_mpi_job() {
  if (!launched_by_mpi()) return nullptr;
  return std::make_unique<LaunchedJob>();
}

}  // namespace cudl
