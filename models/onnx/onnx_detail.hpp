#pragma once
// Shared by the ONNX reader (onnx_import.cpp), its graph translation (onnx_graph.cpp) and the
// writer (onnx_export.cpp); not installed: it names protobuf types.
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cudl/models/onnx/onnx.hpp"

namespace cudl::onnx_detail {

// The opsets of the default domain cudl reads: what torch.onnx.export writes from 1.9 to 2.x.
inline constexpr int kMinOpset = 11, kMaxOpset = 17;
// The opset cudl writes.
inline constexpr int kExportOpset = 13;

// A tensor's values as floats or int64 (whichever its data type is), checked against its dims.
struct Decoded {
  Shape shape;  // rank 0 for a scalar
  std::vector<float> f;
  std::vector<std::int64_t> i;
  bool is_float = false;
  std::int64_t numel() const { return static_cast<std::int64_t>(is_float ? f.size() : i.size()); }
};

// Decodes FLOAT and INT64 tensors (raw_data or the typed field); refuses other types, external
// data, negative dims and a tensor whose data does not hold exactly the elements its dims claim
// (checked before anything is allocated). `where` names the tensor in messages.
Decoded decode_tensor(const onnx::TensorProto& t, const std::string& where);

// Translates a parsed, opset-checked model (onnx_graph.cpp).
OnnxModel translate_graph(const onnx::ModelProto& model, const std::string& source, int opset);

}  // namespace cudl::onnx_detail
