#include "cudl/engine/distributed.hpp"

#include <atomic>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

Shard shard_of(std::int64_t batch, int rank, int size) {
  CUDL_CHECK(size >= 1 && rank >= 0 && rank < size && batch >= 0,
             "shard_of: rank {} of {} ranks and a batch of {} rows: expected 0 <= rank < size and batch >= 0", rank,
             size, batch);
  // Balanced split (sizes differ by at most one row), so a partial last batch still gives every
  // rank work when it has at least `size` rows.
  return {batch * rank / size, batch * (rank + 1) / size};
}

void Communicator::synchronize(Context& ctx) { ctx.synchronize(); }

void Communicator::start_reduce_scatter_mean(Context& /*ctx*/, Tensor /*part*/) {
  CUDL_THROW("start_reduce_scatter_mean: the {} communicator does not shard the update (can_shard_update() is false)",
             name());
}

void Communicator::start_allgather(Context& /*ctx*/, Tensor /*part*/) {
  CUDL_THROW("start_allgather: the {} communicator does not shard the update (can_shard_update() is false)", name());
}

namespace {
// Set before training starts by a test driver's main(), read by the training thread.
std::atomic<StepFaultHook> step_fault_hook{nullptr};
}  // namespace

void set_step_fault_hook_for_test(StepFaultHook hook) { step_fault_hook.store(hook); }

void maybe_inject_fault_for_test(const Communicator& comm, std::int64_t step) {
  if (const StepFaultHook hook = step_fault_hook.load()) hook(comm, step);
}

}  // namespace cudl
