#pragma once
// JSON from files a user hands us (model files, metrics, bench results, checkpoint metadata).
// nlohmann's parser takes any nesting and lets the last of two equal keys win, and its dump() and
// destructor recurse: a 160 KB file nested 75,000 deep overflows the stack. parse_json refuses
// such input with one line naming the source, before any value that deep exists.
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace cudl::io {

// Deeper than any file cudl reads (model files nest 4 levels), far below what overflows a stack.
constexpr int kMaxJsonDepth = 64;

// Parses `text`. Errors are a cudl::Error "WHAT: ..." (`what` names the source, e.g. "model file
// 'net.json'"): not JSON (the parser's reason, without its exception tag), nested deeper than
// kMaxJsonDepth, a key repeated within one object, or a number beyond a double's range (1e400).
nlohmann::json parse_json(std::string_view text, const std::string& what);

// A value for an error message: its compact text, cut to at most `limit` characters with "...",
// and control characters escaped (dump() escapes those in strings already).
std::string json_excerpt(const nlohmann::json& value, std::size_t limit = 80);

// The text of a nlohmann exception without its "[json.exception.type_error.302] " tag.
std::string json_reason(const std::exception& e);

}  // namespace cudl::io
