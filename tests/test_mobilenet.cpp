// The zoo's mobilenet_v2: torchvision's parameter count and names (so its weights load by name), a
// graph with residual joins only where a block keeps its shape, and a forward and backward pass
// through its depthwise convolutions and ReLU6 on a small image.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "cudl/models/zoo/zoo.hpp"
#include "tests/test_util.hpp"

using namespace cudl;

TEST(MobileNetV2, HasTorchvisionsParameterCountAndNames) {
  Sequential m = make_model("mobilenet_v2");
  EXPECT_EQ(m.parameter_count(), 3'504'872);
  EXPECT_TRUE(m.is_graph());
  EXPECT_EQ(m.output_shape({1, 3, 224, 224}), (Shape{1, 1000}));
  std::map<std::string, Shape> shapes;
  for (const NamedParameter& p : m.parameters()) shapes[p.name] = p.parameter->shape;
  for (const NamedParameter& p : m.buffers()) shapes[p.name] = p.parameter->shape;
  // torchvision's state_dict keys and shapes: the stem, block 1 (no expansion), block 2
  // (expansion 6, stride 2), the last 1x1 convolution and the classifier.
  const std::map<std::string, Shape> expected{{"features.0.0.weight", {32, 3, 3, 3}},
                                              {"features.0.1.running_var", {32}},
                                              {"features.1.conv.0.0.weight", {32, 1, 3, 3}},
                                              {"features.1.conv.1.weight", {16, 32, 1, 1}},
                                              {"features.1.conv.2.bias", {16}},
                                              {"features.2.conv.0.0.weight", {96, 16, 1, 1}},
                                              {"features.2.conv.1.0.weight", {96, 1, 3, 3}},
                                              {"features.2.conv.2.weight", {24, 96, 1, 1}},
                                              {"features.2.conv.3.weight", {24}},
                                              {"features.17.conv.1.0.weight", {960, 1, 3, 3}},
                                              {"features.18.0.weight", {1280, 320, 1, 1}},
                                              {"features.18.1.bias", {1280}},
                                              {"classifier.1.weight", {1000, 1280}},
                                              {"classifier.1.bias", {1000}}};
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(shapes.count(name)) << name;
    EXPECT_EQ(shapes[name], shape) << name;
  }
  // 52 convolutions (1 + 2 + 16 * 3 + 1) with a batch norm each, and the classifier.
  EXPECT_EQ(m.parameters().size(), 52u * 3u + 2u);
  // The residual joins: blocks 3, 5, 6, 8, 9, 10, 12, 13, 15, 16 keep their shape.
  int adds = 0;
  for (const auto& [name, layer] : m.layers()) adds += layer->type() == "Add";
  EXPECT_EQ(adds, 10);
}

TEST(MobileNetV2, TrainsAStepOnASmallImage) {
  Context ctx(Device::cpu());
  Sequential m = make_model("mobilenet_v2");
  m.build(ctx, 5);
  Tensor x = Tensor::from_host(cudl::testing::random_values(2 * 3 * 32 * 32, 1, 0.0f, 1.0f), {2, 3, 32, 32}, ctx);
  Tensor y = m.forward(ctx, x, true);
  ASSERT_EQ(y.shape(), (Shape{2, 1000}));
  for (float v : y.to_vector(ctx)) ASSERT_TRUE(std::isfinite(v));
  Tensor dy = Tensor::from_host(cudl::testing::random_values(2 * 1000, 2), {2, 1000}, ctx);
  m.backward(ctx, dy);
  // Every parameter gets a finite gradient, and the depthwise ones a non-zero one.
  for (const NamedParameter& p : m.parameters()) {
    const auto g = p.parameter->grad.to_vector(ctx);
    double norm = 0;
    for (float v : g) {
      ASSERT_TRUE(std::isfinite(v)) << p.name;
      norm += double(v) * v;
    }
    if (p.name == "features.1.conv.0.0.weight" || p.name == "features.17.conv.1.0.weight") {
      EXPECT_GT(norm, 0.0) << p.name;
    }
  }
}
