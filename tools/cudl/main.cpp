#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "engine/device.hpp"
#include "tools/cudl/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"cudl: a lean CUDA deep-learning engine (VGG training, neural style transfer, kernel benchmarks)"};
  app.set_version_flag("--version", std::string("cudl ") + CUDL_VERSION);
  app.require_subcommand(1);
  cudl::cli::add_info_command(app);
  cudl::cli::add_summary_command(app);
  cudl::cli::add_train_command(app);
  cudl::cli::add_eval_command(app);
  cudl::cli::add_classify_command(app);
  cudl::cli::add_style_command(app);
  cudl::cli::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 1, like every other error.
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "cudl: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
