#include "cudl/models/zoo/mobilenet.hpp"

#include <fmt/format.h>

#include <string>

#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/merge.hpp"
#include "cudl/layers/normalization.hpp"

namespace cudl {

namespace {

// torchvision's Conv2dNormActivation: a convolution without bias (padding (k-1)/2), batch norm,
// ReLU6, named prefix.0, prefix.1, prefix.2. Convolutions are initialised as torchvision's
// MobileNetV2 does (Kaiming-normal, fan_out: InitScheme::vgg). Returns the last layer's name.
std::string conv_bn_relu6(Sequential& m, const std::string& prefix, std::int64_t in, std::int64_t out, int kernel,
                          int stride, int groups, const std::vector<std::string>& inputs = {}) {
  const Conv2dParams p{kernel / 2, kernel / 2, stride, stride, 1, 1, groups};
  m.add(prefix + ".0", std::make_unique<Conv2d>(in, out, kernel, p, /*bias=*/false, InitScheme::vgg), inputs);
  m.add(prefix + ".1", std::make_unique<BatchNorm2d>(out));
  m.add(prefix + ".2", std::make_unique<ActivationLayer>(Activation::relu6));
  return prefix + ".2";
}

// torchvision's InvertedResidual: [1x1 expansion to in*t,] 3x3 depthwise with the block's stride,
// 1x1 projection to `out` and its batch norm (no activation: the "linear bottleneck"), inside
// prefix.conv.N; the input is added back when the stride is 1 and the width stays. Returns the
// block's output.
std::string inverted_residual(Sequential& m, const std::string& prefix, const std::string& input, std::int64_t in,
                              std::int64_t out, int stride, int expand) {
  const std::int64_t hidden = in * expand;
  int index = 0;
  std::vector<std::string> from = {input};
  if (expand != 1) {
    conv_bn_relu6(m, fmt::format("{}.conv.{}", prefix, index++), in, hidden, 1, 1, 1, from);
    from.clear();
  }
  conv_bn_relu6(m, fmt::format("{}.conv.{}", prefix, index++), hidden, hidden, 3, stride, static_cast<int>(hidden),
                from);
  m.add(fmt::format("{}.conv.{}", prefix, index++),
        std::make_unique<Conv2d>(hidden, out, 1, Conv2dParams{}, /*bias=*/false, InitScheme::vgg));
  const std::string body = fmt::format("{}.conv.{}", prefix, index);
  m.add(body, std::make_unique<BatchNorm2d>(out));
  if (stride != 1 || in != out) return body;
  m.add(prefix + ".add", std::make_unique<Add>(), {body, input});
  return prefix + ".add";
}

}  // namespace

Sequential make_mobilenet_v2() {
  // torchvision's inverted_residual_setting: expansion t, width c, repeats n, first stride s.
  struct Stage {
    int t, c, n, s;
  };
  constexpr Stage kStages[] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                               {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  Sequential m;
  m.add("normalize", Normalize::imagenet());
  std::string x = conv_bn_relu6(m, "features.0", 3, 32, 3, 2, 1);
  std::int64_t in = 32;
  int index = 1;
  for (const Stage& st : kStages) {
    for (int i = 0; i < st.n; ++i) {
      x = inverted_residual(m, fmt::format("features.{}", index++), x, in, st.c, i == 0 ? st.s : 1, st.t);
      in = st.c;
    }
  }
  conv_bn_relu6(m, fmt::format("features.{}", index), in, 1280, 1, 1, 1, {x});
  m.add("avgpool", std::make_unique<GlobalAvgPool2d>());
  m.add("flatten", std::make_unique<Flatten>());
  m.add("classifier.0", std::make_unique<Dropout>(0.2f));
  m.add("classifier.1", std::make_unique<Linear>(1280, 1000, true, InitScheme::vgg));
  return m;
}

}  // namespace cudl
