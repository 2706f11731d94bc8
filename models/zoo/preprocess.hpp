#pragma once
// How an image becomes a model's input, stored with the weights so that `cudl predict` prepares
// a photo the way training prepared its data: the shorter side resized to `resize` (aspect ratio
// kept), the centred crop_height x crop_width window kept, converted to `channels` (1: grey by
// Rec. 601 luma, 3: RGB), values in [0, 1] as NCHW. Checkpoints carry it in their metadata as
// "extra.preprocess" (JSON), and the class names of an image folder as "extra.classes".
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cudl/engine/io/image.hpp"
#include "cudl/engine/shape.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

struct Preprocess {
  int resize = 0;  // shorter side before the crop
  int crop_height = 0, crop_width = 0;
  int channels = 3;
};

// The metadata keys (without checkpoint's "extra." prefix).
inline constexpr const char* kPreprocessKey = "preprocess";
inline constexpr const char* kClassesKey = "classes";

// What training does for a model with per-sample input [C, H, W]: the shorter side to H and the
// centred H x W crop (the image-folder loader's way; an MNIST or CIFAR image is already that size).
Preprocess training_preprocess(const Shape& input);
// The default when a weights file says nothing: as training, except for 224x224 RGB input, which
// gets torchvision's ImageNet preprocessing (shorter side 256, centre crop 224), like `cudl classify`.
Preprocess default_preprocess(const Shape& input);

std::string preprocess_to_json(const Preprocess& p);
// Parses and checks "extra.preprocess"; `source` names the file in errors.
Preprocess preprocess_from_json(const std::string& text, const std::string& source);
std::string classes_to_json(const std::vector<std::string>& names);
std::vector<std::string> classes_from_json(const std::string& text, const std::string& source);

// The metadata a training run saves with its checkpoints: the preprocessing, and class names when known.
std::map<std::string, std::string> training_metadata(const Shape& input, const std::vector<std::string>& class_names);

// The image as the model's input: [1, channels, crop_height, crop_width] on ctx's device.
Tensor preprocess_image(const Image& image, const Preprocess& p, Context& ctx, const std::string& path);

}  // namespace cudl
