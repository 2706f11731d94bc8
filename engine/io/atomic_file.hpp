#pragma once
// Writes a file so that readers only ever see the old contents or the complete new ones: the data
// goes to a temporary file in the same folder, is flushed to disk, and is renamed over the target.
// On any failure the temporary is removed, the target is left as it was, and a cudl::Error names
// the file.
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace cudl {

// `write` fills the open temporary file; it may throw.
void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& write);
void write_file_atomically(const std::string& path, std::string_view contents);

}  // namespace cudl
