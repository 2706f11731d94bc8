#pragma once
// Small text helpers shared by the option parsers of the library and the CLI.
#include <string>
#include <string_view>
#include <vector>

namespace cudl {

// The items of a `separator`-separated list, exactly as written: no trimming, and empty items kept
// ("a,,b" -> "a", "", "b"; "a," -> "a", ""), so that each caller decides whether an empty item is
// an error, skipped, or a value. An empty text has no items.
std::vector<std::string> split_list(std::string_view text, char separator = ',');

// `text` without leading and trailing spaces and tabs.
std::string trim_blanks(std::string_view text);

}  // namespace cudl
