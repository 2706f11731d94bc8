#pragma once
// The MPI communicator's class, shared by engine/dist/mpi.cpp and engine/dist/nccl.cpp (NCCL's
// ranks bootstrap and exchange host values over it). Internal to cudl_distributed.
#include <mpi.h>

#include <functional>
#include <string>
#include <vector>

#include "cudl/engine/dist/mpi.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

// Calls `done` until it returns true; throws naming `what` when `timeout_seconds` pass first (a
// peer died or hangs). Spins briefly, then sleeps between polls so that on an oversubscribed CPU
// the rank being waited for gets the core. MPI's and NCCL's watchdogs both wait this way.
void poll_until_done(const std::function<bool()>& done, const char* what, int rank, int size, double timeout_seconds);

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(const MpiSession& session, double timeout_seconds);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string name() const override { return "mpi"; }
  void allreduce_mean(Context& ctx, Tensor& block) override;
  void start_allreduce_mean(Context& ctx, Tensor part) override;
  void progress() override;
  void finish_collectives(Context& ctx) override;
  bool can_shard_update() const override { return true; }
  void start_reduce_scatter_mean(Context& ctx, Tensor part) override;
  void start_allgather(Context& ctx, Tensor part) override;
  void allreduce_sum(std::vector<double>& values) override;
  void broadcast(Context& ctx, Tensor& block, int root) override;
  [[noreturn]] void abort(int code) override;

  // Copies `bytes` bytes at `data` from rank `root` to every rank (NCCL's unique id).
  void broadcast_bytes(void* data, int bytes, int root, const char* what);
  double timeout_seconds() const { return timeout_; }

 private:
  // Polls `request` until it completes; throws naming `what` when MPI reports an error or the
  // timeout passes first (a peer died or hangs).
  void wait(MPI_Request& request, const char* what);
  void check(int status, const char* call, const char* what) const;

  // What finish_collectives() does with a part once its collective is done.
  enum class Then { average, place_and_average_piece, nothing };
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    Tensor part;
    Then then = Then::average;
    const char* what = "";
    // The ranks' piece sizes and offsets in `part` (reduce-scatter, all-gather): MPI reads them
    // until the request completes, so they live here; their heap buffers survive moves of Pending.
    std::vector<int> counts, offsets;
    bool done = false;
  };
  // Starts a collective on `part`: `issue` calls MPI's `call`, filling the request.
  void start(Tensor part, Then then, const char* what, const char* call, const std::function<int(Pending&)>& issue);
  // Pieces of a part of n elements, shard_of's (MPI's reduce-scatter and all-gather order: by rank).
  void set_pieces(Pending& p, std::int64_t n) const;
  std::vector<Pending> pending_;  // started, not yet finished

  MPI_Comm comm_ = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD, with errors returned to us
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  double timeout_;
};

}  // namespace cudl
