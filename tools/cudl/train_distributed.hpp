#pragma once
// `mpirun -np N cudl train ...` (issue 12): the MPI session, this rank's device, the communicator
// fit() averages gradients with, and which rank writes. Without an MPI launcher (or in a build
// without MPI) it is one process, and every call below is the one-process answer.
#include <memory>
#include <string>

#include "cudl/engine/device.hpp"
#include "cudl/engine/distributed.hpp"

namespace cudl {
class Context;
}

namespace cudl::cli {

class DistributedRun {
 public:
  // Starts MPI when an MPI launcher started this process.
  DistributedRun();
  ~DistributedRun();
  DistributedRun(const DistributedRun&) = delete;
  DistributedRun& operator=(const DistributedRun&) = delete;

  int rank() const;
  int size() const;
  bool active() const { return size() > 1; }
  // Rank 0 alone prints, writes metrics, checkpoints and plots.
  bool writer() const { return rank() == 0; }

  // The device for `--device`: with several ranks, `cuda` (or `auto` with GPUs) is cuda:LOCAL_RANK
  // and `cpu` the CPU; an explicit cuda:N is refused (every rank would take the same GPU).
  Device device(const std::string& flag) const;
  // Creates the communicator for ctx's device (NCCL on CUDA, MPI on the CPU); nullptr in one process.
  Communicator* connect(Context& ctx, double timeout_seconds);
  Communicator* communicator() const { return comm_.get(); }
  // After an error on this rank: prints it (naming the rank) and ends every rank, so the others do
  // not wait for this one until their timeout. Returns only in one process.
  void fail(const std::string& message);

 private:
  struct Session;
  std::unique_ptr<Session> session_;
  std::unique_ptr<Communicator> comm_;
};

}  // namespace cudl::cli
