// `cudl predict`: top-K classes of images (a file, or every image under a folder) for any
// classifier, built-in or a model file, prepared the way its training prepared its data.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/checkpoint/saved_run.hpp"
#include "cudl/models/train/finetune.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/imagenet_classes.hpp"
#include "cudl/models/zoo/preprocess.hpp"
#include "cudl/models/zoo/top_classes.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/predict_reconstruct.hpp"

namespace cudl::cli {

namespace {

namespace fs = std::filesystem;

struct PredictArgs {
  std::string model, weights, image, labels, json, device = "auto", input_normalize;
  int top = 1;
  int image_size = 0;  // 0: the checkpoint's (or the model's) input size
  bool strict = false;
  ComputeOptions compute;
  ReconstructArgs recon;  // autoencoders
};

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// The file, or every .png/.jpg/.jpeg under the folder (recursively, sorted; hidden entries skipped).
std::vector<std::string> image_paths(const std::string& target) {
  std::error_code ec;
  if (!fs::is_directory(target, ec)) {
    CUDL_CHECK(fs::is_regular_file(target, ec), "predict: --image '{}' is neither an image file nor a folder", target);
    return {target};
  }
  std::vector<std::string> paths;
  for (auto it = fs::recursive_directory_iterator(target, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->path().filename().string().starts_with('.')) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!is_image_name(it->path())) continue;
    // A name of an image that is no readable file (a dangling or looping link, a FIFO, a device) is
    // an error, as an unreadable image is, not skipped without a word.
    CUDL_CHECK(it->is_regular_file(ec) || it->is_directory(ec),
               "predict: '{}' is named as an image but is not a regular file (a dangling or looping link, a FIFO "
               "or a device): remove or fix it",
               it->path().string());
    if (it->is_regular_file(ec)) paths.push_back(it->path().string());
  }
  CUDL_CHECK(!ec, "predict: cannot list '{}': {}", target, ec.message());
  CUDL_CHECK(!paths.empty(), "predict: no .png/.jpg/.jpeg images under '{}'", target);
  std::sort(paths.begin(), paths.end());
  return paths;
}

void run_predict(const PredictArgs& args) {
  PredictArgs a = args;
  a.weights = resolve_onnx_weights("predict", a.model, a.weights);  // an ONNX model carries its weights
  CUDL_CHECK(!a.weights.empty(),
             "predict: --weights is required (a checkpoint or weights file), unless --model is an ONNX file");
  std::error_code ec;
  check_outputs_spare_inputs(
      {{"--model", a.model.ends_with(".json") || a.model.ends_with(".onnx") ? a.model : std::string()},
       {"--weights", args.weights},
       {"--image", a.image, fs::is_directory(a.image, ec) ? PathUse::Kind::tree : PathUse::Kind::file},
       {"--labels", a.labels}},
      {{"--json", a.json}});
  check_writable_output("--json", a.json);
  const std::string model_name = resolve_model("predict", a.model, a.weights, read_saved_run(a.weights));
  const ModelSpec spec = model_spec(model_name);
  Sequential model = make_model(model_name);
  // Preprocessing, class names and a fine-tuned head's size from the checkpoint's metadata.
  const std::map<std::string, std::string> meta = read_safetensors_metadata(a.weights);
  (void)apply_saved_head(a.weights, model);
  const Shape probe{1, spec.input[0], spec.input[1], spec.input[2]};
  const Shape out = model.output_shape(probe);
  // An autoencoder (its output shaped like its input) gets reconstructions and codes instead of
  // classes (tools/cudl/predict_reconstruct.hpp).
  const bool autoencoder = out == probe;
  CUDL_CHECK(autoencoder || out.rank() == 2,
             "predict: {} outputs [N,{}...] per image: neither class scores [N, K] nor an image of its input's shape",
             model_name, out.rank() > 1 ? out[1] : 0);
  CUDL_CHECK(autoencoder || (a.recon.reconstructions.empty() && !a.recon.encode),
             "predict: --reconstructions and --encode are for autoencoders; {} is a classifier", model_name);
  CUDL_CHECK(!autoencoder || !a.recon.reconstructions.empty() || (a.recon.encode && !a.json.empty()),
             "predict: {} is an autoencoder: give --reconstructions DIR for its reconstructions (and --encode with "
             "--json for the code vectors)",
             model_name);
  const int classes = autoencoder ? 0 : static_cast<int>(out[1]);

  Preprocess pre = default_preprocess(spec.input);
  if (auto it = meta.find(std::string("extra.") + kPreprocessKey); it != meta.end())
    pre = preprocess_from_json(it->second, a.weights);
  if (a.image_size > 0) pre.resize = pre.crop_height = pre.crop_width = a.image_size;  // as training's --image-size
  const bool model_size = pre.crop_height == spec.input[1] && pre.crop_width == spec.input[2];
  CUDL_CHECK(pre.channels == spec.input[0] && (model_size || pre.crop_height == pre.crop_width),
             "predict: '{}' was trained on {}x{}x{} inputs but {} takes {}", a.weights, pre.channels, pre.crop_height,
             pre.crop_width, model_name, spec.input);
  // Another square size (a checkpoint trained with --image-size, or --image-size here) only when
  // the model's layers take it; folder_image_size says why not otherwise.
  if (!model_size) {
    CUDL_CHECK(spec.input[0] == 3 && spec.input[1] == spec.input[2],
               "predict: {} takes {} inputs only; another image size ({}x{}, from --image-size or the checkpoint) "
               "needs a model of square RGB inputs",
               model_name, spec.input, pre.crop_height, pre.crop_width);
    (void)folder_image_size(model_name, pre.crop_height);
  }

  std::vector<std::string> labels;
  if (!a.labels.empty()) {
    labels = read_label_file("--labels", a.labels, static_cast<std::size_t>(classes), "the model");
  } else if (auto it = meta.find(std::string("extra.") + kClassesKey); it != meta.end()) {
    labels = classes_from_json(it->second, a.weights);
    if (static_cast<int>(labels.size()) != classes) labels.clear();  // a replaced head: indices only
  }
  if (labels.empty()) labels = default_class_names(classes);  // ImageNet's names for a 1000-class model
  const std::vector<std::string> paths = image_paths(a.image);

  Context ctx(Device::parse(a.device));
  apply_compute_options(ctx, a.compute);
  model.build(ctx, 0);
  load_weights_reporting_unused(a.weights, ctx, model, a.strict);
  const ConstantHold weights = model.hold_parameters_constant(ctx);  // one layout change per run, not per image
  if (autoencoder) {
    ReconstructArgs r = a.recon;
    r.json = a.json;
    const std::size_t skipped = run_reconstruction_predict(ctx, model, pre, paths, r, model_name, a.weights);
    CUDL_CHECK(skipped == 0, "predict: {} of {} images could not be read (each named above)", skipped, paths.size());
    return;
  }

  nlohmann::json results = nlohmann::json::array();
  const int k = std::min(a.top, classes);
  std::vector<std::string> lines;
  std::size_t unreadable = 0;
  for (const std::string& path : paths) {
    // One bad file in a folder costs that file, not the run: said, skipped, failed at the end.
    const Tensor x = read_or_skip(ctx, path, pre, paths.size() == 1, results, unreadable);
    if (!x.defined()) continue;
    Tensor logits = model.forward(ctx, normalize_input(ctx, x, model_name, model, a.input_normalize), /*train=*/false);
    const TopClasses ranked = top_classes(ctx, logits, k);
    CUDL_CHECK(std::isfinite(ranked.total),
               "predict: '{}' gives non-finite class probabilities (their sum is {}) for '{}': unusable weights",
               a.weights, ranked.total, path);
    std::string line = path + ":";
    nlohmann::json top = nlohmann::json::array();
    for (std::size_t r = 0; r < ranked.ranked.size(); ++r) {
      const auto i = static_cast<std::size_t>(ranked.ranked[r].index);
      const float p = ranked.ranked[r].probability;
      const std::string label = labels.empty() ? std::to_string(i) : labels[i];
      // classify's format, "PROB - INDEX NAME": the index stays for scripts, the name for people.
      line += fmt::format("{} {:.4f} - {}{}", r ? "," : "", p, i, labels.empty() ? "" : " " + label);
      nlohmann::json entry = {{"index", i}, {"probability", p}};
      if (!labels.empty()) entry["label"] = labels[i];
      top.push_back(entry);
    }
    // Printed as each image is done: a folder of thousands shows progress.
    fmt::print("{}\n", line);
    results.push_back({{"image", path}, {"top", top}});
  }
  if (!a.json.empty())
    write_file_atomically(a.json,
                          nlohmann::json{{"model", model_name}, {"weights", a.weights}, {"predictions", results}}.dump(
                              2, ' ', false, nlohmann::json::error_handler_t::replace) +
                              "\n");
  CUDL_CHECK(unreadable == 0, "predict: {} of {} images could not be read (each named above){}", unreadable,
             paths.size(), a.json.empty() ? "" : fmt::format("; the others' predictions are in '{}'", a.json));
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  auto* cmd = app.add_subcommand(
      "predict", "Top-K classes of an image or of every image under a folder, for any classifier (one line per image)");
  cmd->add_option("--model", a->model,
                  "A built-in model name, a model file NAME.json, or an ONNX model NAME.onnx (its weights with it) "
                  "(default: the one the checkpoint was trained as)");
  cmd->add_option("--weights", a->weights,
                  "Weights or a checkpoint (safetensors) of that model; required unless --model is NAME.onnx")
      ->check(input_file());
  add_strict_option(cmd, a->strict);
  cmd->add_option("--image", a->image, "An image (PNG or JPEG) or a folder of them")->required();
  cmd->add_option("--top", a->top, "How many classes per image")
      ->transform(whole_number(1, 1000))
      ->capture_default_str();
  cmd->add_option("--labels", a->labels, "Class names, one per line (default: those saved with the checkpoint)")
      ->check(input_file());
  cmd->add_option("--json", a->json, "Also write the predictions as JSON here");
  cmd->add_option("--image-size", a->image_size,
                  "Resize the shorter side to N and centre-crop NxN (default: as the checkpoint was trained; another "
                  "size only when the model's layers take it)")
      ->transform(whole_number(1, 8192));
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N")->check(device_name())->capture_default_str();
  add_compute_options(cmd, a->compute);
  add_input_normalize_option(cmd, a->input_normalize);
  cmd->add_option("--reconstructions", a->recon.reconstructions,
                  "An autoencoder: write each image's reconstruction as a PNG into this folder");
  cmd->add_flag("--encode", a->recon.encode,
                "An autoencoder: put each image's code vector (the narrowest layer's output) into --json");
  cmd->add_option("--code-layer", a->recon.code_layer, "With --encode: the layer whose output is the code");
  cmd->callback([a] { run_predict(*a); });
}

}  // namespace cudl::cli
