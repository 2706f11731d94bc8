#pragma once
// `cudl predict` on an autoencoder (a model whose output is an image of its input's shape): the
// reconstruction of each image as a PNG in --reconstructions DIR, and with --encode the code
// vector (the output of the narrowest layer, or of --code-layer) of each image in --json.
#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "cudl/models/network/sequential.hpp"
#include "cudl/models/zoo/preprocess.hpp"

namespace cudl::cli {

struct ReconstructArgs {
  std::string reconstructions;  // folder for the PNGs (created when missing)
  bool encode = false;
  std::string code_layer;  // empty: the layer with the fewest outputs
  std::string json;
};

// The image at `path` preprocessed for the model, or an undefined tensor where it cannot be read:
// then it is named on stderr, recorded in `results` and counted in `unreadable` (one bad file in a
// folder costs that file, not the run). When it is the run's only path, the error propagates.
// Both predict paths (classes, reconstructions) read their images through it.
Tensor read_or_skip(Context& ctx, const std::string& path, const Preprocess& pre, bool only_path,
                    nlohmann::json& results, std::size_t& unreadable);

// The narrowest layer of `model` before its output layer, for input [1, C, H, W] (the first of
// equals): the code of an autoencoder.
std::string bottleneck_layer(const Sequential& model, const Shape& input);

// Runs the model on every path (already built and loaded, `ctx`'s device); an unreadable image is
// skipped and counted. Returns the number skipped.
std::size_t run_reconstruction_predict(Context& ctx, Sequential& model, const Preprocess& pre,
                                       const std::vector<std::string>& paths, const ReconstructArgs& a,
                                       const std::string& model_name, const std::string& weights);

}  // namespace cudl::cli
