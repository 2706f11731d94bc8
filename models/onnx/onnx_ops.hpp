#pragma once
// The ONNX operators cudl imports, each turned into a layer of the JSON model format's graph form
// (onnx_ops.cpp); onnx_graph.cpp feeds the nodes in topological order.
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cudl/models/onnx/onnx_detail.hpp"

namespace cudl::onnx_detail {

bool is_supported_op(const std::string& op_type);
std::string supported_ops();  // "Add, AveragePool, ..." for messages

class GraphBuilder {
 public:
  GraphBuilder(std::string source, int opset) : where_("onnx '" + std::move(source) + "'"), opset_(opset) {}
  void add_constant(const std::string& name, Decoded value) { constants_[name] = std::move(value); }
  void set_input(const std::string& name) { producer_[name] = "input"; }
  // How many nodes read each tensor (a fused bias or normalisation needs to be the only reader).
  void count_readers(const onnx::GraphProto& g);
  void add_node(const onnx::NodeProto& node, int index);
  // The layers, once the graph's output is known to be the last layer's.
  nlohmann::json finish(const std::string& output);
  bool dropped_softmax() const { return dropped_softmax_; }
  std::vector<OnnxWeight> take_weights() { return std::move(weights_); }
  // Reshape layers given an explicit width: layer name -> features expected after it.
  const std::map<std::string, std::int64_t>& reshape_widths() const { return reshape_widths_; }

 private:
  struct Pad {
    std::string source;
    std::int64_t pad = 0;
  };
  std::string at() const;  // "onnx 'x': node 3 ('name', Conv, opset 13)"
  void check_attributes(const std::set<std::string>& allowed) const;
  std::int64_t attr_int(const std::string& name, std::int64_t fallback) const;
  float attr_float(const std::string& name, float fallback) const;
  std::string attr_string(const std::string& name, const std::string& fallback) const;
  std::vector<std::int64_t> attr_ints(const std::string& name, std::vector<std::int64_t> fallback) const;
  // The same value on both spatial axes (ONNX lists [h, w], pads [h_begin, w_begin, h_end, w_end]).
  std::int64_t one_value(const std::string& attr, std::int64_t fallback) const;
  bool has_input(int k) const;
  std::string input_layer(int k);  // the layer computing input k (or "input")
  const Decoded& constant(int k, const char* what) const;
  std::string layer_name(const std::string& weight_tensor) const;
  void add_layer(nlohmann::json j, const std::vector<std::string>& inputs);
  void add_weight(const std::string& name, const Shape& shape, std::vector<float> values);
  void refuse_extra_outputs() const;

  void conv();
  void pool(bool max);
  void gemm();
  void matmul();
  void add();
  void batchnorm();
  void clip();
  void reshape();
  void dropout();
  void pad();
  void sub_div(bool sub);
  void constant_node();

  std::string where_;
  int opset_;
  const onnx::NodeProto* node_ = nullptr;
  int index_ = 0;
  std::map<std::string, Decoded> constants_;
  std::map<std::string, std::string> producer_;  // tensor -> layer ("input": the network's input)
  std::map<std::string, Pad> pads_;              // tensor a Pad computes -> what it pads, by how much
  std::set<std::string> softmax_outputs_;
  std::map<std::string, int> readers_;
  nlohmann::json layers_ = nlohmann::json::array();
  std::map<std::string, std::size_t> position_;  // layer name -> index in layers_
  std::set<std::string> names_{"input"};
  std::set<std::string> bias_free_matmuls_, unit_std_normalizes_;
  std::map<std::string, std::int64_t> reshape_widths_;
  std::string last_ = "input";
  std::vector<OnnxWeight> weights_;
  bool dropped_softmax_ = false;
};

}  // namespace cudl::onnx_detail
