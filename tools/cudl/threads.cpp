#include "tools/cudl/threads.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <memory>

#include "cudl/engine/cpu_threads.hpp"
#include "tools/cudl/checks.hpp"

namespace cudl::cli {

namespace {

struct ThreadSetting {
  std::string text = "auto";
  std::unique_ptr<CpuThreadGovernor> governor;  // --threads auto only
};
ThreadSetting& setting() {
  static ThreadSetting s;
  return s;
}

void apply_threads() {
  ThreadSetting& s = setting();
  const int cpus = available_cpus();
  if (s.text != "auto") {
    set_cpu_threads(std::stoi(s.text));
    return;
  }
  set_cpu_threads(threads_for_current_load(cpus));
  s.governor = std::make_unique<CpuThreadGovernor>(cpus);
}

}  // namespace

void reexec_with_bounded_openmp_spinning(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT") || std::getenv("KMP_BLOCKTIME")) return;
  ::setenv("GOMP_SPINCOUNT", kOpenMpSpinCount, 1);
  ::execv("/proc/self/exe", argv);
  // No /proc (or exec refused): carry on with the runtime's default policy.
}

void add_threads_option(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands({})) {
    sub->add_option("--threads", setting().text,
                    "Host threads for the CPU backend: N, or auto (the cores other processes leave idle, followed "
                    "while training)")
        ->check(CLI::Validator(
            [](std::string& text) -> std::string {
              if (text == "auto") return {};
              try {
                (void)parse_whole_number_list("--threads", text, 1, 1024);
              } catch (const std::exception&) {
                return fmt::format("'{}' must be auto or a whole number in [1, 1024]", text);
              }
              if (text.find(',') != std::string::npos) return fmt::format("'{}' must be one number", text);
              return {};
            },
            "N|auto"))
        ->capture_default_str();
  }
  // The main app's parse-complete callback runs after every option is read and before the
  // subcommand's own callback.
  app.parse_complete_callback(apply_threads);
}

void adapt_threads() {
  if (setting().governor) (void)setting().governor->tick();
}

bool threads_auto() { return setting().text == "auto"; }

std::string openmp_wait_policy() {
  if (const char* p = std::getenv("OMP_WAIT_POLICY")) {
    std::string v = p;
    for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (v == "passive") return "passive (waiting threads sleep)";
    if (v == "active") return "active (waiting threads spin)";
    return fmt::format("OMP_WAIT_POLICY={} (not passive or active: the runtime's default)", p);
  }
  if (const char* c = std::getenv("GOMP_SPINCOUNT")) return fmt::format("spin GOMP_SPINCOUNT={}, then sleep", c);
  if (const char* b = std::getenv("KMP_BLOCKTIME")) return fmt::format("spin KMP_BLOCKTIME={} ms, then sleep", b);
  return "the runtime's default (spin, then sleep)";
}

}  // namespace cudl::cli
