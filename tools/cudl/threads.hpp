#pragma once
// --threads N|auto on every command (engine/cpu_threads.hpp says why a shared machine needs it):
//   N      a fixed team of N host threads for the CPU backend (OpenMP and OpenBLAS)
//   auto   (default) the cores other processes leave idle: the 1-minute load average to start
//          with, then, in training, re-measured every 2 s (their CPU time, not ours)
// and the OpenMP wait policy: passive (waiting threads sleep) unless the environment says
// otherwise (OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME set).
#include <CLI/CLI.hpp>
#include <string>

namespace cudl::cli {

// Before anything else in main(): when the environment sets no OpenMP wait policy, sets
// OMP_WAIT_POLICY=passive and re-executes the program (the OpenMP runtime reads it only when it
// is loaded). Returns only when no re-execution was needed or it failed.
void reexec_with_passive_openmp(char** argv);

// Adds --threads to every subcommand of `app`, applied once the command line is parsed and
// before the command runs.
void add_threads_option(CLI::App& app);

// Training calls this between steps: under --threads auto, the team follows other processes' load.
void adapt_threads();

// Under --threads auto, a bench must not change its team while timing: the team stays as
// add_threads_option set it.
bool threads_auto();

// How waiting OpenMP threads behave, from the environment the runtime read: "passive (sleep)",
// "active (spin)", or the runtime's default with the variable that set it.
std::string openmp_wait_policy();

}  // namespace cudl::cli
