// Loading a weights file for eval and classify: what the model does not use is reported.
#include <fmt/format.h>

#include <cstdio>

#include "cudl/models/checkpoint/checkpoint.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

void add_strict_option(CLI::App* cmd, bool& strict) {
  cmd->add_flag("--strict", strict,
                "Refuse a weights file holding tensors the model does not use (default: list them as a warning)");
}

void load_weights_reporting_unused(const std::string& path, Context& ctx, Sequential& model, bool strict) {
  const std::vector<std::string> unused = load_weights(path, ctx, model, /*allow_unused=*/!strict);
  if (unused.empty()) return;
  constexpr std::size_t kListed = 5;
  std::string list;
  for (std::size_t i = 0; i < unused.size() && i < kListed; ++i) list += (i ? ", " : "") + unused[i];
  if (unused.size() > kListed) list += fmt::format(" and {} more", unused.size() - kListed);
  fmt::print(stderr,
             "cudl: warning: '{}' holds {} tensor{} the model does not use: {} (--strict makes this an error)\n", path,
             unused.size(), unused.size() == 1 ? "" : "s", list);
}

}  // namespace cudl::cli
