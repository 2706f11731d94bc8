// Issue 23 item 2: host threads on a shared machine. --threads on every command and in the API,
// bounded OpenMP spinning by default (GOMP_SPINCOUNT; passive waiting before), a team sized to the cores other
// processes leave idle, and timings flagged when other processes were busy.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "cudl/engine/cpu_threads.hpp"
#include "cudl/engine/error.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

int run(TempDir& dir, const std::string& env_and_args) {
  const std::string cmd = fmt::format("{} > '{}' 2> '{}'", env_and_args, dir.file("out"), dir.file("err"));
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Processes that each spin one core until stopped.
struct Spinners {
  std::vector<pid_t> pids;
  explicit Spinners(int n) {
    for (int i = 0; i < n; ++i) {
      const pid_t pid = fork();
      if (pid == 0) {
        volatile unsigned long x = 0;
        for (;;) x = x + 1;
      }
      pids.push_back(pid);
    }
  }
  // Stops them; returns the CPU seconds they used.
  double stop() {
    double seconds = 0;
    for (pid_t pid : pids) {
      kill(pid, SIGKILL);
      int status = 0;
      rusage u{};
      wait4(pid, &status, 0, &u);
      seconds += static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
                 1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
    }
    pids.clear();
    return seconds;
  }
  ~Spinners() { (void)stop(); }
};

}  // namespace

TEST(Threads, TeamSizeFollowsTheIdleCores) {
  EXPECT_EQ(threads_for_load(2, 0.0, 2), 2);  // quiet: every core
  EXPECT_EQ(threads_for_load(2, 2.0, 2), 1);  // two busy competitors: one thread, never zero
  EXPECT_EQ(threads_for_load(2, 0.6, 2), 1);
  EXPECT_EQ(threads_for_load(4, 1.4, 4), 3);
  EXPECT_EQ(threads_for_load(16, 0.0, 8), 8);  // never above the cap
  EXPECT_EQ(threads_for_load(2, 7.0, 2), 1);
}

TEST(Threads, SetCpuThreadsSetsTheTeamAndRefusesZero) {
  const int before = cpu_threads();
  set_cpu_threads(1);
  EXPECT_EQ(cpu_threads(), 1);
  set_cpu_threads(3);
  EXPECT_EQ(cpu_threads(), 3);
  cudl::testing::expect_error([] { set_cpu_threads(0); }, {"set_cpu_threads", "0 must be at least 1"});
  set_cpu_threads(before);
}

TEST(Threads, OtherLoadMeterSeesAnotherProcessSpinning) {
  OtherLoadMeter meter;
  Spinners spin(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  const double busy = meter.busy_cores(), wall = meter.seconds();
  const double child = spin.stop();
  std::printf("spinner: %.2f CPU s in %.2f s; meter: %.2f busy cores\n", child, wall, busy);
  // Everything the child ran counts as other processes' time (ticks are 10 ms).
  EXPECT_GE(busy * wall, 0.8 * child - 0.05);
  EXPECT_GT(child, 0.05) << "the spinner never ran";
}

TEST(Threads, CurrentLoadLeavesTheCoresOthersUse) {
  const int cpus = available_cpus();
  if (cpus < 2) GTEST_SKIP() << "one CPU: there is no team size to choose";
  // As many spinning processes as cores: whatever else runs, at most one thread is left idle.
  Spinners spin(cpus);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const int busy_team = threads_for_current_load(cpus, std::chrono::milliseconds(300));
  (void)spin.stop();
  std::printf("team beside %d spinners on %d CPUs: %d\n", cpus, cpus, busy_team);
  EXPECT_LE(busy_team, 1);
  EXPECT_EQ(threads_for_current_load(1), 1);  // one thread asked: no measuring
}

TEST(ThreadsCli, ThreadsOnEveryCommandAndBoundedSpinningByDefault) {
  TempDir dir;
  const std::string cli = fmt::format("'{}'", cudl::testing::cli_path());
  ASSERT_EQ(run(dir, "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u KMP_BLOCKTIME " + cli + " info --threads 1"), 0)
      << slurp(dir.file("err"));
  EXPECT_TRUE(contains(slurp(dir.file("out")), "CPU threads: 1 of")) << slurp(dir.file("out"));
  EXPECT_TRUE(contains(slurp(dir.file("out")), "OpenMP waiting: spin GOMP_SPINCOUNT=30000, then sleep"))
      << slurp(dir.file("out"));
  ASSERT_EQ(run(dir, "OMP_WAIT_POLICY=active " + cli + " info"), 0);
  EXPECT_TRUE(contains(slurp(dir.file("out")), "OpenMP waiting: active")) << slurp(dir.file("out"));
  EXPECT_TRUE(contains(slurp(dir.file("out")), "--threads auto")) << slurp(dir.file("out"));

  for (const char* command : {"info", "summary", "train", "eval", "plot", "classify", "predict", "style", "bench"}) {
    ASSERT_EQ(run(dir, fmt::format("{} {} --help", cli, command)), 0) << command;
    EXPECT_TRUE(contains(slurp(dir.file("out")), "--threads")) << command;
  }
  EXPECT_EQ(run(dir, cli + " info --threads 0"), 1);
  EXPECT_TRUE(contains(slurp(dir.file("err")), "--threads: '0' must be auto or a whole number in [1, 1024]"))
      << slurp(dir.file("err"));
  EXPECT_EQ(run(dir, cli + " info --threads lots"), 1);
  EXPECT_EQ(run(dir, cli + " info --threads 2,3"), 1);
}

TEST(ThreadsCli, BenchFlagsTimingsTakenWhileOtherProcessesSpin) {
  TempDir dir;
  Spinners spin(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(run(dir, fmt::format("'{}' bench --device cpu --sizes small --ops relu_fwd,gemm --repeat 3 --json '{}'",
                                 cudl::testing::cli_path(), dir.file("b.json"))),
            0)
      << slurp(dir.file("err"));
  (void)spin.stop();
  EXPECT_TRUE(contains(slurp(dir.file("out")), "under load: other processes kept")) << slurp(dir.file("out"));
  const auto doc = nlohmann::json::parse(slurp(dir.file("b.json")));
  EXPECT_TRUE(doc.at("under_load").get<bool>());
  EXPECT_GT(doc.at("other_load_cores").get<double>(), 0.25);
  EXPECT_GE(doc.at("threads").get<int>(), 1);
}
