#pragma once
// The MPI session and the communicators behind cudl::Communicator: MPI_Allreduce for CPU ranks,
// NCCL for CUDA ranks (bootstrapped over MPI). Built into cudl_distributed when CMake finds MPI
// (CUDL_DISTRIBUTED); not installed with the library, so a consumer of find_package(cudl) never
// needs MPI. Programs use it through DistributedSession (engine/dist/session.hpp).
#include <memory>

#include "cudl/engine/distributed.hpp"

namespace cudl {

// True when an MPI launcher started this process (mpirun, srun, hydra: they set these variables).
// A plain `cudl train` then never initialises MPI.
bool launched_by_mpi();

// Owns MPI's lifetime: MPI_Init_thread in the constructor, MPI_Finalize in the destructor.
// One per process, created before any communicator and destroyed after them.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

// All of MPI_COMM_WORLD over MPI; tensors must be on the CPU. Every collective is non-blocking
// and polled against `timeout_seconds`, so a dead or hung peer ends in an error, not a hang.
std::unique_ptr<Communicator> make_mpi_communicator(const MpiSession& session, double timeout_seconds);

// True when this build can average gradients on CUDA devices (NCCL was found).
bool nccl_compiled();
// All of MPI_COMM_WORLD over NCCL on ctx's GPU (ctx must be a CUDA context, one GPU per rank);
// host values (metrics) still go over MPI. Throws when NCCL was not compiled in.
std::unique_ptr<Communicator> make_nccl_communicator(const MpiSession& session, Context& ctx, double timeout_seconds);
// NCCL on ctx's GPU for one rank alone, without MPI: the same communicator (its stream, events,
// non-blocking creation, abort and teardown) on the one GPU a test machine has. Throws when NCCL
// was not compiled in.
std::unique_ptr<Communicator> make_single_rank_nccl_communicator(Context& ctx, double timeout_seconds);

}  // namespace cudl
