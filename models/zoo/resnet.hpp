#pragma once
// Residual networks as graphs (models/network/sequential.hpp): torchvision's ResNet-18/34/50 for ImageNet
// (its layer and parameter names, so torchvision weights saved as safetensors load by name) and
// He et al.'s CIFAR ResNets (3 stages of basic blocks; 1x1 projection shortcuts where the shape
// changes), also for 1-channel 28 px digits.
#include "cudl/models/network/sequential.hpp"

namespace cudl {

// depth 18, 34 (basic blocks) or 50 (bottlenecks); input [3, 224, 224] in [0, 1], normalised
// with ImageNet's mean and deviation by its first layer, as the zoo's VGGs; 1000 classes.
Sequential make_resnet(int depth);
// depth = 6n + 2 (20: ResNet-20); stage widths 16, 32, 64; `channels` 3 for CIFAR-10 (32 px) or 1
// for MNIST (28 px); 10 classes.
Sequential make_small_resnet(int depth, int channels);

}  // namespace cudl
