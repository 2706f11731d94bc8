#pragma once
// File plumbing shared by the image and dataset readers: whole-file reads, gzip detection and
// inflation, (atomic writes are engine/io/atomic_file.hpp). Every failure is an Error naming the file and the OS's reason.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace cudl::io {

// The whole file. `who` names the caller in messages ("read_image").
std::vector<std::uint8_t> read_file(const std::string& path, const char* who);

// True when the bytes start with the gzip magic 1f 8b.
bool is_gzip(std::span<const std::uint8_t> bytes);
// Inflates a gzip stream (concatenated members included); a truncated or corrupt stream is an
// Error naming `path`.
std::vector<std::uint8_t> gunzip(std::span<const std::uint8_t> bytes, const std::string& path, const char* who);
// The file's bytes, inflated when they are gzip (by magic, not by name).
std::vector<std::uint8_t> read_maybe_gzip(const std::string& path, const char* who);

}  // namespace cudl::io
