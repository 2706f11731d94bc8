#include <fmt/format.h>

#include "models/zoo.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

namespace {
// "[N,32,26,26]": the batch dimension is whatever the caller feeds.
std::string batch_shape(const Shape& s) {
  std::string out = "[N";
  for (int i = 1; i < s.rank(); ++i) out += fmt::format(",{}", s[i]);
  return out + "]";
}

std::string thousands(std::int64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}
}  // namespace

void add_summary_command(CLI::App& app) {
  auto name = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("summary", "Print a model's layers, output shapes and parameter counts");
  cmd->add_option("--model", *name, "Model name (see the list in --help of train)")->required();
  cmd->callback([name] {
    const ModelSpec& spec = model_spec(*name);
    Sequential model = make_model(*name);
    const Shape input{1, spec.input[0], spec.input[1], spec.input[2]};
    auto rows = model.summary(input);
    const std::string rule(100, '_'), double_rule(100, '=');
    fmt::print("Model: \"{}\"  ({})\n{}\n", spec.name, spec.description, rule);
    fmt::print("{:<16} {:<48} {:<20} {:>12}\n{}\n", "Layer", "Type", "Output Shape", "Param #", double_rule);
    fmt::print("{:<16} {:<48} {:<20} {:>12}\n", "input", "", batch_shape(input), 0);
    for (const auto& r : rows)
      fmt::print("{:<16} {:<48} {:<20} {:>12}\n", r.name, r.description, batch_shape(r.output_shape),
                 thousands(r.params));
    fmt::print("{}\nTotal params: {}\n", double_rule, thousands(model.parameter_count()));
  });
}

}  // namespace cudl::cli
