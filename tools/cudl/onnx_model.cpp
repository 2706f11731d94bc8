// ONNX models on the command line (models/onnx/onnx.hpp): their weights, and their input.
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/normalization.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/onnx/onnx.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

namespace {

namespace fs = std::filesystem;

// The weights files written from ONNX initializers; removed when the process ends.
struct TemporaryDirs {
  std::vector<fs::path> paths;
  ~TemporaryDirs() {
    for (const fs::path& p : paths) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  }
};

std::string write_onnx_weights(const std::string& command, const std::string& onnx_path) {
  static TemporaryDirs dirs;
  const OnnxModel onnx = read_onnx(onnx_path);
  std::string dir = (fs::temp_directory_path() / "cudl-onnx-XXXXXX").string();
  CUDL_CHECK(::mkdtemp(dir.data()) != nullptr, "{}: cannot create a temporary folder for '{}'s weights", command,
             onnx_path);
  dirs.paths.emplace_back(dir);
  std::vector<SafetensorsEntry> entries;
  for (const OnnxWeight& w : onnx.weights) entries.push_back({w.name, "F32", w.shape, w.values.data()});
  const std::string path = (fs::path(dir) / "weights.safetensors").string();
  // "model" names the ONNX file, so the command takes it as the checkpoint's model when --model is absent.
  write_safetensors(path, entries, {{"model", onnx_path}});
  return path;
}

}  // namespace

std::string resolve_onnx_weights(const std::string& command, const std::string& model, const std::string& weights) {
  if (is_onnx_file(weights)) return write_onnx_weights(command, weights);
  if (weights.empty() && is_onnx_file(model)) return write_onnx_weights(command, model);
  return weights;
}

void add_input_normalize_option(CLI::App* cmd, std::string& value) {
  cmd->add_option("--input-normalize", value,
                  "imagenet | none: normalise the [0,1] RGB input by ImageNet's mean and std before the model "
                  "(default: imagenet for an ONNX model, as torchvision's expect normalised input; none for cudl's "
                  "models and an ONNX model whose first layer normalises)")
      ->check(CLI::IsMember({"imagenet", "none"}));
}

Tensor normalize_input(Context& ctx, const Tensor& x, const std::string& model_name, const Sequential& model,
                       const std::string& option) {
  // An ONNX model that starts with its own normalisation (cudl's exports do) gets none added.
  const bool normalises_inside =
      model.size() > 0 && dynamic_cast<const Normalize*>(model.layers().front().second.get()) != nullptr;
  const bool imagenet = option.empty() ? is_onnx_file(model_name) && !normalises_inside : option == "imagenet";
  if (!imagenet) return x;
  CUDL_CHECK(x.shape().rank() == 4 && x.shape()[1] == 3,
             "--input-normalize imagenet: the model's input {} is not an RGB image [N, 3, H, W]", x.shape());
  auto normalize = Normalize::imagenet();
  return normalize->forward(ctx, x, /*train=*/false);
}

}  // namespace cudl::cli
