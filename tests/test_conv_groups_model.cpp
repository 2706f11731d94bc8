// Grouped and depthwise Conv2d as a layer and in the JSON model format: the weight shape
// torch.nn.Conv2d gives it, the description and parameter count `summary` prints, PyTorch's
// initialisation bound, "groups" parsed, exported and refused when it does not divide the channels,
// and torchvision-shaped safetensors weights loading into it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::expect_error;
using cudl::testing::TempDir;

namespace {

Conv2dParams grouped(int pad, int stride, int groups) { return {pad, pad, stride, stride, 1, 1, groups}; }

// A depthwise-separable block named as torchvision's MobileNetV2 names its first layers:
// features.0 (3x3 stride-2 conv + BN + ReLU), features.1.conv (3x3 depthwise + BN + ReLU, 1x1
// projection + BN). ReLU stands in for ReLU6, which changes no shape or name.
const char* kSeparableBlock = R"({"name": "separable", "input": [3, 16, 16], "layers": [
  {"type": "conv2d", "name": "features.0.0", "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1,
   "bias": false},
  {"type": "batchnorm2d", "name": "features.0.1"}, {"type": "relu", "name": "features.0.2"},
  {"type": "conv2d", "name": "features.1.conv.0.0", "out_channels": 8, "kernel_size": 3, "padding": 1,
   "groups": 8, "bias": false},
  {"type": "batchnorm2d", "name": "features.1.conv.0.1"}, {"type": "relu", "name": "features.1.conv.0.2"},
  {"type": "conv2d", "name": "features.1.conv.1", "out_channels": 4, "kernel_size": 1, "bias": false},
  {"type": "batchnorm2d", "name": "features.1.conv.2"}
]})";

}  // namespace

TEST(GroupedConv2dLayer, WeightShapeDescriptionAndParameterCountFollowTorch) {
  Conv2d g2(32, 64, 3, grouped(1, 1, 2));
  EXPECT_EQ(g2.weight().shape, (Shape{64, 16, 3, 3}));
  EXPECT_EQ(g2.describe(), "Conv2d(32, 64, kernel_size=3, padding=1, groups=2)");
  EXPECT_EQ(g2.groups(), 2);
  EXPECT_EQ(g2.output_shape({5, 32, 10, 10}), (Shape{5, 64, 10, 10}));

  Conv2d dw(32, 32, 3, grouped(1, 2, 32), /*bias=*/false);
  EXPECT_EQ(dw.weight().shape, (Shape{32, 1, 3, 3}));
  EXPECT_EQ(dw.describe(), "Conv2d(32, 32, kernel_size=3, stride=2, padding=1, groups=32, bias=False)");
  EXPECT_EQ(dw.output_shape({1, 32, 9, 9}), (Shape{1, 32, 5, 5}));
  ASSERT_EQ(dw.parameters().size(), 1u);

  // groups=1 describes itself as before.
  EXPECT_EQ(Conv2d(3, 8, 3, grouped(1, 1, 1)).describe(), "Conv2d(3, 8, kernel_size=3, padding=1)");
}

TEST(GroupedConv2dLayer, ChannelsThatDoNotSplitAreRefusedInOneLine) {
  expect_error([] { Conv2d(6, 4, 3, grouped(0, 1, 4)); },
               {"Conv2d(6, 4, kernel_size=3)", "groups=4", "in_channels (6)", "out_channels (4)"});
  expect_error([] { Conv2d(4, 6, 3, grouped(0, 1, 4)); }, {"Conv2d(4, 6, kernel_size=3)", "groups=4"});
  expect_error([] { Conv2d(4, 4, 3, grouped(0, 1, 0)); }, {"groups=0", "at least 1"});
  expect_error([] { ConvTranspose2d(4, 4, 3, grouped(0, 1, 2)); }, {"ConvTranspose2d(4, 4", "groups=2", "only"});
}

// PyTorch's default init draws a grouped weight from U(-b, b) with b = 1/sqrt(C/G * R * S) (its
// fan_in reads the weight's dim 1): 1/3 for a 3x3 depthwise weight, where the ungrouped fan would
// give 1/sqrt(32*9) = 0.059.
TEST(GroupedConv2dLayer, InitialisationUsesTheGroupsFanIn) {
  Context ctx(Device::cpu());
  Sequential m;
  m.add("dw", std::make_unique<Conv2d>(32, 32, 3, grouped(1, 1, 32)));
  m.build(ctx, 3);
  const auto w = m.parameters()[0].parameter->value.to_vector(ctx);
  ASSERT_EQ(w.size(), 32u * 9u);
  float largest = 0.0f;
  for (float v : w) largest = std::max(largest, std::fabs(v));
  EXPECT_LE(largest, 1.0f / 3.0f);
  EXPECT_GT(largest, 0.3f);  // 288 draws: the largest lies within 1/3 * (1 - 0.1) almost surely
}

TEST(GroupedConv2dModelFile, GroupsParseExportAndReadBack) {
  ModelFile f = parse_model_json(kSeparableBlock, "separable.json");
  EXPECT_EQ(f.model.output_shape({2, 3, 16, 16}), (Shape{2, 4, 8, 8}));
  std::vector<std::pair<std::string, Shape>> shapes;
  for (const auto& p : f.model.parameters()) shapes.emplace_back(p.name, p.parameter->shape);
  ASSERT_EQ(shapes.size(), 9u);
  EXPECT_EQ(shapes[0], (std::pair<std::string, Shape>{"features.0.0.weight", Shape{8, 3, 3, 3}}));
  EXPECT_EQ(shapes[3], (std::pair<std::string, Shape>{"features.1.conv.0.0.weight", Shape{8, 1, 3, 3}}));
  EXPECT_EQ(shapes[6], (std::pair<std::string, Shape>{"features.1.conv.1.weight", Shape{4, 8, 1, 1}}));
  // 216 + 16 (BN) + 72 + 16 (BN) + 32 + 8 (BN): the depthwise conv has 8*9, not 8*8*9.
  EXPECT_EQ(f.model.parameter_count(), 216 + 16 + 72 + 16 + 32 + 8);

  // The summary row shows the group count.
  const auto rows = f.model.summary({1, 3, 16, 16});
  EXPECT_EQ(rows[3].name, "features.1.conv.0.0");
  EXPECT_EQ(rows[3].description, "Conv2d(8, 8, kernel_size=3, padding=1, groups=8, bias=False)");

  // Exported, "groups" is written for the grouped layer only, and reads back as the same network.
  const auto j = model_to_json(f.model, f.spec);
  EXPECT_EQ(j["layers"][3]["groups"], 8);
  EXPECT_FALSE(j["layers"][0].contains("groups"));
  ModelFile back = parse_model_json(j.dump(), "back.json");
  ASSERT_EQ(back.model.size(), f.model.size());
  for (std::size_t i = 0; i < f.model.size(); ++i)
    EXPECT_EQ(back.model.layers()[i].second->describe(), f.model.layers()[i].second->describe());
  EXPECT_EQ(back.model.parameter_count(), f.model.parameter_count());
}

TEST(GroupedConv2dModelFile, GroupsThatDoNotDivideTheChannelsAreRefused) {
  const auto model = [](const std::string& conv) {
    return R"({"input": [6, 8, 8], "layers": [{"type": "conv2d", "name": "dw", )" + conv + "}]}";
  };
  expect_error([&] { parse_model_json(model(R"("out_channels": 6, "kernel_size": 3, "groups": 4)"), "m.json"); },
               {"model file 'm.json': layer 0 ('dw', conv2d)", "'groups' (4) must divide", "input channels (6",
                "'out_channels' (6)"});
  expect_error([&] { parse_model_json(model(R"("out_channels": 9, "kernel_size": 3, "groups": 6)"), "m.json"); },
               {"layer 0 ('dw', conv2d)", "'groups' (6)", "'out_channels' (9)"});
  expect_error([&] { parse_model_json(model(R"("out_channels": 6, "kernel_size": 3, "groups": 0)"), "m.json"); },
               {"layer 0 ('dw', conv2d)", "'groups' must be a whole number", "got 0"});
}

// Weights in torchvision's layout ([out, in/groups, k, k] under the module's names) load; the
// ungrouped shape for the same layer is refused naming the tensor and both shapes.
TEST(GroupedConv2dModelFile, TorchvisionShapedSafetensorsLoad) {
  TempDir dir;
  ModelFile f = parse_model_json(kSeparableBlock, "separable.json");
  Context ctx(Device::cpu());
  f.model.build(ctx, 1);
  std::vector<std::vector<float>> values;
  std::vector<SafetensorsEntry> entries;
  values.reserve(f.model.parameters().size() + f.model.buffers().size());
  unsigned seed = 40;
  for (const auto& list : {f.model.parameters(), f.model.buffers()})
    for (const auto& p : list) {
      values.push_back(cudl::testing::random_values(p.parameter->shape.numel(), seed++, 0.1f, 1.0f));
      entries.push_back({p.name, "F32", p.parameter->shape, values.back().data()});
    }
  write_safetensors(dir.file("w.safetensors"), entries);
  EXPECT_TRUE(load_weights(dir.file("w.safetensors"), ctx, f.model, false).empty());
  const Parameter& dw = *f.model.parameters()[3].parameter;
  EXPECT_EQ(dw.value.to_vector(ctx), values[3]);
  // The model still runs forward and backward with the loaded weights.
  Tensor x = Tensor::from_host(cudl::testing::random_values(2 * 3 * 16 * 16, 2), {2, 3, 16, 16}, ctx);
  Tensor y = f.model.forward(ctx, x, true);
  Tensor dy = Tensor::from_host(std::vector<float>(static_cast<std::size_t>(y.numel()), 1.0f), y.shape(), ctx);
  f.model.backward(ctx, dy);
  for (float v : f.model.parameters()[3].parameter->grad.to_vector(ctx)) ASSERT_TRUE(std::isfinite(v));

  // An ungrouped weight for the depthwise layer.
  std::vector<float> wrong(8 * 8 * 9, 0.5f);
  entries[3] = {"features.1.conv.0.0.weight", "F32", Shape{8, 8, 3, 3}, wrong.data()};
  write_safetensors(dir.file("wrong.safetensors"), entries);
  expect_error([&] { load_weights(dir.file("wrong.safetensors"), ctx, f.model, false); },
               {"features.1.conv.0.0.weight", "[8,8,3,3]", "[8,1,3,3]"});
}

TEST(GroupedConv2dModelFile, CliSummaryShowsGroupsAndTheParameterCount) {
  TempDir dir;
  cudl::testing::write_string(dir.file("separable.json"), kSeparableBlock);
  const cudl::testing::CliRun r = cudl::testing::run_cli(dir, "summary --model separable.json", 60);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "Conv2d(8, 8, kernel_size=3, padding=1, groups=8, bias=False)")) << r.out;
  EXPECT_TRUE(contains(r.out, "Total params: 360")) << r.out;
}
