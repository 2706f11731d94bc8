#pragma once
// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes
// of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {string: string}}, then the data buffer (offsets are relative to its start).
// It is what torchvision weights are converted to and what cudl checkpoints are, so the reader is
// strict: a file is checked whole when it is opened and every flaw is an Error naming the file.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cudl/engine/shape.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

// A file read into memory and validated. Reading a tensor converts it to the type asked for.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  // The same checks over a file's bytes already in memory; `name` is what messages call them.
  static SafetensorsFile from_bytes(std::vector<unsigned char> bytes, const std::string& name);

  const std::string& path() const { return path_; }
  // Tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  Shape shape(const std::string& name) const;
  std::string dtype(const std::string& name) const;  // "F32", "BF16", ...
  // Values as float; F32, F16, BF16 and F64 convert (PyTorch checkpoints are often F16/BF16).
  std::vector<float> read_f32(const std::string& name) const;
  // A tensor on ctx's device in the file's own precision: F16 and BF16 stay half (no widening),
  // F32 and F64 become f32, I32 stays i32.
  Tensor read(const std::string& name, Context& ctx) const;
  // Values of an I32 tensor.
  std::vector<std::int32_t> read_i32(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    std::string dtype;
    Shape shape;
    std::uint64_t begin = 0, end = 0;  // relative to the data buffer
  };
  const Entry& entry(const std::string& name) const;
  const unsigned char* data(const Entry& e) const;

  std::string path_;
  std::vector<unsigned char> bytes_;  // the whole file
  std::size_t buffer_start_ = 0;      // 8 + header length
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: `data` points at shape.numel() host values of `dtype` ("F32" or "I32"; any
// dtype the reader knows is accepted).
struct SafetensorsEntry {
  std::string name;
  std::string dtype;
  Shape shape;
  const void* data = nullptr;
};

// Writes the tensors in the given order, the header padded with spaces to a multiple of 8 bytes
// (as the reference implementation does, so the data buffer stays aligned). Atomic: the bytes go to
// a temporary file in the same directory, which is fsynced and renamed over `path`; on failure the
// temporary is removed and `path` is untouched, so a crash never leaves half a checkpoint.
// Only the "__metadata__" of a file, reading just its header (a checkpoint's seed and epoch before
// loading gigabytes of weights).
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace cudl
