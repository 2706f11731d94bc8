#include "cudl/models/zoo/model_file.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/json.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/layers/normalization.hpp"

namespace cudl {

namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// Sizes a file may ask for: large enough for any real network, small enough that products of
// them (a weight's element count) cannot overflow before the shapes are checked.
constexpr std::int64_t kMaxChannels = 1 << 20;
constexpr std::int64_t kMaxKernel = 4096;
constexpr std::int64_t kMaxSpatial = 1 << 16;
// Far more than any real chain (VGG19 has 46); a file of millions would only exhaust setup time.
constexpr std::size_t kMaxLayers = 10000;
// Far more than any real model file's text.
constexpr std::uintmax_t kMaxModelFileBytes = 64u << 20;

// One sample's element count must stay far below what overflows (or fits any memory): a file whose
// shapes multiply past 2^63 would otherwise print as valid with a wrapped count.
constexpr std::int64_t kMaxSampleElements = std::int64_t{1} << 40;

std::string batch_shape(const Shape& s);

void check_sample_size(const Shape& s, const std::string& where) {
  std::int64_t n = 1;
  for (int i = 1; i < s.rank(); ++i) {
    CUDL_CHECK(s[i] >= 0 && (s[i] == 0 || n <= kMaxSampleElements / s[i]),
               "{}: the shape {} holds more than 2^40 elements per sample", where, batch_shape(s));
    n *= s[i];
  }
}

// "[N,16,32,32]": the batch dimension is whatever the caller feeds.
std::string batch_shape(const Shape& s) {
  std::string out = "[N";
  for (int i = 1; i < s.rank(); ++i) out += fmt::format(",{}", s[i]);
  return out + "]";
}

// Where an error happened: the file, and the layer when there is one.
struct Where {
  const std::string& source;
  int index = -1;
  std::string name, type;

  std::string str() const {
    if (index < 0) return fmt::format("model file '{}'", source);
    return fmt::format("model file '{}': layer {} ('{}', {})", source, index, name, type.empty() ? "?" : type);
  }
};

// The fields each layer type takes (besides "type" and "name").
const std::map<std::string, std::set<std::string>>& layer_fields() {
  static const std::map<std::string, std::set<std::string>> fields{
      {"conv2d",
       {"out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias", "in_channels", "init"}},
      {"conv_transpose2d",
       {"out_channels", "kernel_size", "stride", "padding", "output_padding", "dilation", "bias", "in_channels"}},
      {"linear", {"out_features", "bias", "in_features", "init"}},
      {"max_pool2d", {"kernel_size", "stride", "padding"}},
      {"avg_pool2d", {"kernel_size", "stride", "padding"}},
      {"relu", {}},
      {"relu6", {}},
      {"sigmoid", {}},
      {"tanh", {}},
      {"flatten", {}},
      {"leaky_relu", {"negative_slope"}},
      {"dropout", {"p"}},
      {"batchnorm2d", {"eps", "momentum", "num_features"}},
      {"normalize", {"mean", "std", "preset"}},
      {"add", {}},
      {"concat", {}},
      {"global_avg_pool2d", {}},
  };
  return fields;
}

std::string known_types() {
  std::vector<std::string> names;
  for (const auto& [type, fields] : layer_fields()) names.push_back(type);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::int64_t get_int(const json& j, const char* key, const Where& w, std::int64_t lo, std::int64_t hi,
                     std::optional<std::int64_t> fallback) {
  auto it = j.find(key);
  if (it == j.end()) {
    CUDL_CHECK(fallback.has_value(), "{}: '{}' is required", w.str(), key);
    return *fallback;
  }
  CUDL_CHECK(it->is_number_integer(), "{}: '{}' must be a whole number in [{}, {}], got {}", w.str(), key, lo, hi,
             io::json_excerpt(*it));
  // A JSON integer may be unsigned and above int64's range; read it as such before comparing.
  if (it->is_number_unsigned() && it->get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
    CUDL_THROW("{}: '{}' must be a whole number in [{}, {}], got {}", w.str(), key, lo, hi, io::json_excerpt(*it));
  const auto v = it->get<std::int64_t>();
  CUDL_CHECK(v >= lo && v <= hi, "{}: '{}' must be a whole number in [{}, {}], got {}", w.str(), key, lo, hi, v);
  return v;
}

double get_number(const json& j, const char* key, const Where& w, double lo, double hi, bool hi_open, double fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  CUDL_CHECK(it->is_number(), "{}: '{}' must be a number, got {}", w.str(), key, io::json_excerpt(*it));
  const auto v = it->get<double>();
  CUDL_CHECK(std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi),
             "{}: '{}' must be a finite number in [{}, {}{}, got {}", w.str(), key, lo, hi, hi_open ? ")" : "]",
             io::json_excerpt(*it));
  return v;
}

bool get_bool(const json& j, const char* key, const Where& w, bool fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  CUDL_CHECK(it->is_boolean(), "{}: '{}' must be true or false, got {}", w.str(), key, io::json_excerpt(*it));
  return it->get<bool>();
}

InitScheme get_init(const json& j, const Where& w, InitScheme fallback) {
  auto it = j.find("init");
  if (it == j.end()) return fallback;
  CUDL_CHECK(it->is_string() && (*it == "pytorch" || *it == "vgg"), "{}: 'init' must be \"pytorch\" or \"vgg\", got {}",
             w.str(), io::json_excerpt(*it));
  return *it == "vgg" ? InitScheme::vgg : InitScheme::pytorch;
}

std::array<float, 3> get_triple(const json& j, const char* key, const Where& w, bool positive) {
  auto it = j.find(key);
  CUDL_CHECK(it != j.end(), "{}: '{}' is required (three numbers, one per channel), or give \"preset\": \"imagenet\"",
             w.str(), key);
  CUDL_CHECK(it->is_array() && it->size() == 3, "{}: '{}' must be a list of three numbers, got {}", w.str(), key,
             io::json_excerpt(*it));
  std::array<float, 3> out{};
  for (std::size_t c = 0; c < 3; ++c) {
    const json& v = (*it)[c];
    CUDL_CHECK(v.is_number() && std::isfinite(v.get<double>()) && (!positive || v.get<double>() > 0),
               "{}: '{}' must hold finite numbers{}, got {}", w.str(), key, positive ? " > 0" : "",
               io::json_excerpt(*it));
    out[c] = v.get<float>();
  }
  return out;
}

// The channel count the shape flowing in gives `w`'s layer; `what` says why it needs one.
std::int64_t input_channels(const Shape& in, const Where& w) {
  CUDL_CHECK(in.rank() == 4, "{}: needs an image input [N, C, H, W], but the input is {}{}", w.str(), batch_shape(in),
             in.rank() == 2 ? " (after a flatten or linear layer)" : "");
  return in[1];
}

// An optional declared size (in_channels...) must agree with the shape flowing in.
void check_declared(const json& j, const char* key, std::int64_t actual, const Shape& in, const Where& w) {
  if (!j.contains(key)) return;
  const std::int64_t declared = get_int(j, key, w, 1, kMaxChannels, std::nullopt);
  CUDL_CHECK(declared == actual, "{}: '{}' is {} but its input {} has {}", w.str(), key, declared, batch_shape(in),
             actual);
}

Conv2dParams conv_params(const json& j, const Where& w) {
  Conv2dParams p;
  p.stride_h = p.stride_w = static_cast<int>(get_int(j, "stride", w, 1, kMaxKernel, 1));
  p.pad_h = p.pad_w = static_cast<int>(get_int(j, "padding", w, 0, kMaxKernel, 0));
  p.dilation_h = p.dilation_w = static_cast<int>(get_int(j, "dilation", w, 1, kMaxKernel, 1));
  return p;
}

LayerPtr make_layer(const json& j, const std::string& type, const Shape& in, InitScheme default_init, const Where& w) {
  if (type == "conv2d") {
    const std::int64_t c = input_channels(in, w);
    check_declared(j, "in_channels", c, in, w);
    const auto k = get_int(j, "out_channels", w, 1, kMaxChannels, std::nullopt);
    const auto r = static_cast<int>(get_int(j, "kernel_size", w, 1, kMaxKernel, std::nullopt));
    Conv2dParams p = conv_params(j, w);
    // torch.nn.Conv2d's groups: weight [out_channels, in_channels/groups, k, k].
    p.groups = static_cast<int>(get_int(j, "groups", w, 1, kMaxChannels, 1));
    CUDL_CHECK(c % p.groups == 0 && k % p.groups == 0,
               "{}: 'groups' ({}) must divide both the input channels ({}, from input {}) and 'out_channels' ({})",
               w.str(), p.groups, c, batch_shape(in), k);
    return std::make_unique<Conv2d>(c, k, r, p, get_bool(j, "bias", w, true), get_init(j, w, default_init));
  }
  if (type == "conv_transpose2d") {
    const std::int64_t c = input_channels(in, w);
    check_declared(j, "in_channels", c, in, w);
    const auto k = get_int(j, "out_channels", w, 1, kMaxChannels, std::nullopt);
    const auto r = static_cast<int>(get_int(j, "kernel_size", w, 1, kMaxKernel, std::nullopt));
    const Conv2dParams p = conv_params(j, w);
    const auto op = static_cast<int>(get_int(j, "output_padding", w, 0, kMaxKernel, 0));
    // PyTorch's rule: the output padding must be smaller than the stride or the dilation.
    CUDL_CHECK(op < std::max(p.stride_h, p.dilation_h),
               "{}: 'output_padding' ({}) must be smaller than the stride ({}) or the dilation ({})", w.str(), op,
               p.stride_h, p.dilation_h);
    return std::make_unique<ConvTranspose2d>(c, k, r, p, op, get_bool(j, "bias", w, true));
  }
  if (type == "linear") {
    CUDL_CHECK(in.rank() == 2,
               "{}: needs a flat input [N, features], but the input is {}: add a flatten layer before it", w.str(),
               batch_shape(in));
    check_declared(j, "in_features", in[1], in, w);
    const auto k = get_int(j, "out_features", w, 1, kMaxChannels, std::nullopt);
    return std::make_unique<Linear>(in[1], k, get_bool(j, "bias", w, true), get_init(j, w, default_init));
  }
  if (type == "max_pool2d" || type == "avg_pool2d") {
    (void)input_channels(in, w);
    const auto k = static_cast<int>(get_int(j, "kernel_size", w, 1, kMaxKernel, std::nullopt));
    const auto s = static_cast<int>(get_int(j, "stride", w, 1, kMaxKernel, k));
    const auto p = static_cast<int>(get_int(j, "padding", w, 0, kMaxKernel, 0));
    CUDL_CHECK(2 * p <= k, "{}: 'padding' ({}) must be at most half the kernel size ({})", w.str(), p, k);
    if (type == "max_pool2d") return std::make_unique<MaxPool2d>(k, s, p);
    return std::make_unique<AvgPool2d>(k, s, p);
  }
  if (type == "relu") return std::make_unique<ActivationLayer>(Activation::relu);
  if (type == "relu6") return std::make_unique<ActivationLayer>(Activation::relu6);
  if (type == "sigmoid") return std::make_unique<ActivationLayer>(Activation::sigmoid);
  if (type == "tanh") return std::make_unique<ActivationLayer>(Activation::tanh);
  if (type == "leaky_relu")
    return std::make_unique<ActivationLayer>(
        Activation::leaky_relu, static_cast<float>(get_number(j, "negative_slope", w, 0.0, 1e6, false, 0.01)));
  if (type == "flatten") {
    CUDL_CHECK(in.rank() >= 2, "{}: input {} has nothing to flatten", w.str(), batch_shape(in));
    return std::make_unique<Flatten>();
  }
  if (type == "dropout")
    return std::make_unique<Dropout>(static_cast<float>(get_number(j, "p", w, 0.0, 1.0, /*hi_open=*/true, 0.5)));
  if (type == "batchnorm2d") {
    const std::int64_t c = input_channels(in, w);
    check_declared(j, "num_features", c, in, w);
    return std::make_unique<BatchNorm2d>(c, static_cast<float>(get_number(j, "eps", w, 1e-12, 1.0, false, 1e-5)),
                                         static_cast<float>(get_number(j, "momentum", w, 0.0, 1.0, false, 0.1)));
  }
  if (type == "normalize") {
    CUDL_CHECK(input_channels(in, w) == 3, "{}: normalizes RGB input [N, 3, H, W], but the input is {}", w.str(),
               batch_shape(in));
    if (auto it = j.find("preset"); it != j.end()) {
      CUDL_CHECK(*it == "imagenet", "{}: 'preset' must be \"imagenet\", got {}", w.str(), io::json_excerpt(*it));
      CUDL_CHECK(!j.contains("mean") && !j.contains("std"), "{}: give either 'preset' or 'mean' and 'std', not both",
                 w.str());
      return Normalize::imagenet();
    }
    return std::make_unique<Normalize>(get_triple(j, "mean", w, false), get_triple(j, "std", w, true));
  }
  if (type == "add") return std::make_unique<Add>();
  if (type == "concat") return std::make_unique<Concat>();
  if (type == "global_avg_pool2d") {
    (void)input_channels(in, w);
    return std::make_unique<GlobalAvgPool2d>();
  }
  CUDL_THROW("{}: unknown type '{}'; known types: {}", w.str(), type, known_types());
}

// The layer's "inputs" (names of earlier layers, or "input"), or none: it reads the previous one.
std::vector<std::string> layer_inputs(const json& j, const std::map<std::string, Shape>& shapes, const Where& w) {
  std::vector<std::string> inputs;
  auto it = j.find("inputs");
  if (it == j.end()) return inputs;
  CUDL_CHECK(it->is_array() && !it->empty() && it->size() <= 64,
             "{}: 'inputs' must be a list of 1 to 64 layer names (earlier layers, or \"input\"), got {}", w.str(),
             io::json_excerpt(*it));
  for (const json& name : *it) {
    CUDL_CHECK(name.is_string() && shapes.contains(name.get<std::string>()),
               "{}: input {} is not an earlier layer's name (nor \"input\", the network's input)", w.str(),
               io::json_excerpt(name));
    inputs.push_back(name.get<std::string>());
  }
  return inputs;
}

// A float as the shortest decimal that reads back as the same float ("0.485", not the double
// 0.48500001430511475), so exported files stay readable.
double short_float(float v) { return std::stod(fmt::format("{}", v)); }
ordered_json short_floats(const std::array<float, 3>& v) {
  return {short_float(v[0]), short_float(v[1]), short_float(v[2])};
}

std::string read_text(const std::string& path) {
  std::error_code ec;
  CUDL_CHECK(std::filesystem::is_regular_file(path, ec), "model file '{}': not a readable file", path);
  const std::uintmax_t bytes = std::filesystem::file_size(path, ec);
  CUDL_CHECK(!ec && bytes <= kMaxModelFileBytes, "model file '{}': {} bytes; a model file may have at most {} MiB",
             path, bytes, kMaxModelFileBytes >> 20);
  std::ifstream f(path, std::ios::binary);
  CUDL_CHECK(f.good(), "model file '{}': cannot be opened", path);
  std::ostringstream text;
  text << f.rdbuf();
  return text.str();
}

}  // namespace

std::string default_dataset_for_input(const Shape& input) {
  if (input == Shape{1, 28, 28}) return "mnist";
  if (input == Shape{3, 32, 32}) return "cifar10";
  return "folder";
}

bool is_model_file(const std::string& name) { return name.size() > 5 && name.ends_with(".json"); }

ModelFile parse_model_json(const std::string& text, const std::string& source) {
  return model_from_json(io::parse_json(text, Where{source, -1, "", ""}.str()), source);
}

ModelFile model_from_json(const nlohmann::json& doc, const std::string& source) {
  const Where top{source, -1, "", ""};
  CUDL_CHECK(doc.is_object(), "{}: must hold a JSON object with \"input\" and \"layers\"", top.str());
  for (const auto& [key, value] : doc.items())
    CUDL_CHECK(key == "name" || key == "description" || key == "input" || key == "init" || key == "layers",
               "{}: unknown key '{}' (expected name, description, input, init, layers)", top.str(), key);

  ModelFile out;
  out.spec.name = std::filesystem::path(source).stem().string();
  if (auto it = doc.find("name"); it != doc.end()) {
    CUDL_CHECK(it->is_string() && !it->get<std::string>().empty(), "{}: 'name' must be a non-empty string", top.str());
    out.spec.name = it->get<std::string>();
  }
  out.spec.description = "from " + source;
  if (auto it = doc.find("description"); it != doc.end()) {
    CUDL_CHECK(it->is_string(), "{}: 'description' must be a string", top.str());
    out.spec.description = it->get<std::string>();
  }
  auto input = doc.find("input");
  CUDL_CHECK(input != doc.end(), "{}: 'input' is required: one sample's shape [C, H, W], e.g. [3, 64, 64]", top.str());
  CUDL_CHECK(input->is_array() && input->size() == 3, "{}: 'input' must be one sample's shape [C, H, W], got {}",
             top.str(), io::json_excerpt(*input));
  Shape shape{1, 0, 0, 0};
  for (int d = 0; d < 3; ++d) {
    const json& v = (*input)[static_cast<std::size_t>(d)];
    const std::int64_t hi = d == 0 ? kMaxChannels : kMaxSpatial;
    CUDL_CHECK(v.is_number_integer() && v.get<std::int64_t>() >= 1 && v.get<std::int64_t>() <= hi,
               "{}: 'input' must be [C, H, W] with C in [1, {}] and H, W in [1, {}], got {}", top.str(), kMaxChannels,
               kMaxSpatial, io::json_excerpt(*input));
    shape[d + 1] = v.get<std::int64_t>();
  }
  out.spec.input = Shape{shape[1], shape[2], shape[3]};
  check_sample_size(shape, top.str() + ": 'input'");
  const InitScheme init = get_init(doc, top, InitScheme::pytorch);

  auto layers = doc.find("layers");
  CUDL_CHECK(layers != doc.end() && layers->is_array() && !layers->empty(),
             "{}: 'layers' must be a non-empty list of layer objects", top.str());
  CUDL_CHECK(layers->size() <= kMaxLayers, "{}: 'layers' lists {} layers; a model file may have at most {}", top.str(),
             layers->size(), kMaxLayers);
  std::set<std::string> names;
  std::map<std::string, Shape> shapes{{"input", shape}};  // each layer's output, for "inputs"
  for (std::size_t i = 0; i < layers->size(); ++i) {
    const json& j = (*layers)[i];
    Where w{source, static_cast<int>(i), std::to_string(i), ""};
    CUDL_CHECK(j.is_object(), "{}: must be an object with a \"type\", got {}", w.str(), io::json_excerpt(j));
    if (auto it = j.find("name"); it != j.end()) {
      CUDL_CHECK(it->is_string() && !it->get<std::string>().empty(), "{}: 'name' must be a non-empty string, got {}",
                 w.str(), io::json_excerpt(*it));
      w.name = it->get<std::string>();
      // A name is printed in tables and messages, one per line: no control characters, no huge names.
      const bool printable = std::none_of(w.name.begin(), w.name.end(),
                                          [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
      CUDL_CHECK(printable && w.name.size() <= 256,
                 "{}: 'name' must be at most 256 characters without control characters, got {}",
                 Where{source, static_cast<int>(i), std::to_string(i), ""}.str(), io::json_excerpt(*it));
    }
    auto type_it = j.find("type");
    CUDL_CHECK(type_it != j.end() && type_it->is_string(), "{}: 'type' is required (one of {})", w.str(),
               known_types());
    w.type = type_it->get<std::string>();
    auto fields = layer_fields().find(w.type);
    CUDL_CHECK(fields != layer_fields().end(), "{}: unknown type '{}'; known types: {}", w.str(), w.type,
               known_types());
    for (const auto& [key, value] : j.items())
      CUDL_CHECK(
          key == "type" || key == "name" || key == "inputs" || fields->second.count(key),
          "{}: unknown field '{}' (a {} takes: {})", w.str(), key, w.type,
          fields->second.empty() ? std::string("no fields") : fmt::format("{}", fmt::join(fields->second, ", ")));
    CUDL_CHECK(w.name != "input" && names.insert(w.name).second,
               "{}: the name '{}' is used by an earlier layer (or is \"input\", the network's input)", w.str(), w.name);
    const std::vector<std::string> inputs = layer_inputs(j, shapes, w);
    std::vector<Shape> in_shapes;
    for (const std::string& name : inputs) in_shapes.push_back(shapes.at(name));
    if (!inputs.empty()) shape = in_shapes.front();
    LayerPtr layer = make_layer(j, w.type, shape, init, w);
    auto* merge = dynamic_cast<MergeLayer*>(layer.get());
    CUDL_CHECK(in_shapes.size() <= 1 || merge != nullptr,
               "{}: a {} takes one input, not {} (add and concat join several)", w.str(), w.type, in_shapes.size());
    try {
      shape = merge != nullptr && !in_shapes.empty() ? merge->output_shape(in_shapes) : layer->output_shape(shape);
    } catch (const Error& e) {
      // The layer's own message, without its source location (this error gets its own).
      std::string inner = e.what();
      if (const auto at = inner.rfind(" ["); at != std::string::npos && inner.ends_with(']')) inner.resize(at);
      CUDL_THROW("{}: its input {} does not fit: {}", w.str(), batch_shape(shape), inner);
    }
    check_sample_size(shape, w.str());
    shapes[w.name] = shape;
    out.model.add(w.name, std::move(layer), inputs);
  }
  const Shape output = shape;
  out.spec.num_classes = output.rank() == 2 ? static_cast<int>(output[1]) : 0;
  return out;
}

ModelFile read_model_file(const std::string& path) { return parse_model_json(read_text(path), path); }

ordered_json model_to_json(const Sequential& model, const ModelSpec& spec) {
  ordered_json doc;
  doc["name"] = spec.name;
  if (!spec.description.empty()) doc["description"] = spec.description;
  doc["input"] = {spec.input[0], spec.input[1], spec.input[2]};
  ordered_json layers = ordered_json::array();
  auto init_name = [](InitScheme s) { return s == InitScheme::vgg ? "vgg" : "pytorch"; };
  for (std::size_t index = 0; index < model.layers().size(); ++index) {
    const auto& [name, ptr] = model.layers()[index];
    const Layer* layer = ptr.get();
    ordered_json j;
    if (auto* c = dynamic_cast<const Conv2d*>(layer)) {
      j = {{"type", "conv2d"},
           {"name", name},
           {"in_channels", c->in_channels()},
           {"out_channels", c->out_channels()},
           {"kernel_size", c->kernel_size()},
           {"stride", c->params().stride_h},
           {"padding", c->params().pad_h},
           {"dilation", c->params().dilation_h},
           {"bias", c->has_bias()},
           {"init", init_name(c->init())}};
      if (c->groups() != 1) j["groups"] = c->groups();  // written only when set: groups=1 files stay as they were
    } else if (auto* t = dynamic_cast<const ConvTranspose2d*>(layer)) {
      j = {{"type", "conv_transpose2d"},         {"name", name},
           {"in_channels", t->in_channels()},    {"out_channels", t->out_channels()},
           {"kernel_size", t->kernel_size()},    {"stride", t->params().stride_h},
           {"padding", t->params().pad_h},       {"output_padding", t->output_padding()},
           {"dilation", t->params().dilation_h}, {"bias", t->has_bias()}};
    } else if (auto* l = dynamic_cast<const Linear*>(layer)) {
      j = {{"type", "linear"},
           {"name", name},
           {"in_features", l->in_features()},
           {"out_features", l->out_features()},
           {"bias", l->has_bias()},
           {"init", init_name(l->init())}};
    } else if (auto* m = dynamic_cast<const MaxPool2d*>(layer)) {
      j = {{"type", "max_pool2d"},
           {"name", name},
           {"kernel_size", m->params().kernel_h},
           {"stride", m->params().stride_h},
           {"padding", m->params().pad_h}};
    } else if (auto* a = dynamic_cast<const AvgPool2d*>(layer)) {
      j = {{"type", "avg_pool2d"},
           {"name", name},
           {"kernel_size", a->params().kernel_h},
           {"stride", a->params().stride_h},
           {"padding", a->params().pad_h}};
    } else if (auto* act = dynamic_cast<const ActivationLayer*>(layer)) {
      j = {{"type", std::string(activation_name(act->kind()))}, {"name", name}};
      if (act->kind() == Activation::leaky_relu) j["negative_slope"] = short_float(act->negative_slope());
    } else if (dynamic_cast<const Flatten*>(layer)) {
      j = {{"type", "flatten"}, {"name", name}};
    } else if (auto* d = dynamic_cast<const Dropout*>(layer)) {
      j = {{"type", "dropout"}, {"name", name}, {"p", short_float(d->p())}};
    } else if (auto* b = dynamic_cast<const BatchNorm2d*>(layer)) {
      j = {{"type", "batchnorm2d"},
           {"name", name},
           {"num_features", b->channels()},
           {"eps", short_float(b->eps())},
           {"momentum", short_float(b->momentum())}};
    } else if (auto* n = dynamic_cast<const Normalize*>(layer)) {
      j = {{"type", "normalize"}, {"name", name}, {"mean", short_floats(n->mean())}, {"std", short_floats(n->std())}};
    } else if (dynamic_cast<const Add*>(layer)) {
      j = {{"type", "add"}, {"name", name}};
    } else if (dynamic_cast<const Concat*>(layer)) {
      j = {{"type", "concat"}, {"name", name}};
    } else if (dynamic_cast<const GlobalAvgPool2d*>(layer)) {
      j = {{"type", "global_avg_pool2d"}, {"name", name}};
    } else {
      CUDL_THROW("model file: layer '{}' is a {}, which the JSON model format cannot describe", name, layer->type());
    }
    if (const std::vector<std::string> inputs = model.input_names(index); !inputs.empty()) j["inputs"] = inputs;
    layers.push_back(std::move(j));
  }
  doc["layers"] = std::move(layers);
  return doc;
}

void export_model_file(const std::string& path, const Sequential& model, const ModelSpec& spec) {
  // One layer per line: a file meant to be copied and edited reads best as the chain it is.
  const ordered_json doc = model_to_json(model, spec);
  std::string text = "{\n";
  for (const auto& [key, value] : doc.items()) {
    if (key == "layers") continue;
    text += fmt::format("  {}: {},\n", ordered_json(key).dump(), value.dump());
  }
  text += "  \"layers\": [\n";
  const ordered_json& layers = doc["layers"];
  for (std::size_t i = 0; i < layers.size(); ++i)
    text += fmt::format("    {}{}\n", layers[i].dump(), i + 1 < layers.size() ? "," : "");
  text += "  ]\n}\n";
  write_file_atomically(path, text);
}

}  // namespace cudl
