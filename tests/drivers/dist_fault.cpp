// A test driver, built with the tests and never installed:
//   cudl_test_dist_fault RANK:STEP:exit|hang CUDL-ARGUMENTS...
// runs the cudl command line on CUDL-ARGUMENTS with a step fault hook installed
// (engine/distributed.hpp): rank RANK exits at once (without MPI_Finalize, as a crash would) or
// hangs, just before the gradient all-reduce of global step STEP (1-based). tests/test_distributed.cpp
// runs it under mpirun to check that the other ranks stop within --dist-timeout. The `cudl`
// binary itself has no way to inject a fault.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "cudl/engine/distributed.hpp"
#include "tools/cudl/run.hpp"
#include "tools/cudl/threads.hpp"

namespace {

int fault_rank = -1;
long long fault_step = -1;
std::string fault_mode;

void inject(const cudl::Communicator& comm, std::int64_t step) {
  if (comm.rank() != fault_rank || step != fault_step) return;
  std::fprintf(stderr, "cudl: test fault: rank %d %s at step %lld\n", fault_rank, fault_mode.c_str(), fault_step);
  std::fflush(stderr);
  // _Exit: no destructors, no MPI_Finalize: the peers see what they would see after a crash.
  if (fault_mode == "exit") std::_Exit(3);
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

}  // namespace

int main(int argc, char** argv) {
  // Before reading the arguments: the CLI would re-execute the program with argv as it is then.
  cudl::cli::reexec_with_bounded_openmp_spinning(argv);
  char mode[8] = {};
  if (argc < 2 || std::sscanf(argv[1], "%d:%lld:%7s", &fault_rank, &fault_step, mode) != 3 ||
      (std::string(mode) != "exit" && std::string(mode) != "hang")) {
    std::fprintf(stderr, "cudl_test_dist_fault: expected RANK:STEP:exit|hang, then the cudl arguments\n");
    return 1;
  }
  fault_mode = mode;
  cudl::set_step_fault_hook_for_test(&inject);
  argv[1] = argv[0];  // the CLI's own argv: the program, then its arguments
  return cudl::cli::run(argc - 1, argv + 1);
}
