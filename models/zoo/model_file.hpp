#pragma once
// Networks described in a JSON file, so a network outside the built-in zoo needs no C++.
// `--model FILE.json` is accepted wherever `--model NAME` is: model_spec() and make_model() in
// models/zoo/zoo.hpp send any name ending in ".json" here.
//
// The format (README "Networks from a file" documents it with examples/*.json):
//   {
//     "name": "catdog_cnn",                  optional; the summary's title
//     "description": "...",                  optional
//     "input": [3, 64, 64],                  required: one sample's [C, H, W]
//     "init": "pytorch" | "vgg",             optional default for conv2d/linear (pytorch)
//     "layers": [                            required, at least one
//       {"type": "conv2d", "name": "features.0", "out_channels": 16, "kernel_size": 3,
//        "stride": 1, "padding": 1, "dilation": 1, "bias": true},
//       {"type": "relu"}, ...
//     ]
//   }
// Layer types and their fields (every field but the required ones has PyTorch's default):
//   conv2d            out_channels*, kernel_size*, stride, padding, dilation, groups (1; weight
//                     [out, in/groups, k, k]; groups = in channels is depthwise), bias, in_channels, init
//   conv_transpose2d  out_channels*, kernel_size*, stride, padding, output_padding, dilation, bias,
//                     in_channels
//   linear            out_features*, bias, in_features, init
//   max_pool2d, avg_pool2d   kernel_size*, stride (= kernel_size), padding
//   relu, relu6, sigmoid, tanh, flatten   (no fields; relu6 is min(max(x, 0), 6))
//   leaky_relu        negative_slope (0.01)
//   dropout           p (0.5)
//   batchnorm2d       eps (1e-5), momentum (0.1), num_features
//   normalize         mean*, std* (three numbers each), or "preset": "imagenet"
//   add, concat       (no fields) join the layers named in "inputs": a sum of equal shapes (a
//                     residual connection), or the channels side by side
//   global_avg_pool2d (no fields) [N, C, H, W] -> [N, C, 1, 1]
// A network that is not a chain names each layer's inputs: "inputs": ["layer1.0.bn2", "maxpool"]
// (earlier layers' names, or "input" for the network's input); a layer without "inputs" reads the
// previous layer's output.
// in_channels / in_features / num_features are taken from the shape flowing in; when given they
// are checked against it. Every layer may have a "name"; without one it is named by its index in
// the list ("0", "1", ...), as torch.nn.Sequential names its children, so parameters are called
// "0.weight", "3.bias" like a Sequential's state_dict. Unknown keys are errors (a typo must not
// silently fall back to a default).
//
// Every error names the file, the layer's index, its name and type, and what was wrong; a layer
// whose input shape does not fit says both shapes.
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "cudl/models/network/sequential.hpp"
#include "cudl/models/zoo/zoo.hpp"

namespace cudl {

// True for a --model value that names a JSON model file (ends in ".json").
bool is_model_file(const std::string& name);

// The dataset a model file trains on when --dataset is not given: mnist for [1, 28, 28] input,
// cifar10 for [3, 32, 32], an image folder otherwise.
std::string default_dataset_for_input(const Shape& input);

// A parsed model file: its spec (name = the file's "name", or the path's stem) and an unbuilt model.
struct ModelFile {
  ModelSpec spec;
  Sequential model;
};

// Reads and checks a model file: the layers are constructed and their shapes propagated from the
// input, so a file that loads is a network that runs.
ModelFile read_model_file(const std::string& path);
// The same from JSON text already in memory; `source` is what messages call it.
ModelFile parse_model_json(const std::string& text, const std::string& source);

// The same from a document already parsed (or built in C++: the ONNX importer, models/onnx/,
// translates a graph into this form so that one builder checks and constructs every network).
ModelFile model_from_json(const nlohmann::json& doc, const std::string& source);

// The JSON of a model (every layer with its name and every field spelled out), which
// parse_model_json turns back into the same network with the same parameter names.
// Throws for a layer type the format has no spelling for.
nlohmann::ordered_json model_to_json(const Sequential& model, const ModelSpec& spec);
// model_to_json written atomically to `path`.
void export_model_file(const std::string& path, const Sequential& model, const ModelSpec& spec);

}  // namespace cudl
