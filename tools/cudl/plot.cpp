// `cudl plot METRICS.json [-o curves.png]`: the loss and accuracy curves of a run, from the file
// `cudl train --metrics-json` writes (the same picture `cudl train --plot` redraws every epoch).
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "cudl/engine/io/files.hpp"
#include "cudl/engine/io/json.hpp"
#include "cudl/models/train/curves.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

void add_plot_command(CLI::App& app) {
  struct Args {
    std::string metrics, output;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "plot", "Draw a run's loss and accuracy per epoch (train/val/test), or a bench run's chart, into a PNG");
  cmd->add_option("metrics", a->metrics,
                  "The metrics JSON of a run (cudl train --metrics-json) or a bench run's (cudl bench --json)")
      ->required()
      ->check(input_file());
  cmd->add_option("-o,--output", a->output, "The PNG to write (default: METRICS with .png for .json)");
  cmd->callback([a] {
    std::string output = a->output;
    if (output.empty()) output = std::filesystem::path(a->metrics).replace_extension(".png").string();
    check_outputs_spare_inputs({{"metrics", a->metrics}}, {{"--output", output}});
    check_writable_output("--output", output);
    check_image_output("--output", output);
    const std::vector<std::uint8_t> bytes = io::read_file(a->metrics, "plot");
    const nlohmann::json metrics =
        io::parse_json(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                       fmt::format("plot: '{}'", a->metrics));
    if (is_bench_document(metrics))
      write_image(output, draw_bench_chart(metrics, a->metrics));  // `cudl bench --json` output
    else
      write_training_curves(metrics, a->metrics, output);
    fmt::print("wrote {}\n", output);
  });
}

}  // namespace cudl::cli
