#include "tools/cudl/train_distributed.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#if CUDL_HAVE_MPI
#include "cudl/engine/dist/mpi.hpp"
#endif

namespace cudl::cli {

#if CUDL_HAVE_MPI
struct DistributedRun::Session {
  MpiSession mpi;
};
#else
struct DistributedRun::Session {};
#endif

DistributedRun::DistributedRun() {
#if CUDL_HAVE_MPI
  if (launched_by_mpi()) session_ = std::make_unique<Session>();
#else
  // Without MPI each of N launched copies would train alone and all write the same files.
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"}) {
    const char* n = std::getenv(v);
    CUDL_CHECK(!n || std::atoi(n) <= 1,
               "train: started as one of {} ranks ({}={}), but this cudl was built without MPI: rebuild with "
               "libopenmpi-dev installed (CUDL_DISTRIBUTED=ON), or run one process",
               n ? n : "", v, n ? n : "");
  }
#endif
}

// The communicator goes before MPI_Finalize (the session's destructor).
DistributedRun::~DistributedRun() { comm_.reset(); }

int DistributedRun::rank() const {
#if CUDL_HAVE_MPI
  if (session_) return session_->mpi.rank();
#endif
  return 0;
}

int DistributedRun::size() const {
#if CUDL_HAVE_MPI
  if (session_) return session_->mpi.size();
#endif
  return 1;
}

Device DistributedRun::device(const std::string& flag) const {
  if (!active()) return Device::parse(flag);
#if CUDL_HAVE_MPI
  const int local = session_->mpi.local_rank();
  const int gpus = cuda_device_count();
  if (flag == "cpu" || (flag == "auto" && gpus == 0)) return Device::cpu();
  CUDL_CHECK(flag == "cuda" || flag == "auto",
             "--device {}: with {} ranks each rank takes cuda:LOCAL_RANK; give --device cuda (or cpu)", flag, size());
  CUDL_CHECK(local < gpus,
             "--device {}: rank {} has local rank {} but this machine has {} CUDA device(s): start at most one rank per "
             "GPU on each machine",
             flag, rank(), local, gpus);
  return Device::cuda(local);
#else
  return Device::parse(flag);
#endif
}

Communicator* DistributedRun::connect(Context& ctx, double timeout_seconds) {
#if CUDL_HAVE_MPI
  if (!session_) return nullptr;
  comm_ = ctx.device().is_cuda() ? make_nccl_communicator(session_->mpi, ctx, timeout_seconds)
                                 : make_mpi_communicator(session_->mpi, timeout_seconds);
  return comm_.get();
#else
  (void)ctx;
  (void)timeout_seconds;
  return nullptr;
#endif
}

void DistributedRun::fail(const std::string& message) {
  if (!active()) return;
  std::string line = message;  // one line, as main() prints every error
  while (!line.empty() && line.back() == '\n') line.pop_back();
  std::replace(line.begin(), line.end(), '\n', ' ');
  fmt::print(stderr, "cudl: error: rank {} of {}: {}\n", rank(), size(), line);
  std::fflush(stderr);
  if (comm_) comm_->abort(1);
#if CUDL_HAVE_MPI
  // No communicator yet (an error while loading the data): abort through MPI directly.
  make_mpi_communicator(session_->mpi, 1.0)->abort(1);
#endif
}

}  // namespace cudl::cli
