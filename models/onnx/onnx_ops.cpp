// Each imported ONNX operator as a layer of the JSON model format (see onnx.hpp for the list).
#include "cudl/models/onnx/onnx_ops.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>

#include "cudl/engine/error.hpp"

namespace cudl::onnx_detail {

namespace {

using json = nlohmann::json;

const std::set<std::string>& ops() {
  static const std::set<std::string> s{"Add",      "AveragePool", "BatchNormalization",
                                       "Clip",     "Concat",      "Constant",
                                       "Conv",     "Div",         "Dropout",
                                       "Flatten",  "Gemm",        "GlobalAveragePool",
                                       "Identity", "LeakyRelu",   "MatMul",
                                       "MaxPool",  "Pad",         "Relu",
                                       "Reshape",  "Sigmoid",     "Softmax",
                                       "Sub",      "Sum",         "Tanh"};
  return s;
}

}  // namespace

bool is_supported_op(const std::string& op_type) { return ops().count(op_type) != 0; }
std::string supported_ops() { return fmt::format("{}", fmt::join(ops(), ", ")); }

void GraphBuilder::count_readers(const onnx::GraphProto& g) {
  for (const auto& node : g.node())
    for (const std::string& in : node.input()) ++readers_[in];
  for (const auto& out : g.output()) ++readers_[out.name()];
}

std::string GraphBuilder::at() const {
  return fmt::format("{}: node {} ('{}', {}, opset {})", where_, index_, node_->name(), node_->op_type(), opset_);
}

void GraphBuilder::check_attributes(const std::set<std::string>& allowed) const {
  for (const auto& a : node_->attribute())
    CUDL_CHECK(allowed.count(a.name()), "{}: attribute '{}' is not supported", at(), a.name());
}

std::int64_t GraphBuilder::attr_int(const std::string& name, std::int64_t fallback) const {
  for (const auto& a : node_->attribute())
    if (a.name() == name) {
      CUDL_CHECK(a.type() == onnx::AttributeProto::INT, "{}: attribute '{}' must be an integer", at(), name);
      return a.i();
    }
  return fallback;
}

float GraphBuilder::attr_float(const std::string& name, float fallback) const {
  for (const auto& a : node_->attribute())
    if (a.name() == name) {
      CUDL_CHECK(a.type() == onnx::AttributeProto::FLOAT && std::isfinite(a.f()),
                 "{}: attribute '{}' must be a finite float", at(), name);
      return a.f();
    }
  return fallback;
}

std::string GraphBuilder::attr_string(const std::string& name, const std::string& fallback) const {
  for (const auto& a : node_->attribute())
    if (a.name() == name) {
      CUDL_CHECK(a.type() == onnx::AttributeProto::STRING, "{}: attribute '{}' must be a string", at(), name);
      return a.s();
    }
  return fallback;
}

std::vector<std::int64_t> GraphBuilder::attr_ints(const std::string& name, std::vector<std::int64_t> fallback) const {
  for (const auto& a : node_->attribute())
    if (a.name() == name) {
      CUDL_CHECK(a.type() == onnx::AttributeProto::INTS, "{}: attribute '{}' must be a list of integers", at(), name);
      return {a.ints().begin(), a.ints().end()};
    }
  return fallback;
}

std::int64_t GraphBuilder::one_value(const std::string& attr, std::int64_t fallback) const {
  const std::size_t n = attr == "pads" ? 4 : 2;
  const std::vector<std::int64_t> v = attr_ints(attr, std::vector<std::int64_t>(n, fallback));
  CUDL_CHECK(v.size() == n && std::all_of(v.begin(), v.end(), [&](std::int64_t x) { return x == v[0]; }),
             "{}: '{}' is [{}]; cudl takes 2-D images with the same value on both axes{}", at(), attr,
             fmt::join(v, ", "), n == 4 ? " and at both ends" : "");
  CUDL_CHECK(v[0] >= 0 && v[0] <= 4096, "{}: '{}' {} is out of range [0, 4096]", at(), attr, v[0]);
  return v[0];
}

bool GraphBuilder::has_input(int k) const { return node_->input_size() > k && !node_->input(k).empty(); }

std::string GraphBuilder::input_layer(int k) {
  CUDL_CHECK(has_input(k), "{}: input {} is missing", at(), k);
  const std::string& t = node_->input(k);
  CUDL_CHECK(!softmax_outputs_.count(t), "{}: reads a Softmax's output; cudl takes Softmax only as the last node",
             at());
  CUDL_CHECK(!pads_.count(t), "{}: reads a Pad's output; cudl folds Pad only into a following Conv or AveragePool",
             at());
  auto it = producer_.find(t);
  if (it != producer_.end()) return it->second;
  CUDL_CHECK(!constants_.count(t), "{}: input {} ('{}') is a constant; cudl takes it only as a layer's weight", at(), k,
             t);
  CUDL_THROW("{}: input {} ('{}') is neither an initializer nor computed by an earlier node (a missing initializer?)",
             at(), k, t);
}

const Decoded& GraphBuilder::constant(int k, const char* what) const {
  CUDL_CHECK(has_input(k), "{}: the {} (input {}) is missing", at(), what, k);
  auto it = constants_.find(node_->input(k));
  CUDL_CHECK(it != constants_.end(),
             "{}: the {} (input {}, '{}') must be an initializer, and the file holds none by "
             "that name (a missing initializer?)",
             at(), what, k, node_->input(k));
  return it->second;
}

// A weight named "layer1.0.conv1.weight" names its layer "layer1.0.conv1" (torch keeps module names
// on unfused weights); else the node's scope path "/layer1/layer1.0/conv1/Conv" gives the same;
// else the op type and node index.
std::string GraphBuilder::layer_name(const std::string& weight_tensor) const {
  std::string name;
  if (weight_tensor.size() > 7 && weight_tensor.ends_with(".weight"))
    name = weight_tensor.substr(0, weight_tensor.size() - 7);
  if (name.empty() || names_.count(name)) {
    name.clear();
    std::vector<std::string> parts;
    std::string part;
    for (char c : node_->name() + "/") {
      if (c != '/') {
        part += c;
        continue;
      }
      if (!part.empty()) {
        if (!parts.empty() && part.starts_with(parts.back() + ".")) parts.pop_back();
        parts.push_back(part);
      }
      part.clear();
    }
    if (parts.size() > 1 && parts.back() == node_->op_type()) parts.pop_back();
    name = fmt::format("{}", fmt::join(parts, "."));
  }
  const bool printable =
      std::none_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
  if (name.empty() || !printable || name.size() > 200 || names_.count(name))
    name = fmt::format("{}_{}", node_->op_type(), index_);
  return name;
}

void GraphBuilder::add_layer(json j, const std::vector<std::string>& inputs) {
  const std::string name = j["name"];
  if (!(inputs.size() == 1 && inputs[0] == last_)) j["inputs"] = inputs;
  position_[name] = layers_.size();
  layers_.push_back(std::move(j));
  names_.insert(name);
  producer_[node_->output(0)] = name;
  last_ = name;
}

void GraphBuilder::add_weight(const std::string& name, const Shape& shape, std::vector<float> values) {
  weights_.push_back({name, shape, std::move(values)});
}

void GraphBuilder::refuse_extra_outputs() const {
  for (int k = 1; k < node_->output_size(); ++k)
    CUDL_CHECK(node_->output(k).empty(), "{}: output {} ('{}') is not supported (inference graphs only)", at(), k,
               node_->output(k));
}

void GraphBuilder::add_node(const onnx::NodeProto& node, int index) {
  node_ = &node;
  index_ = index;
  const std::string& op = node.op_type();
  // Every operator read here has a first output and (but Constant) a first input; checked once,
  // before anything reads them (protobuf's accessors do not check the index).
  CUDL_CHECK(node.output_size() >= 1 && !node.output(0).empty(), "{}: has no output", at());
  CUDL_CHECK(op == "Constant" || has_input(0), "{}: input 0 is missing", at());
  if (op != "Dropout" && op != "MaxPool" && op != "BatchNormalization") refuse_extra_outputs();
  if (op == "Conv") return conv();
  if (op == "MaxPool" || op == "AveragePool") return pool(op == "MaxPool");
  if (op == "Gemm") return gemm();
  if (op == "MatMul") return matmul();
  if (op == "Add" || op == "Sum") return add();
  if (op == "BatchNormalization") return batchnorm();
  if (op == "Clip") return clip();
  if (op == "Reshape") return reshape();
  if (op == "Dropout") return dropout();
  if (op == "Pad") return pad();
  if (op == "Sub" || op == "Div") return sub_div(op == "Sub");
  if (op == "Constant") return constant_node();
  if (op == "Identity" || op == "Softmax") {
    check_attributes(op == "Softmax" ? std::set<std::string>{"axis"} : std::set<std::string>{});
    if (op == "Softmax") {
      const std::int64_t axis = attr_int("axis", opset_ >= 13 ? -1 : 1);
      CUDL_CHECK(axis == 1 || axis == -1, "{}: axis {} (cudl takes Softmax over the classes of [N, K] logits)", at(),
                 axis);
      softmax_outputs_.insert(node.output(0));
      dropped_softmax_ = true;
    }
    if (auto c = constants_.find(node.input(0)); op == "Identity" && c != constants_.end()) {
      constants_[node.output(0)] = c->second;
      return;
    }
    producer_[node.output(0)] = input_layer(0);
    return;
  }
  if (op == "Concat") {
    check_attributes({"axis"});
    const std::int64_t axis = attr_int("axis", 1);
    CUDL_CHECK(axis == 1 || axis == -3, "{}: axis {} (cudl joins images along the channels, axis 1)", at(), axis);
  } else if (op == "Flatten") {
    check_attributes({"axis"});
    CUDL_CHECK(attr_int("axis", 1) == 1, "{}: axis {} (cudl flattens [N, ...] to [N, features], axis 1)", at(),
               attr_int("axis", 1));
  } else {
    check_attributes(op == "LeakyRelu" ? std::set<std::string>{"alpha"} : std::set<std::string>{});
  }
  static const std::map<std::string, std::string> simple{{"Relu", "relu"},
                                                         {"Sigmoid", "sigmoid"},
                                                         {"Tanh", "tanh"},
                                                         {"LeakyRelu", "leaky_relu"},
                                                         {"Flatten", "flatten"},
                                                         {"Concat", "concat"},
                                                         {"GlobalAveragePool", "global_avg_pool2d"}};
  json j{{"type", simple.at(op)}, {"name", layer_name("")}};
  if (op == "LeakyRelu") j["negative_slope"] = attr_float("alpha", 0.01f);
  std::vector<std::string> inputs;
  for (int k = 0; k < (op == "Concat" ? node.input_size() : 1); ++k) inputs.push_back(input_layer(k));
  add_layer(std::move(j), inputs);
}

json GraphBuilder::finish(const std::string& output) {
  auto it = producer_.find(output);
  CUDL_CHECK(it != producer_.end(), "{}: the graph's output '{}' is not computed by any supported node", where_,
             output);
  CUDL_CHECK(it->second == last_, "{}: the graph's output '{}' is computed by layer '{}', not by the last node ('{}')",
             where_, output, it->second, last_);
  CUDL_CHECK(!layers_.empty(), "{}: the graph computes nothing", where_);
  return layers_;
}

}  // namespace cudl::onnx_detail
