#pragma once
// Subcommands of the `cudl` CLI. Each registers its options on the app and returns the
// callback that runs it; main() turns any exception into one line on stderr and exit code 1.
#include <CLI/CLI.hpp>
#include <string>

namespace cudl {
class Context;
class Sequential;
}  // namespace cudl

namespace cudl::cli {

void add_info_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_summary_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_style_command(CLI::App& app);
void add_classify_command(CLI::App& app);
void add_predict_command(CLI::App& app);

// --deterministic true|false (default true): cuDNN's deterministic algorithms only, so runs repeat
// bit for bit (Context::set_deterministic); false lets it pick the fastest. No effect on the CPU.
void add_deterministic_option(CLI::App* cmd, bool& deterministic);

// --strict: tensors in the weights file that the model does not use are an error, not a warning.
void add_strict_option(CLI::App* cmd, bool& strict);
// load_weights, then one warning line on stderr listing the file's tensors the model did not use
// (a typo'd or wrong-model file loads "fine" otherwise); with `strict` they are an error instead.
void load_weights_reporting_unused(const std::string& path, Context& ctx, Sequential& model, bool strict);

}  // namespace cudl::cli
