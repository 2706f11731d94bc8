#pragma once
// Data parallel from C++ (issue 12's `mpirun -np N cudl train`, usable by any program): the MPI
// session, this rank's device, the communicator fit() averages gradients with, and which rank
// writes. Start the program under an MPI launcher (mpirun -np N program ...) and each copy is one
// rank; started plainly it is one process, and every call below gives the one-process answer.
//
//   cudl::DistributedSession session;                       // joins the job (MPI_Init) if any
//   cudl::Context ctx(session.device("auto"));               // cuda:LOCAL_RANK, or the CPU
//   cudl::FitOptions options;
//   options.comm = session.connect(ctx, /*timeout_seconds=*/300);  // nullptr in one process
//   ... fit(ctx, model, train, test, options); only session.writer() saves files ...
//
// Link cudl_distributed (built with the library; MPI and NCCL inside when CMake found them).
#include <memory>
#include <string>

#include "cudl/engine/device.hpp"
#include "cudl/engine/distributed.hpp"

namespace cudl {

class Context;

// One rank's membership of an MPI job (engine/dist/mpi.cpp): internal to the session.
class MpiJob;

class DistributedSession {
 public:
  // Joins the job when an MPI launcher started this process (MPI_Init; MPI_Finalize in the
  // destructor), else runs as one process. In a build without MPI, being started as one of several
  // ranks is an Error: each copy would train alone and write the same files. One per process.
  DistributedSession();
  ~DistributedSession();
  DistributedSession(const DistributedSession&) = delete;
  DistributedSession& operator=(const DistributedSession&) = delete;

  int rank() const;
  int size() const;
  int local_rank() const;  // among the ranks on this machine: it picks the GPU
  bool active() const { return size() > 1; }
  // Rank 0 alone prints, writes metrics, checkpoints and plots.
  bool writer() const { return rank() == 0; }

  // This rank's device for a request spelled as `--device` is: with several ranks, "cuda" (or
  // "auto" with GPUs) is cuda:LOCAL_RANK and "cpu" the CPU; an explicit cuda:N is refused (every
  // rank would take the same GPU). In one process, Device::parse(request).
  Device device(const std::string& request) const;
  // Creates the communicator for ctx's device (NCCL on CUDA, MPI on the CPU), whose collectives
  // throw after `timeout_seconds` without the other ranks; nullptr in one process. The session
  // owns it.
  Communicator* connect(Context& ctx, double timeout_seconds);
  Communicator* communicator() const { return comm_.get(); }
  // After an error on this rank: prints it (naming the rank) and ends every rank, so the others do
  // not wait for this one until their timeout. Returns only in one process.
  void fail(const std::string& message);

 private:
  std::unique_ptr<MpiJob> job_;  // null: one process
  std::unique_ptr<Communicator> comm_;
};

}  // namespace cudl
