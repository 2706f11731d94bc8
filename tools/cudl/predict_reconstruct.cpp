#include "tools/cudl/predict_reconstruct.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/image.hpp"

namespace cudl::cli {

namespace fs = std::filesystem;

Tensor read_or_skip(Context& ctx, const std::string& path, const Preprocess& pre, bool only_path,
                    nlohmann::json& results, std::size_t& unreadable) {
  ImageReadOptions options;
  options.shorter_side = pre.resize;  // a large JPEG decodes at a reduced scale that keeps this
  try {
    return preprocess_image(read_image(path, options), pre, ctx, path);
  } catch (const Error& e) {
    if (only_path) throw;
    ++unreadable;
    std::string message = e.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    fmt::print(stderr, "predict: skipped '{}': {}\n", path, message);
    results.push_back({{"image", path}, {"error", message}});
    return Tensor();
  }
}

std::string bottleneck_layer(const Sequential& model, const Shape& input) {
  std::string best;
  std::int64_t fewest = 0;
  const std::vector<LayerSummary> layers = model.summary(input);
  // The output layer is the reconstruction, not the code.
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) {
    const LayerSummary& s = layers[i];
    const std::int64_t n = s.output_shape.numel();
    if (best.empty() || n < fewest) best = s.name, fewest = n;
  }
  CUDL_CHECK(!best.empty(), "predict --encode: the model has a single layer: no code between input and output");
  return best;
}

std::size_t run_reconstruction_predict(Context& ctx, Sequential& model, const Preprocess& pre,
                                       const std::vector<std::string>& paths, const ReconstructArgs& a,
                                       const std::string& model_name, const std::string& weights) {
  const Shape input{1, pre.channels, pre.crop_height, pre.crop_width};
  std::string code_layer;
  if (a.encode) {
    code_layer = a.code_layer.empty() ? bottleneck_layer(model, input) : a.code_layer;
    (void)model.layer(code_layer);  // throws naming the layers for an unknown one
    model.set_taps({code_layer});
  }
  if (!a.reconstructions.empty()) {
    std::error_code ec;
    fs::create_directories(a.reconstructions, ec);
    CUDL_CHECK(!ec, "--reconstructions: cannot create '{}': {}", a.reconstructions, ec.message());
  }
  nlohmann::json results = nlohmann::json::array();
  std::size_t unreadable = 0;
  for (const std::string& path : paths) {
    const Tensor x = read_or_skip(ctx, path, pre, paths.size() == 1, results, unreadable);
    if (!x.defined()) continue;
    const Tensor y = model.forward(ctx, x, /*train=*/false);
    const std::vector<float> in = x.to_vector(ctx), out = y.to_vector(ctx);
    double se = 0;
    for (std::size_t i = 0; i < in.size(); ++i) {
      CUDL_CHECK(std::isfinite(out[i]), "predict: '{}' gives a non-finite reconstruction of '{}': unusable weights",
                 weights, path);
      se += (out[i] - in[i]) * (out[i] - in[i]);
    }
    const double mse = se / static_cast<double>(std::max<std::size_t>(in.size(), 1));
    std::string line =
        fmt::format("{}: mse {:.5f} psnr {:.2f} dB", path, mse, 10.0 * std::log10(1.0 / std::max(mse, 1e-12)));
    nlohmann::json entry = {{"image", path}, {"mse", mse}};
    if (!a.reconstructions.empty()) {
      // The input's relative name under the folder would need its root; the file name, made
      // unique by its position, is enough to find it again.
      const std::string name = fmt::format("{:05}-{}.png", results.size(), fs::path(path).stem().string());
      const std::string out_path = (fs::path(a.reconstructions) / name).string();
      write_image(out_path, tensor_to_image(y, ctx));
      line += fmt::format(" -> {}", out_path);
      entry["reconstruction"] = out_path;
    }
    if (a.encode) {
      const std::vector<float> code = model.tap(code_layer).to_vector(ctx);
      entry["code"] = code;
      line += fmt::format(", code {} ({} values)", code_layer, code.size());
    }
    fmt::print("{}\n", line);
    results.push_back(entry);
  }
  if (!a.json.empty()) {
    nlohmann::json doc = {{"model", model_name}, {"weights", weights}, {"reconstructions", results}};
    if (a.encode) doc["code_layer"] = code_layer;
    write_file_atomically(a.json, doc.dump(2) + "\n");
  }
  return unreadable;
}

}  // namespace cudl::cli
