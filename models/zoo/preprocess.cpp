#include "cudl/models/zoo/preprocess.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/json.hpp"

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
  const std::string what = fmt::format("'{}': metadata extra.preprocess", source);
  const nlohmann::json j = io::parse_json(text, what);
  // Each value a whole JSON number in range, read as such: 1.5 or 4294967297 is refused, not
  // truncated or wrapped into an int.
  const auto whole = [&](const nlohmann::json& v, const char* field, int hi) {
    CUDL_CHECK(v.is_number_integer() && v.get<double>() >= 1 && v.get<double>() <= hi,
               "{}: {} must be a whole number in [1, {}], got {}", what, field, hi, io::json_excerpt(v));
    return v.get<int>();
  };
  CUDL_CHECK(j.is_object() && j.size() == 3 && j.contains("resize") && j.contains("crop") && j.contains("channels"),
             "{} is not the preprocessing cudl writes ({{\"resize\", \"crop\", \"channels\"}}), got {}", what,
             io::json_excerpt(j));
  const nlohmann::json& crop = j["crop"];
  CUDL_CHECK(crop.is_array() && crop.size() == 2, "{}: crop must be [height, width], got {}", what,
             io::json_excerpt(crop));
  Preprocess p;
  p.resize = whole(j["resize"], "resize", 65536);
  p.crop_height = whole(crop[0], "crop height", 65536);
  p.crop_width = whole(crop[1], "crop width", 65536);
  p.channels = whole(j["channels"], "channels", 3);
  CUDL_CHECK(p.crop_height <= p.resize && p.crop_width <= p.resize && (p.channels == 1 || p.channels == 3),
             "{} {} is out of range (resize in [1, 65536], crops at most resize, 1 or 3 channels)", what,
             io::json_excerpt(j));
  return p;
}

std::string classes_to_json(const std::vector<std::string>& names) { return nlohmann::json(names).dump(); }

std::vector<std::string> classes_from_json(const std::string& text, const std::string& source) {
  const std::string what = fmt::format("'{}': metadata extra.classes", source);
  const nlohmann::json j = io::parse_json(text, what);
  CUDL_CHECK(j.is_array(), "{} is not a list of class names", what);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < j.size(); ++i) {
    CUDL_CHECK(j[i].is_string(), "{}: item {} is not a string, got {}", what, i, io::json_excerpt(j[i]));
    names.push_back(j[i].get<std::string>());
  }
  return names;
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
