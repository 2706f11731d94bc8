#pragma once
// What DistributedSession (engine/dist/session.cpp) needs from MPI, so that the session itself
// has no MPI in it: engine/dist/mpi.cpp implements it in builds with MPI, engine/dist/no_mpi.cpp
// (which only refuses to run as one of several ranks) in builds without. Internal.
#include <memory>

#include "cudl/engine/distributed.hpp"

namespace cudl {

class Context;

// This process's place in an MPI job; MPI_Finalize when it is destroyed.
class MpiJob {
 public:
  virtual ~MpiJob() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;
  // NCCL on a CUDA context, MPI on the CPU.
  virtual std::unique_ptr<Communicator> connect(Context& ctx, double timeout_seconds) = 0;
  // Ends every rank of the job with `code` (MPI_Abort). Does not return.
  [[noreturn]] virtual void abort(int code) = 0;
};

// Joins the job an MPI launcher started this process in; nullptr when none did. Without MPI in
// the build, throws when a launcher started several ranks.
std::unique_ptr<MpiJob> join_mpi_job();

}  // namespace cudl
