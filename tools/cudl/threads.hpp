#pragma once
// --threads N|auto on every command (engine/cpu_threads.hpp says why a shared machine needs it):
//   N      a fixed team of N host threads for the CPU backend (OpenMP and OpenBLAS)
//   auto   (default) the cores other processes leave idle: the 1-minute load average to start
//          with, then, in training, re-measured every 2 s (their CPU time, not ours)
// and the OpenMP wait policy: a bounded spin, then sleep (GOMP_SPINCOUNT=kOpenMpSpinCount) unless
// the environment says otherwise (OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME set).
#include <CLI/CLI.hpp>
#include <string>

namespace cudl::cli {

// How long a waiting OpenMP thread spins before it sleeps (libgomp iterations of a pause loop). A
// network's forward is a chain of short parallel regions with serial work between them (small
// reorders, layer bookkeeping): a thread that sleeps at once (OMP_WAIT_POLICY=passive, issue 23's
// choice) is woken by a system call for each, which cost ResNet-50 batch-1 inference 100 ms
// against 78 ms spinning (2-core VM, 2 threads). libgomp's own default (300,000) spins for
// milliseconds and took the CPU from busy neighbours (engine/cpu_threads.hpp); 30,000 kept the
// spinning speed there (78 ms; 3,000: 87 ms) while a waiter gives up its core after about 0.4 ms
// of spinning (libgomp's default: 3.8 ms; measured on that VM with a barrier held 50 ms). Under load, --threads auto
// already shrinks the team to the idle cores, so few threads wait for a member that is not running.
inline constexpr const char* kOpenMpSpinCount = "30000";

// Before anything else in main(): when the environment sets no OpenMP wait policy, sets
// GOMP_SPINCOUNT=kOpenMpSpinCount and re-executes the program (the OpenMP runtime reads it only
// when it is loaded). Returns only when no re-execution was needed or it failed.
void reexec_with_bounded_openmp_spinning(char** argv);

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
