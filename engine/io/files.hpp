#pragma once
// File plumbing shared by the image and dataset readers: whole-file reads, gzip detection and
// inflation, and atomic writes. Every failure is an Error naming the file and the OS's reason.
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

// Writes `bytes` to a temporary file in the destination's folder and renames it over `path`, so
// readers see the old file or the whole new one, and a failure leaves nothing behind.
void write_file_atomic(const std::string& path, std::span<const std::uint8_t> bytes, const char* who);

}  // namespace cudl::io
