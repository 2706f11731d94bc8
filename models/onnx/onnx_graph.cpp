// An ONNX graph into the JSON model format's graph form (models/zoo/model_file.hpp), which the
// model-file builder checks and constructs: nodes in topological order, each supported operator
// one layer (or folded into a neighbour: Pad into the next convolution, a MatMul's bias Add, a
// Sub/Div normalisation pair), tensors named by the layer that computes them.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cudl/engine/error.hpp"
#include "cudl/models/onnx/onnx_detail.hpp"
#include "cudl/models/onnx/onnx_ops.hpp"

namespace cudl::onnx_detail {

namespace {

using json = nlohmann::json;

// Nodes in an order where each reads only tensors computed before it (Kahn's algorithm, keeping
// the file's order among ready nodes). A cycle is refused naming a node on it.
std::vector<int> topological_order(const onnx::GraphProto& g, const std::string& where) {
  const int n = g.node_size();
  std::map<std::string, int> producer;
  for (int i = 0; i < n; ++i)
    for (const std::string& out : g.node(i).output()) {
      if (out.empty()) continue;
      CUDL_CHECK(producer.emplace(out, i).second, "{}: tensor '{}' is computed by two nodes ({} and {})", where, out,
                 producer[out], i);
    }
  std::vector<int> pending(static_cast<std::size_t>(n), 0);
  std::vector<std::vector<int>> readers(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    for (const std::string& in : g.node(i).input()) {
      auto it = producer.find(in);
      if (in.empty() || it == producer.end()) continue;
      ++pending[static_cast<std::size_t>(i)];
      readers[static_cast<std::size_t>(it->second)].push_back(i);
    }
  std::set<int> ready;
  for (int i = 0; i < n; ++i)
    if (pending[static_cast<std::size_t>(i)] == 0) ready.insert(i);
  std::vector<int> order;
  while (!ready.empty()) {
    const int i = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(i);
    for (int r : readers[static_cast<std::size_t>(i)])
      if (--pending[static_cast<std::size_t>(r)] == 0) ready.insert(r);
  }
  if (static_cast<int>(order.size()) != n) {
    for (int i = 0; i < n; ++i)
      if (pending[static_cast<std::size_t>(i)] > 0)
        CUDL_THROW("{}: the graph has a cycle through node {} ('{}', {})", where, i, g.node(i).name(),
                   g.node(i).op_type());
  }
  return order;
}

// The network input: the one graph input that is no initializer, [N, C, H, W] floats with C, H, W
// fixed (N may be symbolic).
Shape network_input(const onnx::GraphProto& g, const std::set<std::string>& initializers, std::string& name,
                    const std::string& where) {
  std::vector<const onnx::ValueInfoProto*> inputs;
  for (const auto& v : g.input())
    if (!initializers.count(v.name())) inputs.push_back(&v);
  CUDL_CHECK(inputs.size() == 1, "{}: the graph has {} inputs besides its initializers; cudl takes one image input",
             where, inputs.size());
  const onnx::ValueInfoProto& v = *inputs.front();
  name = v.name();
  const auto& type = v.type();
  CUDL_CHECK(type.has_tensor_type() && type.tensor_type().elem_type() == onnx::TensorProto::FLOAT,
             "{}: input '{}' is not a float tensor", where, name);
  const auto& dims = type.tensor_type().shape().dim();
  CUDL_CHECK(dims.size() == 4, "{}: input '{}' has rank {}; cudl takes images [N, C, H, W]", where, name, dims.size());
  Shape s{0, 0, 0};
  for (int d = 1; d < 4; ++d) {
    CUDL_CHECK(dims[d].has_dim_value() && dims[d].dim_value() >= 1 && dims[d].dim_value() <= (1 << 16),
               "{}: input '{}' needs fixed C, H, W in [1, 65536] (export with a fixed image size); dim {} is '{}'",
               where, name, d, dims[d].has_dim_value() ? std::to_string(dims[d].dim_value()) : dims[d].dim_param());
    s[d - 1] = dims[d].dim_value();
  }
  return s;
}

}  // namespace

OnnxModel translate_graph(const onnx::ModelProto& model, const std::string& source, int opset) {
  const onnx::GraphProto& g = model.graph();
  const std::string where = fmt::format("onnx '{}'", source);
  // Every operator is known before any layer is built: an unsupported one is the first complaint.
  for (int i = 0; i < g.node_size(); ++i) {
    const onnx::NodeProto& node = g.node(i);
    CUDL_CHECK(node.domain().empty() || node.domain() == "ai.onnx",
               "{}: node {} ('{}', {}, opset {}): domain '{}' is not supported (only the default ONNX domain)", where,
               i, node.name(), node.op_type(), opset, node.domain());
    CUDL_CHECK(is_supported_op(node.op_type()),
               "{}: node {} ('{}', {}, opset {}): operator not supported (cudl reads {})", where, i, node.name(),
               node.op_type(), opset, supported_ops());
  }
  CUDL_CHECK(g.node_size() > 0, "{}: the graph has no nodes", where);
  CUDL_CHECK(g.output_size() == 1, "{}: the graph has {} outputs; cudl takes one", where, g.output_size());
  const std::vector<int> order = topological_order(g, where);

  GraphBuilder b(source, opset);
  std::set<std::string> init_names;
  for (int i = 0; i < g.initializer_size(); ++i) {
    const onnx::TensorProto& t = g.initializer(i);
    init_names.insert(t.name());
    b.add_constant(t.name(), decode_tensor(t, fmt::format("{}: initializer '{}'", where, t.name())));
  }
  std::string input_name;
  const Shape input = network_input(g, init_names, input_name, where);
  b.set_input(input_name);
  b.count_readers(g);
  for (int i : order) b.add_node(g.node(i), i);
  const std::string& output = g.output(0).name();

  json doc;
  doc["name"] = model.graph().name().empty() ? std::string() : model.graph().name();
  if (doc["name"] == "" || doc["name"] == "main_graph" || doc["name"] == "torch_jit") doc.erase("name");
  doc["input"] = {input[0], input[1], input[2]};
  doc["layers"] = b.finish(output);
  OnnxModel out;
  out.opset = opset;
  out.file = model_from_json(doc, source);
  out.file.spec.description =
      fmt::format("from {} (ONNX opset {}{})", source, opset,
                  b.dropped_softmax() ? "; its final Softmax left out: outputs are logits" : "");
  out.weights = b.take_weights();
  // A Reshape to an explicit [N, F] must get F from the flatten it became.
  if (!b.reshape_widths().empty()) {
    for (const LayerSummary& row : out.file.model.summary(Shape{1, input[0], input[1], input[2]})) {
      auto it = b.reshape_widths().find(row.name);
      CUDL_CHECK(it == b.reshape_widths().end() || row.output_shape[1] == it->second,
                 "{}: layer '{}': Reshape to [N, {}] but its input has {} features per sample", where, row.name,
                 it->second, row.output_shape[1]);
    }
  }
  // Every parameter of the built layers must have its initializer with the same shape.
  std::map<std::string, const OnnxWeight*> by_name;
  for (const OnnxWeight& w : out.weights) by_name[w.name] = &w;
  for (const auto& [name, layer] : out.file.model.layers())
    for (const Parameter* p : layer->parameters()) {
      const std::string full = name + "." + p->name;
      auto it = by_name.find(full);
      CUDL_CHECK(it != by_name.end(), "{}: layer '{}' needs '{}', which the file does not hold", where, name, full);
      CUDL_CHECK(it->second->shape == p->shape, "{}: layer '{}': '{}' is {} in the file but the layer needs {}", where,
                 name, full, it->second->shape, p->shape);
    }
  return out;
}

}  // namespace cudl::onnx_detail
