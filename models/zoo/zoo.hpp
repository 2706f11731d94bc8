#pragma once
// The built-in models. Each returns an unbuilt Sequential (call build(ctx, seed)) with torchvision's
// layer names where torchvision has the model.
#include <string>
#include <vector>

#include "cudl/models/network/sequential.hpp"

namespace cudl {

struct ModelSpec {
  std::string name;
  Shape input;  // per sample: [C, H, W]
  int num_classes;
  std::string description;
};

// mlp, mnist_cnn, resnet18/34/50, resnet20_cifar, resnet8_mnist, mobilenet_v2, vgg11/13/16/19,
// vgg11_bn..vgg19_bn, vgg11_cifar..vgg19_cifar.
const std::vector<ModelSpec>& model_specs();
// A built-in model's spec (throws listing the known names), or, for a name ending in ".json",
// the spec of that model file (models/zoo/model_file.hpp): its input, and as num_classes the width
// of its [N, K] output (0 when the output is not [N, K]).
ModelSpec model_spec(const std::string& name);
// The built-in model, or the network a ".json" model file describes (unbuilt).
Sequential make_model(const std::string& name);

// A VGG feature stack: configuration 'A' (11), 'B' (13), 'D' (16) or 'E' (19) of Simonyan &
// Zisserman; layers named features.N like torchvision, preceded by the ImageNet normalisation.
// Style transfer builds its network from this with max or average pooling.
Sequential make_vgg_features(int depth, bool batch_norm, bool avg_pool = false);

// Maps neural-style's layer names (conv1_1, relu4_2, pool5...) to torchvision's features.N for
// the plain (no batch norm) VGG of that depth; throws naming the valid names.
std::string vgg_layer_name(int depth, const std::string& name);

}  // namespace cudl
