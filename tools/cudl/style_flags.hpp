#pragma once
// `cudl style`'s flags from the library's typed options (models/style/style_options.hpp): validators
// built from the library's bounds and enum parsers, and the flag that spells a field, so the CLI
// and the library share one range and one list of names per option.
#include <CLI/CLI.hpp>
#include <string>

#include "cudl/models/style/style_options.hpp"
#include "tools/cudl/checks.hpp"

namespace cudl::cli {

// The flag of an option the library names by its field: tile_overlap -> --tile-overlap.
std::string flag_name(StyleField f);

// The CLI's bounds of a numeric field: the library's (a float field's upper end is the float
// range, which finite_float enforces itself).
Bounds cli_bounds(StyleField f, bool as_float = false);

// A validator from the library's bounds of `f`, run while the command line is parsed, so a bad
// number fails with the same range the library would refuse.
CLI::Validator bounded(StyleField f, bool as_float = false);
// The same for each item of a comma-separated list (--scales, --style-blend-weights).
CLI::Validator bounded_list(StyleField f);

// An enum option: the library's parse decides (one list of names).
template <typename Parse>
CLI::Validator one_of(Parse parse) {
  return CLI::Validator(
      [parse](std::string& text) {
        try {
          (void)parse(text);
          return std::string();
        } catch (const StyleOptionError& e) {
          return e.problem();
        }
      },
      "");
}

}  // namespace cudl::cli
