#pragma once
// ONNX interchange (onnx/onnx.proto, read and written with the protobuf classes Debian's libonnx-dev
// ships): `--model FILE.onnx` imports a CNN that torch.onnx.export wrote, and `cudl summary --export
// FILE.onnx` writes a cudl network for other runtimes.
//
// Import translates the graph into the JSON model format's graph form (models/zoo/model_file.hpp)
// and builds it with the same builder, so an ONNX model is checked exactly as a model file is and
// its layers are the ones a model file names; the initializers become the layers' weights, named
// "<layer>.weight" etc. Opsets 11 to 17 of the default domain. Operators (others are refused in one
// line naming the node, its op type and the opset, before any layer is built):
//   Conv (group 1), Gemm, MatMul (+ Add of a constant: the bias), Relu, LeakyRelu, Sigmoid, Tanh,
//   Clip(min 0, no max) as relu, MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Add,
//   Sum, Concat (channels), Flatten (axis 1), Reshape to [N, -1], Dropout, Identity, Constant,
//   Pad (zeros, folded into the next Conv or AveragePool), Sub/Div by per-channel constants
//   (normalisation), Softmax as the last node (left out: classify and predict apply softmax to
//   the logits themselves).
// Square kernels and equal strides/padding on both axes only, as the layers take one size.
#include <cstddef>
#include <string>
#include <vector>

#include "cudl/models/zoo/model_file.hpp"

namespace cudl {

// Whether this build reads and writes ONNX (CMake found libonnx and protobuf: CUDL_ONNX).
bool onnx_available();
// True for a --model or --weights value naming an ONNX file (ends in ".onnx").
bool is_onnx_file(const std::string& name);

struct OnnxWeight {
  std::string name;  // the cudl parameter's name: "layer1.0.conv1.weight"
  Shape shape;
  std::vector<float> values;
};

struct OnnxModel {
  ModelFile file;  // spec (input [C, H, W], classes) and the unbuilt network
  std::vector<OnnxWeight> weights;
  int opset = 0;
};

// Reads, checks and translates an ONNX file. Bounded: the file may hold at most 2 GiB (protobuf's
// own limit), nesting is capped, and a tensor must hold the bytes its dims claim before anything
// is allocated for it. Every flaw is one cudl::Error naming the file (and the node).
OnnxModel read_onnx(const std::string& path);
// The same over bytes in memory; `source` names them in messages.
OnnxModel parse_onnx(const void* data, std::size_t size, const std::string& source);

// Copies the weights into `model` (built from onnx.file.model): every parameter and buffer.
void load_onnx_weights(const OnnxModel& onnx, Context& ctx, Sequential& model);

// Writes the built `model` as an ONNX ModelProto (opset 13) with its weights as initializers,
// atomically. Throws naming the first layer ONNX cannot express, before writing anything.
void export_onnx(const std::string& path, Context& ctx, Sequential& model, const ModelSpec& spec);
// The serialized ModelProto export_onnx writes.
std::string model_to_onnx(Context& ctx, Sequential& model, const ModelSpec& spec);

// Runs libonnx's C++ checker (onnx::checker::check_model) over the bytes; throws its complaint.
void check_onnx(const std::string& bytes, const std::string& source);

}  // namespace cudl
