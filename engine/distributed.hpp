#pragma once
// Data-parallel training's view of the other processes: who this rank is, and the few collective
// operations a training step needs. The interface has no MPI or NCCL in it, so the library (and
// an installed cudl) stays free of both; the implementations live in engine/dist/ (built into
// cudl_distributed with the session that creates them, engine/dist/session.hpp; MPI when CMake
// finds it, and NCCL for CUDA devices).
//
// Every rank runs the same program on the same global batch order; rank r trains on rows
// shard_of(B, r, N) of each global batch, and the gradient block is averaged once per step.
#include <cstdint>
#include <string>
#include <vector>

#include "cudl/engine/tensor.hpp"

namespace cudl {

class Context;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This rank's index among the ranks on its machine: it picks the GPU (cuda:local_rank).
  virtual int local_rank() const = 0;
  // "mpi" or "nccl": what moves the gradients.
  virtual std::string name() const = 0;

  // Replaces `block` (f32, contiguous, on ctx's device) with its mean over all ranks. Called once
  // per step on the whole gradient block. A rank that does not arrive within the timeout makes it
  // throw (the caller then aborts the job: see abort()).
  virtual void allreduce_mean(Context& ctx, Tensor& block) = 0;
  // Overlapping the all-reduce with backward (models/train/gradient_buckets.hpp): starts averaging
  // `part` (a view into the gradient block) over all ranks and returns at once where the transport
  // can (MPI's non-blocking collectives); progress() lets started ones advance between layers;
  // finish_collectives() waits for every started one (with the timeout) and leaves each part
  // averaged. The parts of one step never overlap; every rank starts the same parts in the same
  // order. By default a part is averaged at once, in allreduce_mean.
  virtual void start_allreduce_mean(Context& ctx, Tensor part) { allreduce_mean(ctx, part); }
  virtual void progress() {}
  virtual void finish_collectives(Context& /*ctx*/) {}

  // The sharded update (ZeRO stage 1; TrainConfig::shard_update): an all-reduce split into its two
  // halves, with the optimizer step between them on this rank's piece only. Rank r's piece of a
  // part of n elements is shard_of(n, r, size()). start_reduce_scatter_mean(part): after
  // finish_collectives(), this rank's piece of `part` holds the mean over the ranks (the same sums
  // as the all-reduce's) and the rest of `part` is scratch. start_allgather(part): every rank's
  // piece of `part` is copied to every other rank; after finish_collectives() every rank holds the
  // whole of it. Both start and finish as the all-reduce's buckets do. A communicator that cannot
  // says so here and the training loop all-reduces instead.
  virtual bool can_shard_update() const { return false; }
  virtual void start_reduce_scatter_mean(Context& ctx, Tensor part);
  virtual void start_allgather(Context& ctx, Tensor part);
  // Sums host values element-wise over all ranks, in place (metrics: loss sums, counts).
  virtual void allreduce_sum(std::vector<double>& values) = 0;
  // Copies rank `root`'s `block` (f32, on ctx's device) to every rank.
  virtual void broadcast(Context& ctx, Tensor& block, int root) = 0;
  // Ends every rank of the job with `code` (after a rank's own error, so the others do not wait
  // for it until their timeout). Does not return.
  [[noreturn]] virtual void abort(int code) = 0;
  // Waits for the work queued on ctx's device, as ctx.synchronize() does, but within the timeout:
  // the training loop calls it before it reads the device (the periodic loss, the epoch's end), so
  // a step whose all-reduce hangs on the device (NCCL) ends in an Error instead of a read that
  // never returns. CPU ranks have nothing queued.
  virtual void synchronize(Context& ctx);
  // Stops this rank's collectives in flight and makes every later one throw (NCCL: ncclCommAbort,
  // which ends the kernels a dead peer would leave waiting, so the streams behind them drain and
  // the destructors that wait on them return). The communicators call it themselves before they
  // throw on a timeout or an error; the process goes on (abort() ends the job). Nothing by default.
  virtual void abort_collectives() {}

  // Seconds spent in the gradient all-reduce so far (waiting for the slowest rank included), for its
  // share of the run: MPI, the host's time in it; NCCL, the all-reduces' own time on the
  // communication stream (events around each, read a step later or at synchronize()).
  double allreduce_seconds() const { return allreduce_seconds_; }

 protected:
  double allreduce_seconds_ = 0;
};

// Rows [begin, end) of a global batch of `batch` rows that rank `rank` of `size` trains on: equal
// shards when size divides batch, else the first rows of each rank's equal share (an epoch's last,
// partial batch), so the shards cover the batch exactly once.
struct Shard {
  std::int64_t begin = 0, end = 0;
  std::int64_t rows() const { return end - begin; }
};
Shard shard_of(std::int64_t batch, int rank, int size);

// A test seam, not a feature: the training loop calls maybe_inject_fault_for_test just before each
// step's gradient all-reduce (global step `step`, 1-based), which calls the hook a test program
// installed, if any. Only the test driver tests/drivers/dist_fault.cpp installs one (it makes a
// rank exit or hang there, to test that the others stop); in every other program it is null and
// the call does nothing. Nothing reads the environment for it.
using StepFaultHook = void (*)(const Communicator& comm, std::int64_t step);
void set_step_fault_hook_for_test(StepFaultHook hook);
void maybe_inject_fault_for_test(const Communicator& comm, std::int64_t step);

}  // namespace cudl
