#pragma once
// The on-disk cache of cuDNN's measured convolution algorithms (kernels/cudnn/conv.cpp, under
// ConvSearch::measured): the search times every candidate once per shape, and this file keeps the
// winners so that later runs on the same GPU and cuDNN skip it. Host code only, so that the file
// format, its keys and its failure modes are tested on the CPU (tests/test_conv_algo_cache.cpp).
//
// Trust: the file is a hint, never an authority. One written for another GPU, compute capability,
// cuDNN version or format version, or one that is truncated or corrupt (its line count and
// checksum do not match), is ignored whole with a one-line warning and rewritten at the next
// store; an entry's algorithm still goes through the run policy (an algorithm that fails is
// dropped and the next candidate runs). A file that cannot be written leaves the run going: one
// warning, and the cache lives in memory.
//
// Format (text, one entry a line, so a reader can see what was chosen):
//   cudl conv algorithm cache 1
//   environment <GPU name> | cc <major>.<minor> | cuDNN <version>
//   <key> = <algo> <math> <workspace bytes>        (one line per entry)
//   end <entries> <FNV-1a 64 of every line above, hex>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "cudl/engine/dtype.hpp"
#include "cudl/engine/memory_format.hpp"
#include "cudl/engine/shape.hpp"

namespace cudl {

// What a measured choice depends on besides the environment: the direction ("conv2d_forward"...),
// dtype, shapes, parameters, groups, layout, math mode and determinism.
struct ConvAlgoKey {
  std::string direction;
  DType dtype = DType::f32;
  Shape x, w, y;
  int pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int groups = 1;
  std::string layout = "NCHW";  // conv_algo_layout(): the data tensors' formats
  std::string math;             // "fp32", "tf32" (or the half dtype's name)
  bool deterministic = true;
};
// The key's layout for a call whose x-like tensor (x, or dx) is stored in `x` and whose y-like one
// (y, or dy) in `y`: "NCHW" or "NHWC" when they agree (so NCHW entries written before formats
// existed stay valid), "xNCHW-yNHWC" and the like when they differ (a network's first layer).
// cuDNN's fastest algorithm differs between layouts, so they never share an entry.
std::string conv_algo_layout(MemoryFormat x, MemoryFormat y);

// One line: "conv2d_forward f32 NCHW x=[..] w=[..] y=[..] pad=1,1 stride=1,1 dilation=1,1 groups=1 fp32 deterministic".
std::string conv_algo_key_text(const ConvAlgoKey& key);

// The GPU and library the measurements belong to: "NVIDIA H200 | cc 9.0 | cuDNN 91000".
std::string conv_algo_environment(const std::string& gpu_name, int cc_major, int cc_minor, std::size_t cudnn_version);

struct CachedConvAlgo {
  int algo = 0;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
  int math = 0;  // cudnnMathType_t
  std::size_t workspace_bytes = 0;
};

// $XDG_CACHE_HOME/cudl, or $HOME/.cache/cudl (XDG's default); empty when neither is set.
std::filesystem::path default_cache_dir();
// default_cache_dir()/conv_algorithms.txt (empty when there is no cache folder).
std::filesystem::path default_conv_algo_cache_file();

class ConvAlgoCache {
 public:
  using Warn = std::function<void(const std::string& line)>;
  // Reads `file` if it exists (a missing file is an empty cache, silently). `warn` gets each
  // one-line warning; the default prints "warning: ..." on stderr.
  ConvAlgoCache(std::filesystem::path file, std::string environment, Warn warn = {});

  // find, store and size may be called from several threads at once: the cache is one per device
  // for the process (kernels/cudnn/conv.cpp), shared by every context on that device.
  std::optional<CachedConvAlgo> find(const std::string& key) const;
  // Adds or replaces the entry and rewrites the file atomically. A write that fails warns once
  // (later failures stay quiet) and keeps the entry in memory.
  void store(const std::string& key, const CachedConvAlgo& algo);

  const std::filesystem::path& file() const { return file_; }
  std::size_t size() const;

  static constexpr int kFormatVersion = 1;

 private:
  void load();
  std::string serialise() const;
  void warn(const std::string& line) const;

  std::filesystem::path file_;
  std::string environment_;
  Warn warn_;
  mutable std::mutex mutex_;  // over entries_ and write_failed_ (and so over the file's rewrites)
  std::map<std::string, CachedConvAlgo> entries_;
  bool write_failed_ = false;
};

}  // namespace cudl
