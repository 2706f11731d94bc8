#include "cudl/engine/distributed.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

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

void maybe_inject_fault_for_test(const Communicator& comm, std::int64_t step) {
  static const char* spec = std::getenv("CUDL_TEST_DIST_FAULT");
  if (!spec) return;
  int rank = -1;
  long long at = -1;
  char mode[8] = {};
  if (std::sscanf(spec, "%d:%lld:%7s", &rank, &at, mode) != 3 || rank != comm.rank() || at != step) return;
  const std::string m = mode;
  std::fprintf(stderr, "cudl: test fault: rank %d %s at step %lld\n", rank, m.c_str(), at);
  std::fflush(stderr);
  // _Exit: no destructors, no MPI_Finalize: the peers see what they would see after a crash.
  if (m == "exit") std::_Exit(3);
  if (m == "hang")
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

}  // namespace cudl
