// A cudl network as an ONNX ModelProto (opset 13): each layer one node (Normalize two: Sub, Div),
// tensors named after the layer computing them, parameters as initializers under cudl's names.
#include <fmt/format.h>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/layers/normalization.hpp"
#include "cudl/models/onnx/onnx_detail.hpp"

namespace cudl {

namespace {

void set_ints(onnx::NodeProto& n, const char* name, std::vector<std::int64_t> v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (std::int64_t x : v) a->add_ints(x);
}
void set_int(onnx::NodeProto& n, const char* name, std::int64_t v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void set_float(onnx::NodeProto& n, const char* name, float v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

void add_initializer(onnx::GraphProto& g, const std::string& name, const Shape& shape, const std::vector<float>& v) {
  auto* t = g.add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (std::int64_t d : shape) t->add_dims(d);
  t->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
}

void set_value_info(onnx::ValueInfoProto& v, const std::string& name, const Shape& s) {
  v.set_name(name);
  auto* t = v.mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (int d = 1; d < s.rank(); ++d) shape->add_dim()->set_dim_value(s[d]);
}

onnx::NodeProto& node(onnx::GraphProto& g, const char* op, const std::string& name, std::vector<std::string> in,
                      const std::string& out) {
  auto* n = g.add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (auto& i : in) n->add_input(i);
  n->add_output(out);
  return *n;
}

// The ONNX operator of a one-input activation (ReLU6 is a Clip with two more inputs, written apart).
const char* activation_op(Activation a) {
  switch (a) {
    case Activation::relu:
      return "Relu";
    case Activation::leaky_relu:
      return "LeakyRelu";
    case Activation::sigmoid:
      return "Sigmoid";
    case Activation::tanh:
      return "Tanh";
    case Activation::relu6:
      return "Clip";
  }
  return "Relu";  // not reached: every Activation is named above (-Wswitch says if one is not)
}

// One layer as nodes; false when ONNX (or this writer) has no spelling for it.
bool add_layer_nodes(onnx::GraphProto& g, const std::string& name, const Layer* layer,
                     const std::vector<std::string>& in) {
  const std::string x = in.front();
  if (auto* c = dynamic_cast<const Conv2d*>(layer)) {
    std::vector<std::string> inputs{x, name + ".weight"};
    if (c->has_bias()) inputs.push_back(name + ".bias");
    auto& n = node(g, "Conv", name, inputs, name);
    const auto& p = c->params();
    set_ints(n, "kernel_shape", {c->kernel_size(), c->kernel_size()});
    set_ints(n, "strides", {p.stride_h, p.stride_w});
    set_ints(n, "pads", {p.pad_h, p.pad_w, p.pad_h, p.pad_w});
    set_ints(n, "dilations", {p.dilation_h, p.dilation_w});
    if (p.groups != 1) set_int(n, "group", p.groups);
  } else if (auto* t = dynamic_cast<const ConvTranspose2d*>(layer)) {
    std::vector<std::string> inputs{x, name + ".weight"};
    if (t->has_bias()) inputs.push_back(name + ".bias");
    auto& n = node(g, "ConvTranspose", name, inputs, name);
    const auto& p = t->params();
    set_ints(n, "kernel_shape", {t->kernel_size(), t->kernel_size()});
    set_ints(n, "strides", {p.stride_h, p.stride_w});
    set_ints(n, "pads", {p.pad_h, p.pad_w, p.pad_h, p.pad_w});
    set_ints(n, "dilations", {p.dilation_h, p.dilation_w});
    set_ints(n, "output_padding", {t->output_padding(), t->output_padding()});
  } else if (auto* l = dynamic_cast<const Linear*>(layer)) {
    std::vector<std::string> inputs{x, name + ".weight"};
    if (l->has_bias()) inputs.push_back(name + ".bias");
    set_int(node(g, "Gemm", name, inputs, name), "transB", 1);
  } else if (auto* m = dynamic_cast<const MaxPool2d*>(layer)) {
    auto& n = node(g, "MaxPool", name, {x}, name);
    const auto& p = m->params();
    set_ints(n, "kernel_shape", {p.kernel_h, p.kernel_w});
    set_ints(n, "strides", {p.stride_h, p.stride_w});
    set_ints(n, "pads", {p.pad_h, p.pad_w, p.pad_h, p.pad_w});
  } else if (auto* a = dynamic_cast<const AvgPool2d*>(layer)) {
    auto& n = node(g, "AveragePool", name, {x}, name);
    const auto& p = a->params();
    set_ints(n, "kernel_shape", {p.kernel_h, p.kernel_w});
    set_ints(n, "strides", {p.stride_h, p.stride_w});
    set_ints(n, "pads", {p.pad_h, p.pad_w, p.pad_h, p.pad_w});
    set_int(n, "count_include_pad", 1);  // cudl's average counts the padding, as PyTorch's default
  } else if (auto* act = dynamic_cast<const ActivationLayer*>(layer)) {
    if (act->kind() == Activation::relu6) {  // as torch.onnx writes nn.ReLU6: Clip with min and max inputs
      add_initializer(g, name + ".min", Shape{}, {0.0f});
      add_initializer(g, name + ".max", Shape{}, {6.0f});
      node(g, "Clip", name, {x, name + ".min", name + ".max"}, name);
      return true;
    }
    auto& n = node(g, activation_op(act->kind()), name, {x}, name);
    if (act->kind() == Activation::leaky_relu) set_float(n, "alpha", act->negative_slope());
  } else if (dynamic_cast<const Flatten*>(layer)) {
    set_int(node(g, "Flatten", name, {x}, name), "axis", 1);
  } else if (auto* d = dynamic_cast<const Dropout*>(layer)) {
    add_initializer(g, name + ".ratio", Shape{}, {d->p()});
    node(g, "Dropout", name, {x, name + ".ratio"}, name);
  } else if (auto* b = dynamic_cast<const BatchNorm2d*>(layer)) {
    auto& n = node(g, "BatchNormalization", name,
                   {x, name + ".weight", name + ".bias", name + ".running_mean", name + ".running_var"}, name);
    set_float(n, "epsilon", b->eps());
    set_float(n, "momentum", 1.0f - b->momentum());  // ONNX weighs the running value
  } else if (auto* nz = dynamic_cast<const Normalize*>(layer)) {
    add_initializer(g, name + ".mean", Shape{1, 3, 1, 1}, {nz->mean().begin(), nz->mean().end()});
    add_initializer(g, name + ".std", Shape{1, 3, 1, 1}, {nz->std().begin(), nz->std().end()});
    node(g, "Sub", name, {x, name + ".mean"}, name + ".centred");
    node(g, "Div", name + ".div", {name + ".centred", name + ".std"}, name);
  } else if (dynamic_cast<const Add*>(layer)) {
    node(g, in.size() == 2 ? "Add" : "Sum", name, in, name);
  } else if (dynamic_cast<const Concat*>(layer)) {
    set_int(node(g, "Concat", name, in, name), "axis", 1);
  } else if (dynamic_cast<const GlobalAvgPool2d*>(layer)) {
    node(g, "GlobalAveragePool", name, {x}, name);
  } else {
    return false;
  }
  return true;
}

}  // namespace

std::string model_to_onnx(Context& ctx, Sequential& model, const ModelSpec& spec) {
  CUDL_CHECK(model.built(), "onnx export: build() the model (and load its weights) first");
  onnx::ModelProto proto;
  proto.set_ir_version(7);  // the IR version of opset 13
  proto.set_producer_name("cudl");
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(onnx_detail::kExportOpset);
  onnx::GraphProto& g = *proto.mutable_graph();
  g.set_name(spec.name);
  const Shape input{1, spec.input[0], spec.input[1], spec.input[2]};
  set_value_info(*g.add_input(), "input", input);
  std::string previous = "input";
  const auto& layers = model.layers();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& [name, layer] = layers[i];
    CUDL_CHECK(name != "input", "onnx export: a layer is called 'input', the graph input's name");
    std::vector<std::string> in = model.input_names(i);
    if (in.empty()) in = {previous};
    CUDL_CHECK(add_layer_nodes(g, name, layer.get(), in),
               "onnx export: layer '{}' is a {}, which cudl cannot write as ONNX", name, layer->type());
    for (Parameter* p : layer->parameters())
      add_initializer(g, name + "." + p->name, p->shape, p->value.to_vector(ctx));
    previous = name;
  }
  set_value_info(*g.add_output(), previous, model.output_shape(input));
  std::string bytes;
  CUDL_CHECK(proto.SerializeToString(&bytes), "onnx export: the model does not fit one ModelProto (over 2 GiB)");
  return bytes;
}

void export_onnx(const std::string& path, Context& ctx, Sequential& model, const ModelSpec& spec) {
  write_file_atomically(path, model_to_onnx(ctx, model, spec));
}

}  // namespace cudl
