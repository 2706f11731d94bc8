#pragma once
// Rewrites a safetensors file with some tensors or metadata changed: how the bad-checkpoint tests
// (library and CLI) make a diverged, truncated-count or oddly named file from a good one.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cudl/engine/io/safetensors.hpp"

namespace cudl::testing {

using TensorEdit =
    std::function<void(std::map<std::string, std::vector<float>>& tensors, std::map<std::string, std::string>& meta)>;

// Reads `from` (all F32), lets `edit` change the tensors and the metadata, writes `to`. A tensor
// that `edit` adds is written flat.
inline void rewrite_safetensors(const std::string& from, const std::string& to, const TensorEdit& edit) {
  const SafetensorsFile f = SafetensorsFile::open(from);
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, Shape> shapes;
  for (const auto& name : f.names()) {
    tensors[name] = f.read_f32(name);
    shapes[name] = f.shape(name);
  }
  std::map<std::string, std::string> meta = f.metadata();
  edit(tensors, meta);
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, v] : tensors)
    entries.push_back(
        {name, "F32", shapes.count(name) ? shapes[name] : Shape{static_cast<std::int64_t>(v.size())}, v.data()});
  write_safetensors(to, entries, meta);
}

}  // namespace cudl::testing
