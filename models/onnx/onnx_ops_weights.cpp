// The ONNX operators that carry weights or fold into a neighbour (onnx_ops.cpp has the rest).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>

#include "cudl/engine/error.hpp"
#include "cudl/models/onnx/onnx_ops.hpp"

namespace cudl::onnx_detail {

namespace {

using json = nlohmann::json;

std::vector<float> transpose(const std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
  std::vector<float> out(v.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      out[static_cast<std::size_t>(c * rows + r)] = v[static_cast<std::size_t>(r * cols + c)];
  return out;
}

}  // namespace

void GraphBuilder::conv() {
  check_attributes({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"});
  const Decoded& w = constant(1, "weight");
  CUDL_CHECK(w.is_float && w.shape.rank() == 4 && w.shape[2] == w.shape[3] && w.shape.numel() > 0,
             "{}: the weight is {}; cudl takes [out, in, k, k] floats (2-D, square kernels)", at(), w.shape);
  // Grouped (and depthwise) convolutions: the weight is [out, in/group, k, k], as Conv2d's.
  const std::int64_t group = attr_int("group", 1);
  CUDL_CHECK(group >= 1 && w.shape[0] % group == 0, "{}: group {} does not divide the {} output channels", at(), group,
             w.shape[0]);
  const std::string auto_pad = attr_string("auto_pad", "NOTSET");
  CUDL_CHECK(auto_pad == "NOTSET" || auto_pad == "VALID", "{}: auto_pad {} is not supported (give explicit pads)", at(),
             auto_pad);
  CUDL_CHECK(one_value("kernel_shape", w.shape[2]) == w.shape[2], "{}: kernel_shape does not match the weight {}", at(),
             w.shape);
  std::int64_t padding = one_value("pads", 0);
  std::string x = has_input(0) ? node_->input(0) : std::string();
  if (auto p = pads_.find(x); p != pads_.end()) {  // a zero Pad before it: the same as more padding
    padding += p->second.pad;
    x = p->second.source;
  }
  auto src = producer_.find(x);
  const std::string in = src != producer_.end() ? src->second : input_layer(0);
  json j{{"type", "conv2d"},
         {"name", layer_name(node_->input(1))},
         {"in_channels", w.shape[1] * group},
         {"out_channels", w.shape[0]},
         {"kernel_size", w.shape[2]},
         {"stride", one_value("strides", 1)},
         {"padding", padding},
         {"dilation", one_value("dilations", 1)},
         {"bias", has_input(2)}};
  if (group != 1) j["groups"] = group;
  const std::string name = j["name"];
  add_weight(name + ".weight", w.shape, w.f);
  if (has_input(2)) {
    const Decoded& b = constant(2, "bias");
    CUDL_CHECK(b.is_float && b.shape == Shape{w.shape[0]}, "{}: the bias is {}, expected [{}]", at(), b.shape,
               w.shape[0]);
    add_weight(name + ".bias", b.shape, b.f);
  }
  add_layer(std::move(j), {in});
}

void GraphBuilder::pool(bool max) {
  if (max)
    check_attributes({"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"});
  else
    check_attributes({"auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"});
  for (int k = 1; k < node_->output_size(); ++k)
    CUDL_CHECK(node_->output(k).empty(), "{}: the indices output is not supported", at());
  const std::string auto_pad = attr_string("auto_pad", "NOTSET");
  CUDL_CHECK(auto_pad == "NOTSET" || auto_pad == "VALID", "{}: auto_pad {} is not supported (give explicit pads)", at(),
             auto_pad);
  CUDL_CHECK(attr_int("ceil_mode", 0) == 0, "{}: ceil_mode 1 is not supported (cudl rounds output sizes down)", at());
  CUDL_CHECK(one_value("dilations", 1) == 1, "{}: dilated pooling is not supported", at());
  CUDL_CHECK(attr_int("storage_order", 0) == 0, "{}: storage_order 1 is not supported", at());
  CUDL_CHECK(one_value("kernel_shape", -1) >= 1, "{}: kernel_shape is required", at());
  std::int64_t padding = one_value("pads", 0);
  CUDL_CHECK(max || padding == 0 || attr_int("count_include_pad", 0) == 1,
             "{}: count_include_pad 0 with padding is not supported (cudl's average counts the padding, as "
             "PyTorch's default)",
             at());
  std::string x = node_->input(0);
  if (auto p = pads_.find(x); !max && padding == 0 && p != pads_.end()) {
    padding = p->second.pad;  // zeros padded, then averaged: what counting the padding computes
    x = p->second.source;
  }
  auto src = producer_.find(x);
  const std::string in = src != producer_.end() && !pads_.count(x) ? src->second : input_layer(0);
  add_layer({{"type", max ? "max_pool2d" : "avg_pool2d"},
             {"name", layer_name("")},
             {"kernel_size", one_value("kernel_shape", 1)},
             {"stride", one_value("strides", 1)},
             {"padding", padding}},
            {in});
}

void GraphBuilder::gemm() {
  check_attributes({"alpha", "beta", "transA", "transB"});
  CUDL_CHECK(attr_int("transA", 0) == 0, "{}: transA 1 is not supported", at());
  const std::string in = input_layer(0);
  const Decoded& b = constant(1, "weight");
  CUDL_CHECK(b.is_float && b.shape.rank() == 2 && b.shape.numel() > 0, "{}: the weight is {}; expected 2-D floats",
             at(), b.shape);
  const bool trans_b = attr_int("transB", 0) != 0;
  const std::int64_t out = trans_b ? b.shape[0] : b.shape[1], features = trans_b ? b.shape[1] : b.shape[0];
  std::vector<float> w = trans_b ? b.f : transpose(b.f, b.shape[0], b.shape[1]);
  const float alpha = attr_float("alpha", 1.0f), beta = attr_float("beta", 1.0f);
  for (float& v : w) v *= alpha;
  json j{{"type", "linear"},
         {"name", layer_name(node_->input(1))},
         {"in_features", features},
         {"out_features", out},
         {"bias", has_input(2)}};
  const std::string name = j["name"];
  add_weight(name + ".weight", Shape{out, features}, std::move(w));
  if (has_input(2)) {
    const Decoded& c = constant(2, "bias");
    CUDL_CHECK(c.is_float && c.numel() == out && (c.shape.rank() == 1 || (c.shape.rank() == 2 && c.shape[0] == 1)),
               "{}: the bias C is {}; cudl takes [{}] (or [1, {}])", at(), c.shape, out, out);
    std::vector<float> bias = c.f;
    for (float& v : bias) v *= beta;
    add_weight(name + ".bias", Shape{out}, std::move(bias));
  }
  add_layer(std::move(j), {in});
}

void GraphBuilder::matmul() {
  check_attributes({});
  const std::string in = input_layer(0);
  const Decoded& b = constant(1, "weight");
  CUDL_CHECK(b.is_float && b.shape.rank() == 2 && b.shape.numel() > 0,
             "{}: the weight is {}; cudl takes [in, out] floats (a linear layer)", at(), b.shape);
  json j{{"type", "linear"},
         {"name", layer_name(node_->input(1))},
         {"in_features", b.shape[0]},
         {"out_features", b.shape[1]},
         {"bias", false}};
  const std::string name = j["name"];
  add_weight(name + ".weight", Shape{b.shape[1], b.shape[0]}, transpose(b.f, b.shape[0], b.shape[1]));
  bias_free_matmuls_.insert(name);
  add_layer(std::move(j), {in});
}

void GraphBuilder::add() {
  check_attributes({});
  // MatMul + Add(constant): the linear layer's bias, when the MatMul's result has no other reader.
  const int n = node_->input_size();
  for (int k = 0; k < n && n == 2 && node_->op_type() == "Add"; ++k) {
    if (!constants_.count(node_->input(k))) continue;
    const std::string other = node_->input(1 - k);
    auto p = producer_.find(other);
    CUDL_CHECK(p != producer_.end() && bias_free_matmuls_.count(p->second) && readers_[other] == 1,
               "{}: adding a constant is supported only as the bias right after a MatMul", at());
    const Decoded& c = constant(k, "bias");
    json& layer = layers_[position_.at(p->second)];
    const std::int64_t out = layer["out_features"];
    CUDL_CHECK(c.is_float && c.numel() == out, "{}: the bias is {}, expected [{}]", at(), c.shape, out);
    layer["bias"] = true;
    add_weight(p->second + ".bias", Shape{out}, c.f);
    bias_free_matmuls_.erase(p->second);
    producer_[node_->output(0)] = p->second;
    return;
  }
  std::vector<std::string> inputs;
  for (int k = 0; k < n; ++k) inputs.push_back(input_layer(k));
  CUDL_CHECK(!inputs.empty(), "{}: has no inputs", at());
  add_layer({{"type", "add"}, {"name", layer_name("")}}, inputs);
}

void GraphBuilder::batchnorm() {
  check_attributes({"epsilon", "momentum", "training_mode"});
  CUDL_CHECK(attr_int("training_mode", 0) == 0, "{}: training_mode 1 is not supported", at());
  for (int k = 1; k < node_->output_size(); ++k)
    CUDL_CHECK(node_->output(k).empty(), "{}: the running-statistics outputs are not supported", at());
  const std::string in = input_layer(0);
  const Decoded& scale = constant(1, "scale");
  const std::int64_t c = scale.numel();
  const char* what[] = {"scale", "bias B", "mean", "var"};
  const char* names[] = {"weight", "bias", "running_mean", "running_var"};
  json j{{"type", "batchnorm2d"},
         {"name", layer_name(node_->input(1))},
         {"num_features", c},
         {"eps", attr_float("epsilon", 1e-5f)},
         // ONNX's momentum weighs the running value; PyTorch's (and cudl's) the new batch's.
         {"momentum", 1.0f - attr_float("momentum", 0.9f)}};
  const std::string name = j["name"];
  for (int k = 1; k <= 4; ++k) {
    const Decoded& t = constant(k, what[k - 1]);
    CUDL_CHECK(t.is_float && t.shape == Shape{c}, "{}: the {} is {}, expected [{}]", at(), what[k - 1], t.shape, c);
    add_weight(name + "." + names[k - 1], t.shape, t.f);
  }
  add_layer(std::move(j), {in});
}

void GraphBuilder::clip() {
  check_attributes({});
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  if (has_input(1)) lo = constant(1, "min").f.empty() ? lo : constant(1, "min").f[0];
  if (has_input(2)) hi = constant(2, "max").f.empty() ? hi : constant(2, "max").f[0];
  const bool relu6 = lo == 0.0f && hi == 6.0f;  // torch exports nn.ReLU6 as Clip(0, 6)
  CUDL_CHECK(relu6 || (lo == 0.0f && std::isinf(hi)),
             "{}: Clip({}, {}) is not supported (only Clip(0) as a ReLU and Clip(0, 6) as a ReLU6)", at(), lo, hi);
  add_layer({{"type", relu6 ? "relu6" : "relu"}, {"name", layer_name("")}}, {input_layer(0)});
}

void GraphBuilder::reshape() {
  check_attributes({"allowzero"});
  const std::string in = input_layer(0);
  const Decoded& s = constant(1, "shape");
  CUDL_CHECK(!s.is_float && s.i.size() == 2 && (s.i[0] == 0 || s.i[0] == -1 || s.i[0] == 1) &&
                 (s.i[1] == -1 || s.i[1] >= 1) && attr_int("allowzero", 0) == 0,
             "{}: shape [{}]: cudl takes a Reshape only as a flatten to [N, -1]", at(), fmt::join(s.i, ", "));
  const std::string name = layer_name("");
  if (s.i[1] >= 1) reshape_widths_[name] = s.i[1];
  add_layer({{"type", "flatten"}, {"name", name}}, {in});
}

void GraphBuilder::dropout() {
  check_attributes(opset_ < 12 ? std::set<std::string>{"ratio", "seed"} : std::set<std::string>{"seed"});
  for (int k = 1; k < node_->output_size(); ++k)
    CUDL_CHECK(node_->output(k).empty(), "{}: the mask output is not supported", at());
  float p = attr_float("ratio", 0.5f);
  if (has_input(1)) {
    const Decoded& r = constant(1, "ratio");
    CUDL_CHECK(r.is_float && r.f.size() == 1, "{}: the ratio must be one float", at());
    p = r.f[0];
  }
  if (has_input(2)) {
    const Decoded& t = constant(2, "training_mode");
    CUDL_CHECK(t.numel() == 1 && (t.is_float ? t.f[0] == 0 : t.i[0] == 0), "{}: training_mode true is not supported",
               at());
  }
  add_layer({{"type", "dropout"}, {"name", layer_name("")}, {"p", p}}, {input_layer(0)});
}

void GraphBuilder::pad() {
  check_attributes({"mode"});
  CUDL_CHECK(attr_string("mode", "constant") == "constant", "{}: mode '{}' (cudl folds only zero padding)", at(),
             attr_string("mode", "constant"));
  (void)input_layer(0);
  const Decoded& p = constant(1, "pads");
  const auto& v = p.i;
  CUDL_CHECK(!p.is_float && v.size() == 8 && v[0] == 0 && v[1] == 0 && v[4] == 0 && v[5] == 0 && v[2] == v[3] &&
                 v[2] == v[6] && v[2] == v[7] && v[2] >= 0 && v[2] <= 4096,
             "{}: pads [{}]: cudl folds only the same zero padding on all four sides of an image", at(),
             fmt::join(v, ", "));
  if (has_input(2)) {
    const Decoded& c = constant(2, "constant_value");
    CUDL_CHECK(c.numel() == 1 && (c.is_float ? c.f[0] == 0.0f : c.i[0] == 0), "{}: only zero padding is supported",
               at());
  }
  pads_[node_->output(0)] = Pad{node_->input(0), v[2]};
}

void GraphBuilder::sub_div(bool sub) {
  check_attributes({});
  const std::string in = input_layer(0);
  const Decoded& c = constant(1, sub ? "mean subtracted" : "divisor");
  const Shape& d = c.shape;
  const int r = d.rank();
  CUDL_CHECK(c.is_float && (r == 3 || (r == 4 && d[0] == 1)) && d[r - 3] == 3 && d[r - 2] == 1 && d[r - 1] == 1,
             "{}: {} by {}: cudl takes only a per-channel normalisation of RGB images (a [1, 3, 1, 1] constant)", at(),
             sub ? "subtracting" : "dividing", c.shape);
  if (!sub) {
    for (float v : c.f) CUDL_CHECK(v > 0, "{}: the divisor must be positive", at());
    // Sub then Div: one normalize layer, when nothing else reads the subtraction.
    if (unit_std_normalizes_.count(in) && readers_[node_->input(0)] == 1) {
      layers_[position_.at(in)]["std"] = c.f;
      unit_std_normalizes_.erase(in);
      producer_[node_->output(0)] = in;
      return;
    }
  }
  const std::string name = layer_name("");
  json j{{"type", "normalize"}, {"name", name}};
  j["mean"] = sub ? c.f : std::vector<float>{0, 0, 0};
  j["std"] = sub ? std::vector<float>{1, 1, 1} : c.f;
  if (sub) unit_std_normalizes_.insert(name);
  add_layer(std::move(j), {in});
}

void GraphBuilder::constant_node() {
  check_attributes({"value", "value_float", "value_floats", "value_int", "value_ints"});
  const auto& a = node_->attribute();
  CUDL_CHECK(a.size() == 1, "{}: needs exactly one value attribute", at());
  Decoded d;
  if (a[0].name() == "value") {
    d = decode_tensor(a[0].t(), at());
  } else if (a[0].name() == "value_float" || a[0].name() == "value_floats") {
    d.is_float = true;
    d.f = a[0].name() == "value_float" ? std::vector<float>{a[0].f()}
                                       : std::vector<float>(a[0].floats().begin(), a[0].floats().end());
    d.shape = a[0].name() == "value_float" ? Shape{} : Shape{static_cast<std::int64_t>(d.f.size())};
  } else {
    d.i = a[0].name() == "value_int" ? std::vector<std::int64_t>{a[0].i()}
                                     : std::vector<std::int64_t>(a[0].ints().begin(), a[0].ints().end());
    d.shape = a[0].name() == "value_int" ? Shape{} : Shape{static_cast<std::int64_t>(d.i.size())};
  }
  constants_[node_->output(0)] = std::move(d);
}

}  // namespace cudl::onnx_detail
