// `cudl style`'s validators and flag names from the library's option descriptions.
#include "tools/cudl/style_flags.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace cudl::cli {

// The flag of an option the library names by its field: tile_overlap -> --tile-overlap.
std::string flag_name(StyleField f) {
  if (f == StyleField::model) return "--model-type";
  std::string name = style_field_name(f);
  std::replace(name.begin(), name.end(), '_', '-');
  return "--" + name;
}

// The CLI's bounds of a numeric field: the library's (a float field's upper end is the float
// range, which finite_float enforces itself).
Bounds cli_bounds(StyleField f, bool as_float) {
  const StyleBounds b = *style_bounds(f);
  Bounds out;
  out.lo = b.lo;
  out.lo_open = b.lo_open;
  if (!(as_float && b.hi >= std::numeric_limits<float>::max())) out.hi = b.hi;
  return out;
}

// A validator from the library's bounds of `f`, run while the command line is parsed, so a bad
// number fails with the same range the library would refuse.
CLI::Validator bounded(StyleField f, bool as_float) {
  const StyleBounds b = *style_bounds(f);
  if (!b.whole) return as_float ? finite_float(cli_bounds(f, true)) : finite_double(cli_bounds(f));
  CLI::Validator number =
      whole_number(b.zero_also ? 0 : static_cast<std::int64_t>(b.lo), static_cast<std::int64_t>(b.hi));
  if (!b.zero_also) return number;
  // 0 or [lo, hi] (--tile): the whole-number check first, then the gap.
  return number & CLI::Validator(
                      [f](std::string& text) {
                        const std::string problem = style_bounds_problem(f, std::stod(text));
                        return problem.empty() ? std::string() : text + " " + problem.substr(0, problem.rfind(", got"));
                      },
                      "");
}

CLI::Validator bounded_list(StyleField f) {
  const StyleBounds b = *style_bounds(f);
  return b.whole ? whole_number_list(static_cast<std::int64_t>(b.lo), static_cast<std::int64_t>(b.hi))
                 : number_list(cli_bounds(f));
}

}  // namespace cudl::cli
