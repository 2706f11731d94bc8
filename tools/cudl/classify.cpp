// `cudl classify`: top-K ImageNet classes of one image with torchvision's preprocessing.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/checkpoint/saved_run.hpp"
#include "cudl/models/zoo/imagenet_classes.hpp"
#include "cudl/models/zoo/top_classes.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

namespace {

struct ClassifyArgs {
  std::string model, weights, image, labels, device = "auto", input_normalize;
  int top = 5;
  bool strict = false;
  ComputeOptions compute;
};

// torchvision: Resize(256) on the shorter side, CenterCrop(224); a 224x224 image goes in as is. The
// crop is computed alone (a thin image would otherwise resize to millions of pixels).
Image preprocess(const Image& in) {
  Image rgb = to_rgb(in);
  if (rgb.width == 224 && rgb.height == 224) return rgb;
  const int shorter = std::min(rgb.width, rgb.height);
  const int w = rgb.width == shorter ? 256 : static_cast<int>(256LL * rgb.width / shorter);
  const int h = rgb.height == shorter ? 256 : static_cast<int>(256LL * rgb.height / shorter);
  return resize_center_crop(rgb, w, h, 224, 224);
}

void run_classify(const ClassifyArgs& args) {
  ClassifyArgs a = args;
  a.weights = resolve_onnx_weights("classify", a.model, a.weights);  // an ONNX model carries its weights
  CUDL_CHECK(!a.weights.empty(),
             "classify: --weights is required: {} in safetensors with torchvision names (see README: "
             "tools/convert_torchvision_vgg19.py), or random:SEED for a smoke test",
             a.model.empty() ? "vgg19" : a.model);
  // The checkpoint's model unless --model is given; vgg19 for a plain (converted) weights file.
  const bool random = a.weights.rfind("random:", 0) == 0;
  const SavedRun saved = random ? SavedRun{} : read_saved_run(a.weights);
  const std::string model_name =
      a.model.empty() && saved.model.empty() ? "vgg19" : resolve_model("classify", a.model, a.weights, saved);
  const ModelSpec& spec = model_spec(model_name);
  CUDL_CHECK(spec.input == (Shape{3, 224, 224}), "classify: {} is not an ImageNet model (input {})", model_name,
             spec.input);
  // --labels, else ImageNet's bundled names for a 1000-class model (models/zoo/imagenet_classes.hpp).
  std::vector<std::string> labels = default_class_names(spec.num_classes);
  if (!a.labels.empty()) {
    labels = read_label_file("--labels", a.labels, static_cast<std::size_t>(spec.num_classes), model_name);
  }
  ImageReadOptions read_options;
  read_options.shorter_side = 256;  // a large JPEG decodes at a reduced scale that keeps this
  const Image image = preprocess(read_image(a.image, read_options));
  Context ctx(Device::parse(a.device));
  apply_compute_options(ctx, a.compute);
  Sequential model = make_model(model_name);
  if (random) {
    model.build(ctx, parse_seed("classify: --weights random:SEED", a.weights.substr(7)));
  } else {
    model.build(ctx, 0);
    load_weights_reporting_unused(a.weights, ctx, model, a.strict);
  }
  Tensor x = normalize_input(ctx, image_to_tensor(image, ctx), model_name, model, a.input_normalize);
  Tensor logits = model.forward(ctx, x, false);
  const TopClasses top = top_classes(ctx, logits, a.top);
  CUDL_CHECK(std::isfinite(top.total),
             "classify: {} gives non-finite class probabilities (their sum is {}) for '{}': unusable weights",
             a.weights, top.total, a.image);
  for (const RankedClass& c : top.ranked) {
    const auto i = static_cast<std::size_t>(c.index);
    if (labels.empty())
      fmt::print("{:.4f} - {}\n", c.probability, i);
    else
      fmt::print("{:.4f} - {} {}\n", c.probability, i, labels[i]);
  }
}

}  // namespace

void add_classify_command(CLI::App& app) {
  auto a = std::make_shared<ClassifyArgs>();
  auto* cmd = app.add_subcommand("classify", "Top-K ImageNet classes of an image (torchvision preprocessing)");
  cmd->add_option("--model", a->model,
                  "An ImageNet model (vgg11..vgg19, *_bn, resnet18/34/50, NAME.json, or NAME.onnx with its weights); "
                  "default: the checkpoint's, vgg19 for a plain weights file");
  cmd->add_option("--weights", a->weights, "Weights (safetensors, torchvision names) or random:SEED")
      ->check(weights_source());
  add_strict_option(cmd, a->strict);
  cmd->add_option("--image", a->image, "Image (PNG or JPEG)")->required();
  cmd->add_option("--top", a->top, "How many classes")->transform(whole_number(1, 1000))->capture_default_str();
  cmd->add_option("--labels", a->labels, "Class names, one per line (default: ImageNet's, bundled)")
      ->check(input_file());
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N")->check(device_name())->capture_default_str();
  add_input_normalize_option(cmd, a->input_normalize);
  add_compute_options(cmd, a->compute);
  cmd->callback([a] { run_classify(*a); });
}

}  // namespace cudl::cli
