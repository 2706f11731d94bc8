#include "tools/cudl/run.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "cudl/engine/device.hpp"
#include "cudl/engine/error.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/threads.hpp"

namespace {

// Every error is one line on stderr: a message with a newline in it would read as two.
std::string one_line(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

// "cudl train", or "cudl" before a subcommand was recognised.
std::string command_name(const CLI::App& app) {
  std::string name = "cudl";
  for (const CLI::App* sub : app.get_subcommands()) name += " " + sub->get_name();
  return name;
}

std::string subcommand_names(const CLI::App& app) {
  std::string names;
  for (const CLI::App* sub : app.get_subcommands({})) names += (names.empty() ? "" : ", ") + sub->get_name();
  return names;
}

bool is_subcommand(const CLI::App& app, const std::string& name) {
  for (const CLI::App* sub : app.get_subcommands({}))
    if (sub->check_name(name)) return true;
  return false;
}

}  // namespace

int cudl::cli::run(int argc, char** argv) {
  cudl::cli::reexec_with_bounded_openmp_spinning(
      argv);  // OpenMP waits: a bounded spin, then sleep (tools/cudl/threads.hpp)
  // One line at a time even into a file or a pipe: a run stopped by SIGINT or SIGTERM keeps every
  // line it printed (block buffering lost the whole epoch log).
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  CLI::App app{"cudl: a lean CUDA deep-learning engine (VGG training, neural style transfer, kernel benchmarks)"};
  app.set_version_flag("--version", std::string("cudl ") + CUDL_VERSION);
  app.require_subcommand(1);
  cudl::cli::add_info_command(app);
  cudl::cli::add_summary_command(app);
  cudl::cli::add_train_command(app);
  cudl::cli::add_eval_command(app);
  cudl::cli::add_plot_command(app);
  cudl::cli::add_classify_command(app);
  cudl::cli::add_predict_command(app);
  cudl::cli::add_convert_command(app);
  cudl::cli::add_style_command(app);
  cudl::cli::add_bench_command(app);
  cudl::cli::add_threads_option(app);  // on every command above
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print and exit 0. A usage error is one line and exit 1, like every
    // other error (CLI11's own codes, 105 to 116, and its two-line message would differ per kind).
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    std::string message = one_line(e.what());
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-' && !is_subcommand(app, argv[1]))
      message = fmt::format("unknown command '{}': expected one of {}", argv[1], subcommand_names(app));
    fmt::print(stderr, "cudl: error: {} (see {} --help)\n", message, command_name(app));
    return 1;
  } catch (const cudl::Error& e) {
    fmt::print(stderr, "cudl: error: {}\n", one_line(e.what()));
    return 1;
  } catch (const std::bad_alloc&) {
    // Our errors name the file or option; a failed host allocation has no such context left.
    fmt::print(stderr, "cudl: error: {} ran out of host memory (std::bad_alloc)\n", command_name(app));
    return 1;
  } catch (const std::exception& e) {
    // A library exception that escaped the checks (a bug to report): say where, not only
    // "stoull" or "basic_string".
    fmt::print(stderr, "cudl: error: {} failed: {}\n", command_name(app), one_line(e.what()));
    return 1;
  }
  return 0;
}
