#include "cudl/models/preprocess.hpp"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

Preprocess training_preprocess(const Shape& input) {
  Preprocess p;
  p.channels = static_cast<int>(input[0]);
  p.crop_height = static_cast<int>(input[1]);
  p.crop_width = static_cast<int>(input[2]);
  p.resize = std::max(p.crop_height, p.crop_width);
  return p;
}

Preprocess default_preprocess(const Shape& input) {
  Preprocess p = training_preprocess(input);
  if (input == Shape{3, 224, 224}) p.resize = 256;
  return p;
}

std::string preprocess_to_json(const Preprocess& p) {
  return nlohmann::json{{"resize", p.resize}, {"crop", {p.crop_height, p.crop_width}}, {"channels", p.channels}}.dump();
}

Preprocess preprocess_from_json(const std::string& text, const std::string& source) {
  Preprocess p;
  try {
    const auto j = nlohmann::json::parse(text);
    p.resize = j.at("resize").get<int>();
    p.crop_height = j.at("crop").at(0).get<int>();
    p.crop_width = j.at("crop").at(1).get<int>();
    p.channels = j.at("channels").get<int>();
  } catch (const nlohmann::json::exception& e) {
    CUDL_THROW("'{}': metadata extra.preprocess is not the preprocessing cudl writes ({})", source, e.what());
  }
  CUDL_CHECK(p.resize >= 1 && p.resize <= 65536 && p.crop_height >= 1 && p.crop_height <= p.resize &&
                 p.crop_width >= 1 && p.crop_width <= p.resize && (p.channels == 1 || p.channels == 3),
             "'{}': metadata extra.preprocess {} is out of range (resize in [1, 65536], crops at most resize, 1 or 3 "
             "channels)",
             source, text);
  return p;
}

std::string classes_to_json(const std::vector<std::string>& names) { return nlohmann::json(names).dump(); }

std::vector<std::string> classes_from_json(const std::string& text, const std::string& source) {
  try {
    return nlohmann::json::parse(text).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    CUDL_THROW("'{}': metadata extra.classes is not a list of class names ({})", source, e.what());
  }
}

std::map<std::string, std::string> training_metadata(const Shape& input, const std::vector<std::string>& class_names) {
  std::map<std::string, std::string> m{{kPreprocessKey, preprocess_to_json(training_preprocess(input))}};
  if (!class_names.empty()) m[kClassesKey] = classes_to_json(class_names);
  return m;
}

Tensor preprocess_image(const Image& image, const Preprocess& p, Context& ctx, const std::string& path) {
  Image rgb = to_rgb(image);
  const int w = rgb.width, h = rgb.height;
  // The shorter side to p.resize, as the image-folder loader does, computed for the crop alone.
  const double new_w =
      w <= h ? p.resize : std::max<double>(p.resize, std::round(static_cast<double>(w) * p.resize / h));
  const double new_h = h < w ? p.resize : std::max<double>(p.resize, std::round(static_cast<double>(h) * p.resize / w));
  CUDL_CHECK(new_w <= std::numeric_limits<int>::max() && new_h <= std::numeric_limits<int>::max(),
             "predict: '{}': {}x{} with its shorter side at {} would be {:.0f}x{:.0f}, too elongated", path, w, h,
             p.resize, new_w, new_h);
  Image out = resize_center_crop(rgb, static_cast<int>(new_w), static_cast<int>(new_h), p.crop_width, p.crop_height);
  if (p.channels == 1) {
    Image grey(out.width, out.height, 1);
    for (int y = 0; y < out.height; ++y)
      for (int x = 0; x < out.width; ++x)
        grey.at(y, x, 0) = 0.299f * out.at(y, x, 0) + 0.587f * out.at(y, x, 1) + 0.114f * out.at(y, x, 2);
    out = std::move(grey);
  }
  return image_to_tensor(out, ctx);
}

}  // namespace cudl
