#include "cudl/models/zoo/resnet.hpp"

#include <fmt/format.h>

#include <string>

#include "cudl/engine/error.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/layers/normalization.hpp"

namespace cudl {

namespace {

// Convolutions without bias (a batch norm follows each), initialised as torchvision's ResNet
// (Kaiming-normal, fan_out, ReLU gain: InitScheme::vgg).
LayerPtr conv(std::int64_t in, std::int64_t out, int kernel, int stride) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = kernel / 2;
  return std::make_unique<Conv2d>(in, out, kernel, p, /*bias=*/false, InitScheme::vgg);
}

// Adds conv + batch norm (+ ReLU) named prefix.convK / prefix.bnK; returns the last layer's name.
std::string conv_bn(Sequential& m, const std::string& prefix, int k, std::int64_t in, std::int64_t out, int kernel,
                    int stride, bool relu_after, const std::vector<std::string>& inputs = {}) {
  m.add(fmt::format("{}.conv{}", prefix, k), conv(in, out, kernel, stride), inputs);
  m.add(fmt::format("{}.bn{}", prefix, k), std::make_unique<BatchNorm2d>(out));
  if (!relu_after) return fmt::format("{}.bn{}", prefix, k);
  m.add(fmt::format("{}.relu{}", prefix, k), relu());
  return fmt::format("{}.relu{}", prefix, k);
}

// The shortcut and the join: identity when the shape stays, else torchvision's downsample (1x1
// convolution with the block's stride, batch norm); then Add and ReLU. Returns the block's output.
std::string join(Sequential& m, const std::string& prefix, const std::string& block_input, const std::string& body,
                 std::int64_t in, std::int64_t out, int stride) {
  std::string shortcut = block_input;
  if (stride != 1 || in != out) {
    m.add(prefix + ".downsample.0", conv(in, out, 1, stride), {block_input});
    m.add(prefix + ".downsample.1", std::make_unique<BatchNorm2d>(out));
    shortcut = prefix + ".downsample.1";
  }
  m.add(prefix + ".add", std::make_unique<Add>(), {body, shortcut});
  m.add(prefix + ".relu", relu());
  return prefix + ".relu";
}

std::string basic_block(Sequential& m, const std::string& prefix, const std::string& input, std::int64_t in,
                        std::int64_t out, int stride) {
  conv_bn(m, prefix, 1, in, out, 3, stride, true, {input});
  const std::string body = conv_bn(m, prefix, 2, out, out, 3, 1, false);
  return join(m, prefix, input, body, in, out, stride);
}

// torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3 convolution).
std::string bottleneck(Sequential& m, const std::string& prefix, const std::string& input, std::int64_t in,
                       std::int64_t width, int stride) {
  conv_bn(m, prefix, 1, in, width, 1, 1, true, {input});
  conv_bn(m, prefix, 2, width, width, 3, stride, true);
  const std::string body = conv_bn(m, prefix, 3, width, 4 * width, 1, 1, false);
  return join(m, prefix, input, body, in, 4 * width, stride);
}

}  // namespace

Sequential make_resnet(int depth) {
  std::vector<int> blocks;
  bool bottlenecks = false;
  switch (depth) {
    case 18:
      blocks = {2, 2, 2, 2};
      break;
    case 34:
      blocks = {3, 4, 6, 3};
      break;
    case 50:
      blocks = {3, 4, 6, 3};
      bottlenecks = true;
      break;
    default:
      CUDL_THROW("resnet: depth {} is not one of 18, 34, 50", depth);
  }
  Sequential m;
  m.add("normalize", Normalize::imagenet());
  Conv2dParams stem;
  stem.stride_h = stem.stride_w = 2;
  stem.pad_h = stem.pad_w = 3;
  m.add("conv1", std::make_unique<Conv2d>(3, 64, 7, stem, /*bias=*/false, InitScheme::vgg));
  m.add("bn1", std::make_unique<BatchNorm2d>(64));
  m.add("relu", relu());
  m.add("maxpool", std::make_unique<MaxPool2d>(3, 2, 1));
  std::string x = "maxpool";
  std::int64_t in = 64;
  for (int stage = 0; stage < 4; ++stage) {
    const std::int64_t width = std::int64_t{64} << stage;
    for (int b = 0; b < blocks[static_cast<std::size_t>(stage)]; ++b) {
      const int stride = b == 0 && stage > 0 ? 2 : 1;
      const std::string prefix = fmt::format("layer{}.{}", stage + 1, b);
      x = bottlenecks ? bottleneck(m, prefix, x, in, width, stride) : basic_block(m, prefix, x, in, width, stride);
      in = bottlenecks ? 4 * width : width;
    }
  }
  m.add("avgpool", std::make_unique<GlobalAvgPool2d>());
  m.add("flatten", std::make_unique<Flatten>());
  m.add("fc", std::make_unique<Linear>(in, 1000));
  return m;
}

Sequential make_small_resnet(int depth, int channels) {
  CUDL_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "small resnet: depth {} is not 6n + 2 (8, 14, 20, 32, 44, 56...)",
             depth);
  CUDL_CHECK(channels == 1 || channels == 3, "small resnet: {} input channels (1 or 3)", channels);
  const int n = (depth - 2) / 6;
  Sequential m;
  if (channels == 3) m.add("normalize", Normalize::imagenet());
  m.add("conv1", conv(channels, 16, 3, 1));
  m.add("bn1", std::make_unique<BatchNorm2d>(16));
  m.add("relu", relu());
  std::string x = "relu";
  std::int64_t in = 16;
  for (int stage = 0; stage < 3; ++stage) {
    const std::int64_t width = std::int64_t{16} << stage;
    for (int b = 0; b < n; ++b) {
      const int stride = b == 0 && stage > 0 ? 2 : 1;
      x = basic_block(m, fmt::format("layer{}.{}", stage + 1, b), x, in, width, stride);
      in = width;
    }
  }
  m.add("avgpool", std::make_unique<GlobalAvgPool2d>());
  m.add("flatten", std::make_unique<Flatten>());
  m.add("fc", std::make_unique<Linear>(64, 10));
  return m;
}

}  // namespace cudl
