#pragma once
// torchvision's MobileNetV2 (Sandler et al., width 1.0) as a graph: inverted residual blocks of a
// 1x1 expansion, a 3x3 depthwise convolution (Conv2dParams::groups = channels) and a linear 1x1
// projection, ReLU6 after the first two, a residual Add where the block keeps its shape. Layer and
// parameter names are torchvision's (features.N.conv.M...), so its weights saved as safetensors
// load by name; 3,504,872 parameters.
#include "cudl/models/network/sequential.hpp"

namespace cudl {

// Input [3, 224, 224] in [0, 1], normalised with ImageNet's mean and deviation by its first layer
// (as the zoo's VGGs and ResNets); 1000 classes.
Sequential make_mobilenet_v2();

}  // namespace cudl
