#pragma once
// How many host threads the CPU backend uses (its OpenMP loops, oneDNN's OpenMP team and
// OpenBLAS's threads), and how the team behaves on a machine it shares.
//
// The team is a property of the process, not of a Context: OpenMP and OpenBLAS keep one per
// process, so a per-Context setting would only pretend to be separate.
//
// On a shared machine two things go wrong with OpenMP's defaults (measured on a 2-core VM under a
// load of 4-5: mnist_cnn trained at 319 img/s with 2 threads, 1518 with 1):
// - Waiting threads spin (libgomp: 300,000 iterations per wait) and take CPU from the thread that
//   holds the work; a shorter spin (GOMP_SPINCOUNT) makes them sleep sooner, and sleeping at once
//   (passive) costs a wake-up system call per parallel region (tools/cudl/threads.hpp weighs the
//   two). libgomp reads it once, when it is loaded, so it cannot be set from inside a running
//   program: the `cudl` CLI sets it and re-executes itself when the environment does not say
//   (tools/cudl/run.cpp); a program that links the library sets it in its own environment.
// - A team as large as the machine, among busy processes, waits at every barrier for a member
//   that is not running. CpuThreadGovernor sizes the team to the cores other processes leave idle.
#include <chrono>
#include <cstdint>

namespace cudl {

// The team size for the CPU backend from now on (1 or more; OpenMP and OpenBLAS both). Results do
// not depend on it (the CPU kernels reduce in a fixed order whatever the team).
void set_cpu_threads(int threads);
// The current team size.
int cpu_threads();
// The hardware threads the process may run on (its affinity mask).
int available_cpus();

// CPU time used by other processes while it ran: the machine's busy time (/proc/stat) minus this
// process's own (getrusage), in cores, averaged over the interval. Not available (always 0) where
// /proc/stat is missing.
class OtherLoadMeter {
 public:
  OtherLoadMeter();
  // Other processes' busy cores since construction or the last restart().
  double busy_cores() const;
  double seconds() const;
  void restart();

 private:
  std::uint64_t machine_busy_ticks_ = 0;
  double own_cpu_seconds_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// Keeps the team at the cores that other processes leave idle: every `interval` (checked by
// tick(), called between steps) it measures their load since the last look and sets the team to
// clamp(round(cpus - busy), 1, max_threads). Our own threads are not counted, so a quiet machine
// keeps the whole team. Changing the team changes no result (see set_cpu_threads).
class CpuThreadGovernor {
 public:
  explicit CpuThreadGovernor(int max_threads, std::chrono::milliseconds interval = std::chrono::milliseconds(2000));
  // Returns the team size (changed or not).
  int tick();

 private:
  int max_threads_;
  std::chrono::milliseconds interval_;
  OtherLoadMeter meter_;
};

// The team size for a given load: clamp(round(cpus - busy_cores), 1, max_threads).
int threads_for_load(int cpus, double busy_cores, int max_threads);

// The team size for the machine as it is now: other processes' busy cores, measured while this
// thread sleeps for `window` (so our own work does not count, unlike the load average, which
// remembers this process's previous runs for minutes), given to threads_for_load. Returns at once
// with max_threads capped by the machine when there is one CPU or one thread to give.
int threads_for_current_load(int max_threads, std::chrono::milliseconds window = std::chrono::milliseconds(100));

}  // namespace cudl
