#include "cudl/engine/dist/session.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "cudl/engine/context.hpp"
#include "cudl/engine/dist/job.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

DistributedSession::DistributedSession() : job_(join_mpi_job()) {}

// The communicator goes before MPI_Finalize (the job's destructor).
DistributedSession::~DistributedSession() {
  comm_.reset();
  job_.reset();
}

int DistributedSession::rank() const { return job_ ? job_->rank() : 0; }
int DistributedSession::size() const { return job_ ? job_->size() : 1; }
int DistributedSession::local_rank() const { return job_ ? job_->local_rank() : 0; }

Device DistributedSession::device(const std::string& request) const {
  if (!active()) return Device::parse(request);
  const int gpus = cuda_device_count();
  if (request == "cpu" || (request == "auto" && gpus == 0)) return Device::cpu();
  CUDL_CHECK(request == "cuda" || request == "auto",
             "--device {}: with {} ranks each rank takes cuda:LOCAL_RANK; give --device cuda (or cpu)", request,
             size());
  CUDL_CHECK(
      local_rank() < gpus,
      "--device {}: rank {} has local rank {} but this machine has {} CUDA device(s): start at most one rank per "
      "GPU on each machine",
      request, rank(), local_rank(), gpus);
  return Device::cuda(local_rank());
}

Communicator* DistributedSession::connect(Context& ctx, double timeout_seconds) {
  if (!job_) return nullptr;
  comm_ = job_->connect(ctx, timeout_seconds);
  return comm_.get();
}

void DistributedSession::fail(const std::string& message) {
  if (!active()) return;
  std::string line = message;  // one line, as the CLI prints every error
  while (!line.empty() && line.back() == '\n') line.pop_back();
  std::replace(line.begin(), line.end(), '\n', ' ');
  fmt::print(stderr, "cudl: error: rank {} of {}: {}\n", rank(), size(), line);
  std::fflush(stderr);
  if (comm_) comm_->abort(1);  // NCCL frees peers blocked in its kernels first
  job_->abort(1);              // no communicator yet (an error while loading the data)
}

}  // namespace cudl
