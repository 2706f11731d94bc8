#pragma once
// Checks shared by the subcommands, so every bad value is refused before any work with one line
// that names the option (DESIGN: options are typed in the library, spelled in the CLI).
//
// - Numbers: CLI11 validators, run while the command line is parsed (before any callback). Each
//   takes the text, refuses what is not a finite number of the option's type within its bounds,
//   and rewrites the text to a canonical form, so CLI11's own conversion then reads exactly the
//   value that was checked (it reads "010" as octal, "nan" as NaN, "-1" into an unsigned as 2^64-1).
//   Add them with ->transform(), which keeps the rewrite (->check() would discard it).
//   CLI11 prints the option's name in front: "--lr: nan must be a finite number > 0".
// - Lists ("256,512", "1,32,64") and seeds: the same checks per item, as validators and as
//   functions that throw cudl::Error naming the option.
// - Paths: an output path is checked writable, and an input file readable, before any work.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace cudl::cli {

// Bounds of a real number: [lo, hi], with either end open.
struct Bounds {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
};
Bounds at_least(double lo);            // [lo, inf)
Bounds greater_than(double lo);        // (lo, inf)
Bounds between(double lo, double hi);  // [lo, hi]

// A finite float (or double) within `b`; a float must also fit a float (|x| <= 3.4e38).
CLI::Validator finite_float(Bounds b);
CLI::Validator finite_double(Bounds b);
// A whole number in [lo, hi] (decimal digits, an optional leading '-').
CLI::Validator whole_number(std::int64_t lo, std::int64_t hi);
// A seed: a whole number in [0, 2^64 - 1].
CLI::Validator seed_number();
// An enum option bound straight into the library's typed field: the text must be one of the
// names (name(value), the library's spelling, refused as CLI11's IsMember does: "x not in
// {a,b}") and is rewritten to the value's number, which CLI11 then reads into the enum.
template <class Enum>
CLI::Validator named_enum(std::initializer_list<Enum> values, std::string (*name)(Enum)) {
  std::vector<std::pair<std::string, Enum>> names;
  for (Enum v : values) names.emplace_back(name(v), v);
  return CLI::Validator(
      [names](std::string& text) -> std::string {
        std::string listed;
        for (const auto& [n, v] : names) {
          if (n == text) {
            text = std::to_string(static_cast<long long>(v));
            return {};
          }
          listed += (listed.empty() ? "" : ",") + n;
        }
        return text + " not in {" + listed + "}";
      },
      "");
}

// Comma-separated whole numbers in [lo, hi] (at least one, no empty item).
CLI::Validator whole_number_list(std::int64_t lo, std::int64_t hi);
// Comma-separated finite numbers within `b`.
CLI::Validator number_list(Bounds b);
// --device: cpu, cuda, cuda:N or auto (the syntax; whether the GPU exists is the Context's to say).
// With `list`, comma-separated names (bench).
CLI::Validator device_name(bool list = false);
// A path to an existing regular file that can be opened (not a folder, a device or a pipe).
CLI::Validator input_file();
// For --weights: "random:SEED" needs a seed; anything else is an input_file().
CLI::Validator weights_source();

// The same checks as functions: a cudl::Error "--scales: '1e10' must be ..." on failure.
std::vector<std::int64_t> parse_whole_number_list(const std::string& option, const std::string& csv, std::int64_t lo,
                                                  std::int64_t hi);
std::vector<double> parse_number_list(const std::string& option, const std::string& csv, Bounds b);
std::uint64_t parse_seed(const std::string& what, const std::string& text);

// The class names of a --labels file: exactly `classes` lines (a last newline optional; CRLF read as
// LF), each a name of 1 to kMaxLabelBytes bytes of UTF-8 without control characters. Read line by
// line, stopping at the first line too long or too many, so a huge file costs no more than that.
// Errors name `option`, the file and the line.
constexpr std::size_t kMaxLabelBytes = 1024;
// `owner` says whose classes they are in messages ("the data", "the model").
std::vector<std::string> read_label_file(const std::string& option, const std::string& path, std::size_t classes,
                                         const std::string& owner);

// Throws a cudl::Error naming `option` when `path` cannot be written: its folder is missing or
// not writable (a temporary file is created there and removed), or the path is a folder. An empty
// path (the option not given) passes. Called before any work, so a long run cannot fail at its end.
void check_writable_output(const std::string& option, const std::string& path);
// Throws naming `option` when a non-empty `path` does not end in .png, .jpg or .jpeg (what
// write_image can encode), before any work rather than when the first image is written.
void check_image_output(const std::string& option, const std::string& path);
// Throws naming `option` when `path` is not an existing regular file we can open.
void check_input_file(const std::string& option, const std::string& path);

}  // namespace cudl::cli

namespace cudl::cli {

// A path a command reads or writes, for check_outputs_spare_inputs. `folder`: a folder whose
// direct entries are used (style's --content-dir, bench --pipeline); `tree`: a folder whose whole
// tree is used (a dataset, predict's image folder). An empty path (option not given) is skipped.
struct PathUse {
  enum class Kind { file, folder, tree };
  std::string option;
  std::string path;
  Kind kind = Kind::file;
};

// Refuses, before any work, a command whose outputs would overwrite one of its inputs or each
// other: every output is compared with every input and every other output by resolved path
// (symlinks, "D/./", relative spellings) and by file identity (st_dev, st_ino: hard links, bind
// mounts). An output file may not be an input file, nor lie in an input folder (directly) or
// anywhere under an input tree; an output folder may not be an input folder or lie in an input
// tree. Pairs in `allowed` ({"--save", "--resume"}: the run continues in place) may coincide.
void check_outputs_spare_inputs(const std::vector<PathUse>& inputs, const std::vector<PathUse>& outputs,
                                const std::vector<std::pair<std::string, std::string>>& allowed = {});

}  // namespace cudl::cli
