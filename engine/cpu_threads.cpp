#include "cudl/engine/cpu_threads.hpp"

#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "cudl/engine/error.hpp"

namespace cudl {

namespace {

// The machine's busy time (user, nice, system, irq, softirq, steal) in clock ticks; 0 without /proc/stat.
std::uint64_t machine_busy_ticks() {
  std::ifstream stat("/proc/stat");
  std::string line;
  if (!std::getline(stat, line) || !line.starts_with("cpu ")) return 0;
  std::istringstream fields(line.substr(4));
  std::uint64_t v[8] = {};
  for (auto& x : v) fields >> x;
  // user nice system idle iowait irq softirq steal
  return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

double own_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

void set_cpu_threads(int threads) {
  CUDL_CHECK(threads >= 1, "set_cpu_threads: {} must be at least 1", threads);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int cpu_threads() { return omp_get_max_threads(); }

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : 1;
}

OtherLoadMeter::OtherLoadMeter() { restart(); }

void OtherLoadMeter::restart() {
  machine_busy_ticks_ = machine_busy_ticks();
  own_cpu_seconds_ = own_cpu_seconds();
  start_ = std::chrono::steady_clock::now();
}

double OtherLoadMeter::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double OtherLoadMeter::busy_cores() const {
  const double wall = seconds();
  const std::uint64_t now = machine_busy_ticks();
  if (wall <= 0 || now == 0 || now < machine_busy_ticks_) return 0;
  const double machine = static_cast<double>(now - machine_busy_ticks_) / static_cast<double>(sysconf(_SC_CLK_TCK));
  const double own = own_cpu_seconds() - own_cpu_seconds_;
  return std::max(0.0, (machine - own) / wall);
}

int threads_for_load(int cpus, double busy_cores, int max_threads) {
  const auto idle = static_cast<int>(std::lround(static_cast<double>(cpus) - busy_cores));
  return std::clamp(idle, 1, std::max(1, max_threads));
}

int threads_for_current_load(int max_threads, std::chrono::milliseconds window) {
  const int cpus = available_cpus();
  if (cpus == 1 || max_threads <= 1) return std::clamp(max_threads, 1, cpus);
  const OtherLoadMeter others;
  std::this_thread::sleep_for(window);
  return threads_for_load(cpus, others.busy_cores(), max_threads);
}

CpuThreadGovernor::CpuThreadGovernor(int max_threads, std::chrono::milliseconds interval)
    : max_threads_(std::max(1, max_threads)), interval_(interval) {}

int CpuThreadGovernor::tick() {
  if (meter_.seconds() * 1000.0 < static_cast<double>(interval_.count())) return cpu_threads();
  const int team = threads_for_load(available_cpus(), meter_.busy_cores(), max_threads_);
  if (team != cpu_threads()) set_cpu_threads(team);
  meter_.restart();
  return team;
}

}  // namespace cudl
