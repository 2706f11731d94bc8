#include "cudl/engine/io/conv_algo_cache.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/atomic_file.hpp"

namespace cudl {

namespace {

constexpr std::string_view kMagic = "cudl conv algorithm cache";

std::uint64_t fnv1a(std::string_view text, std::uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Keys and the environment are one line each, and " = " separates a key from its algorithm: a
// newline or " = " inside a GPU name must not break the format.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  for (std::size_t at = s.find(" = "); at != std::string::npos; at = s.find(" = ", at)) s[at + 1] = ':';
  return s;
}

// Why a file's text is not a valid cache for `environment`, or empty when it is; fills `entries`.
std::string parse(const std::string& text, const std::string& environment,
                  std::map<std::string, CachedConvAlgo>& entries) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  if (lines.size() < 3 || !lines[0].starts_with(kMagic)) return "not a cudl algorithm cache (corrupt or truncated)";
  if (lines[0] != fmt::format("{} {}", kMagic, ConvAlgoCache::kFormatVersion))
    return fmt::format("written by another cudl version ('{}')", lines[0]);
  const std::string& last = lines.back();
  std::size_t count = 0;
  unsigned long long sum = 0;
  char tail = 0;
  if (std::sscanf(last.c_str(), "end %zu %llx%c", &count, &sum, &tail) != 2)
    return "truncated (no end line with its entry count and checksum)";
  std::uint64_t h = fnv1a("");
  for (std::size_t i = 0; i + 1 < lines.size(); ++i) h = fnv1a(lines[i] + "\n", h);
  if (count != lines.size() - 3 || h != sum) return "corrupt (its entry count or checksum does not match)";
  constexpr std::string_view kEnvironment = "environment ";
  if (!lines[1].starts_with(kEnvironment)) return "corrupt (line 2 is not its environment line)";
  if (lines[1] != fmt::format("{}{}", kEnvironment, environment))
    return fmt::format("made on another GPU or cuDNN ('{}', this run: '{}')", lines[1].substr(kEnvironment.size()),
                       environment);
  for (std::size_t i = 2; i + 1 < lines.size(); ++i) {
    const std::string& line = lines[i];
    const std::size_t eq = line.rfind(" = ");
    CachedConvAlgo a;
    if (eq == std::string::npos ||
        std::sscanf(line.c_str() + eq + 3, "%d %d %zu%c", &a.algo, &a.math, &a.workspace_bytes, &tail) != 3 ||
        a.algo < 0 || a.math < 0)
      return fmt::format("corrupt (line {} is not 'key = algo math workspace')", i + 1);
    entries[line.substr(0, eq)] = a;
  }
  return {};
}

}  // namespace

std::string conv_algo_key_text(const ConvAlgoKey& k) {
  return one_line(fmt::format("{} {} {} x={} w={} y={} pad={},{} stride={},{} dilation={},{} groups={} {} {}",
                              k.direction, dtype_name(k.dtype), k.layout, k.x, k.w, k.y, k.pad_h, k.pad_w, k.stride_h,
                              k.stride_w, k.dilation_h, k.dilation_w, k.groups, k.math,
                              k.deterministic ? "deterministic" : "any"));
}

std::string conv_algo_layout(MemoryFormat x, MemoryFormat y) {
  const auto name = [](MemoryFormat f) { return f == MemoryFormat::channels_last ? "NHWC" : "NCHW"; };
  if (x == y) return name(x);
  return fmt::format("x{}-y{}", name(x), name(y));
}

std::string conv_algo_environment(const std::string& gpu_name, int cc_major, int cc_minor, std::size_t cudnn_version) {
  return one_line(fmt::format("{} | cc {}.{} | cuDNN {}", gpu_name, cc_major, cc_minor, cudnn_version));
}

std::filesystem::path default_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] == '/')
    return std::filesystem::path(xdg) / "cudl";
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0')
    return std::filesystem::path(home) / ".cache" / "cudl";
  return {};
}

std::filesystem::path default_conv_algo_cache_file() {
  const std::filesystem::path dir = default_cache_dir();
  return dir.empty() ? dir : dir / "conv_algorithms.txt";
}

ConvAlgoCache::ConvAlgoCache(std::filesystem::path file, std::string environment, Warn warn)
    : file_(std::move(file)), environment_(one_line(std::move(environment))), warn_(std::move(warn)) {
  load();
}

void ConvAlgoCache::warn(const std::string& line) const {
  if (warn_)
    warn_(line);
  else
    fmt::print(stderr, "warning: {}\n", line);
}

void ConvAlgoCache::load() {
  if (file_.empty()) return;
  std::error_code ec;
  if (!std::filesystem::exists(file_, ec)) return;
  std::ifstream in(file_, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in && !in.eof()) {
    warn(fmt::format("algorithm cache {} could not be read; measuring again", file_.string()));
    return;
  }
  std::map<std::string, CachedConvAlgo> entries;
  const std::string why = parse(text, environment_, entries);
  if (!why.empty()) {
    warn(fmt::format("algorithm cache {} ignored: {}; measuring again", file_.string(), why));
    return;
  }
  entries_ = std::move(entries);
}

std::optional<CachedConvAlgo> ConvAlgoCache::find(const std::string& key) const {
  const std::lock_guard lock(mutex_);
  const auto it = entries_.find(one_line(key));
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

std::string ConvAlgoCache::serialise() const {
  std::string body = fmt::format("{} {}\nenvironment {}\n", kMagic, kFormatVersion, environment_);
  for (const auto& [key, a] : entries_) body += fmt::format("{} = {} {} {}\n", key, a.algo, a.math, a.workspace_bytes);
  return body + fmt::format("end {} {:x}\n", entries_.size(), fnv1a(body));
}

std::size_t ConvAlgoCache::size() const {
  const std::lock_guard lock(mutex_);
  return entries_.size();
}

void ConvAlgoCache::store(const std::string& key, const CachedConvAlgo& algo) {
  const std::lock_guard lock(mutex_);
  entries_[one_line(key)] = algo;
  if (file_.empty() || write_failed_) return;
  try {
    std::error_code ec;
    std::filesystem::create_directories(file_.parent_path(), ec);
    if (ec) CUDL_THROW("cannot create {}: {}", file_.parent_path().string(), ec.message());
    write_file_atomically(file_.string(), serialise());
  } catch (const Error& e) {
    write_failed_ = true;
    warn(fmt::format("algorithm cache not saved ({}); this run keeps its measurements in memory", e.what()));
  }
}

}  // namespace cudl
