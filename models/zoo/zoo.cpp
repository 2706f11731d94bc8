#include "cudl/models/zoo/zoo.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/normalization.hpp"
#include "cudl/models/onnx/onnx.hpp"
#include "cudl/models/zoo/mobilenet.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/resnet.hpp"

namespace cudl {

namespace {

constexpr int kPool = 0;  // 'M' in torchvision's cfgs

const std::vector<int>& vgg_config(int depth) {
  static const std::vector<int> a{64, kPool, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool};
  static const std::vector<int> b{64, 64, kPool, 128, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool};
  static const std::vector<int> d{64,    64,  kPool, 128, 128,   kPool, 256, 256, 256,
                                  kPool, 512, 512,   512, kPool, 512,   512, 512, kPool};
  static const std::vector<int> e{64,  64,  kPool, 128, 128,   kPool, 256, 256, 256, 256,  kPool,
                                  512, 512, 512,   512, kPool, 512,   512, 512, 512, kPool};
  switch (depth) {
    case 11:
      return a;
    case 13:
      return b;
    case 16:
      return d;
    case 19:
      return e;
  }
  CUDL_THROW("vgg: depth {} is not one of 11, 13, 16, 19", depth);
}

Conv2dParams same_padding() {
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  return p;
}

void add_vgg_classifier(Sequential& model, bool cifar) {
  model.add("flatten", std::make_unique<Flatten>());
  if (cifar) {
    model.add("classifier.0", std::make_unique<Linear>(512, 10, true, InitScheme::vgg));
    return;
  }
  model.add("classifier.0", std::make_unique<Linear>(512 * 7 * 7, 4096, true, InitScheme::vgg));
  model.add("classifier.1", relu());
  model.add("classifier.2", std::make_unique<Dropout>(0.5f));
  model.add("classifier.3", std::make_unique<Linear>(4096, 4096, true, InitScheme::vgg));
  model.add("classifier.4", relu());
  model.add("classifier.5", std::make_unique<Dropout>(0.5f));
  model.add("classifier.6", std::make_unique<Linear>(4096, 1000, true, InitScheme::vgg));
}

Sequential make_mlp() {
  Sequential m;
  m.add("flatten", std::make_unique<Flatten>());
  m.add("fc1", std::make_unique<Linear>(784, 128));
  m.add("relu1", relu());
  m.add("fc2", std::make_unique<Linear>(128, 10));
  return m;
}

Sequential make_mnist_cnn() {
  Sequential m;
  m.add("conv1", std::make_unique<Conv2d>(1, 32, 3));
  m.add("relu1", relu());
  m.add("conv2", std::make_unique<Conv2d>(32, 32, 3));
  m.add("relu2", relu());
  m.add("pool", std::make_unique<MaxPool2d>(2));
  m.add("dropout1", std::make_unique<Dropout>(0.25f));
  m.add("flatten", std::make_unique<Flatten>());
  m.add("fc1", std::make_unique<Linear>(4608, 128));
  m.add("relu3", relu());
  m.add("dropout2", std::make_unique<Dropout>(0.5f));
  m.add("fc2", std::make_unique<Linear>(128, 10));
  return m;
}

}  // namespace

Sequential make_vgg_features(int depth, bool batch_norm, bool avg_pool) {
  Sequential m;
  m.add("normalize", Normalize::imagenet());
  std::int64_t channels = 3;
  int index = 0;
  for (int v : vgg_config(depth)) {
    if (v == kPool) {
      if (avg_pool)
        m.add(fmt::format("features.{}", index++), std::make_unique<AvgPool2d>(2));
      else
        m.add(fmt::format("features.{}", index++), std::make_unique<MaxPool2d>(2));
      continue;
    }
    m.add(fmt::format("features.{}", index++),
          std::make_unique<Conv2d>(channels, v, 3, same_padding(), true, InitScheme::vgg));
    if (batch_norm) m.add(fmt::format("features.{}", index++), std::make_unique<BatchNorm2d>(v));
    m.add(fmt::format("features.{}", index++), relu());
    channels = v;
  }
  return m;
}

std::string vgg_layer_name(int depth, const std::string& name) {
  std::vector<std::string> known;
  int block = 1, conv = 1, index = 0;
  for (int v : vgg_config(depth)) {
    if (v == kPool) {
      known.push_back(fmt::format("pool{}", block));
      if (known.back() == name) return fmt::format("features.{}", index);
      ++index;
      ++block;
      conv = 1;
      continue;
    }
    known.push_back(fmt::format("conv{}_{}", block, conv));
    if (known.back() == name) return fmt::format("features.{}", index);
    known.push_back(fmt::format("relu{}_{}", block, conv));
    if (known.back() == name) return fmt::format("features.{}", index + 1);
    index += 2;
    ++conv;
  }
  CUDL_THROW("vgg{}: unknown layer '{}'; valid names: {}", depth, name, fmt::join(known, ", "));
}

const std::vector<ModelSpec>& model_specs() {
  static const std::vector<ModelSpec> specs = [] {
    std::vector<ModelSpec> s{
        {"mlp", {1, 28, 28}, 10, "Flatten -> Dense 128 + ReLU -> Dense 10 (MNIST)"},
        {"mnist_cnn", {1, 28, 28}, 10, "2x Conv 32 3x3 + ReLU -> MaxPool -> Dropout -> Dense 128 -> Dense 10 (MNIST)"},
    };
    for (int depth : {18, 34, 50})
      s.push_back({fmt::format("resnet{}", depth),
                   {3, 224, 224},
                   1000,
                   fmt::format("ResNet-{} for ImageNet (torchvision's layer names)", depth)});
    s.push_back({"resnet20_cifar", {3, 32, 32}, 10, "ResNet-20 of He et al. for CIFAR-10 (0.27 M parameters)"});
    s.push_back({"resnet8_mnist", {1, 28, 28}, 10, "A ResNet-8 (three stages of one basic block) for MNIST"});
    s.push_back({"mobilenet_v2",
                 {3, 224, 224},
                 1000,
                 "MobileNetV2 for ImageNet: depthwise convolutions, ReLU6 (torchvision's layer names)"});
    for (int depth : {11, 13, 16, 19}) {
      s.push_back({fmt::format("vgg{}", depth), {3, 224, 224}, 1000, fmt::format("VGG{} for ImageNet", depth)});
      s.push_back({fmt::format("vgg{}_bn", depth),
                   {3, 224, 224},
                   1000,
                   fmt::format("VGG{} with batch normalisation, for ImageNet", depth)});
      s.push_back({fmt::format("vgg{}_cifar", depth),
                   {3, 32, 32},
                   10,
                   fmt::format("VGG{} features with a 512 -> 10 classifier, for CIFAR-10", depth)});
    }
    return s;
  }();
  return specs;
}

ModelSpec model_spec(const std::string& name) {
  if (is_model_file(name)) return read_model_file(name).spec;
  if (is_onnx_file(name)) return read_onnx(name).file.spec;
  for (const auto& s : model_specs())
    if (s.name == name) return s;
  std::vector<std::string> names;
  for (const auto& s : model_specs()) names.push_back(s.name);
  CUDL_THROW("model: unknown '{}'; known models: {} (or a model file NAME.json or NAME.onnx)", name,
             fmt::join(names, ", "));
}

Sequential make_model(const std::string& name) {
  if (is_model_file(name)) return std::move(read_model_file(name).model);
  if (is_onnx_file(name)) return std::move(read_onnx(name).file.model);
  (void)model_spec(name);  // throws, listing the known names, for an unknown one
  if (name == "mlp") return make_mlp();
  if (name == "mnist_cnn") return make_mnist_cnn();
  if (name == "mobilenet_v2") return make_mobilenet_v2();
  if (name.starts_with("resnet")) {
    if (name == "resnet20_cifar") return make_small_resnet(20, 3);
    if (name == "resnet8_mnist") return make_small_resnet(8, 1);
    return make_resnet(std::stoi(name.substr(6)));
  }
  // vggNN, vggNN_bn, vggNN_cifar
  const int depth = std::stoi(name.substr(3, 2));
  const bool bn = name.ends_with("_bn");
  const bool cifar = name.ends_with("_cifar");
  Sequential m = make_vgg_features(depth, bn);
  add_vgg_classifier(m, cifar);
  return m;
}

}  // namespace cudl
