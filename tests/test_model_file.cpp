// JSON model files (models/model_file): parsing, the errors that name layer and shapes, export of
// built-in models and the round trip, the shipped examples, and `cudl summary` on a file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::expect_error;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

const std::string kExamples = cudl::testing::source_dir() + "/examples/";

// A one-layer-list model file around `layers` (a JSON array's contents).
std::string model_text(const std::string& layers, const std::string& input = "[3, 8, 8]") {
  return "{\"input\": " + input + ", \"layers\": [" + layers + "]}";
}

ModelFile parse(const std::string& text) { return parse_model_json(text, "m.json"); }

std::vector<std::pair<std::string, Shape>> parameter_shapes(Sequential& m) {
  std::vector<std::pair<std::string, Shape>> out;
  for (const auto& p : m.parameters()) out.emplace_back(p.name, p.parameter->shape);
  for (const auto& p : m.buffers()) out.emplace_back(p.name, p.parameter->shape);
  return out;
}

}  // namespace

TEST(ModelFile, ParsesAChainAndInfersInputSizesWithSequentialNames) {
  ModelFile f = parse(model_text(R"({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
      {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"},
      {"type": "linear", "name": "head", "out_features": 5})"));
  EXPECT_EQ(f.spec.input, (Shape{3, 8, 8}));
  EXPECT_EQ(f.spec.num_classes, 5);
  EXPECT_EQ(f.spec.name, "m");  // the file's stem when it has no "name"
  EXPECT_EQ(f.model.output_shape({2, 3, 8, 8}), (Shape{2, 5}));
  const auto shapes = parameter_shapes(f.model);
  ASSERT_EQ(shapes.size(), 4u);
  // Unnamed layers are named by index, as torch.nn.Sequential names its children.
  EXPECT_EQ(shapes[0].first, "0.weight");
  EXPECT_EQ(shapes[0].second, (Shape{4, 3, 3, 3}));
  EXPECT_EQ(shapes[2].first, "head.weight");
  EXPECT_EQ(shapes[2].second, (Shape{5, 4 * 4 * 4}));
  EXPECT_EQ(f.model.parameter_count(), 4 * 3 * 9 + 4 + 5 * 64 + 5);
}

TEST(ModelFile, EveryLayerTypeParsesAndRuns) {
  ModelFile f = parse(model_text(R"({"type": "normalize", "preset": "imagenet"},
      {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 2, "dilation": 2, "bias": false},
      {"type": "batchnorm2d"}, {"type": "leaky_relu", "negative_slope": 0.2},
      {"type": "conv_transpose2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
      {"type": "tanh"}, {"type": "avg_pool2d", "kernel_size": 2}, {"type": "sigmoid"},
      {"type": "max_pool2d", "kernel_size": 3, "stride": 1, "padding": 1}, {"type": "dropout", "p": 0.1},
      {"type": "flatten"}, {"type": "linear", "out_features": 3, "bias": false})"));
  EXPECT_EQ(f.model.size(), 12u);
  Context ctx(Device::cpu());
  f.model.build(ctx, 1);
  Tensor x = Tensor::from_host(cudl::testing::random_values(2 * 3 * 8 * 8, 1, 0, 1), {2, 3, 8, 8}, ctx);
  Tensor y = f.model.forward(ctx, x, true);
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  for (float v : y.to_vector(ctx)) EXPECT_TRUE(std::isfinite(v));
}

TEST(ModelFile, ParsingErrorsNameTheLayerAndWhatWasWrong) {
  expect_error([] { parse("{\"input\": [3, 8, 8], \"layers\": ["); }, {"m.json", "not valid JSON"});
  expect_error([] { parse("{\"layers\": [{\"type\": \"relu\"}]}"); }, {"m.json", "'input' is required"});
  expect_error([] { parse(model_text("", "[3, 8]")); }, {"'input' must be one sample's shape [C, H, W]", "[3,8]"});
  expect_error([] { parse(model_text("")); }, {"'layers' must be a non-empty list"});
  expect_error([] { parse(model_text(R"({"type": "relu"}, {"type": "conv3d"})")); },
               {"layer 1 ('1', conv3d)", "unknown type 'conv3d'", "conv2d", "linear"});
  expect_error([] { parse(model_text(R"({"type": "conv2d", "name": "c1", "out_channels": 4})")); },
               {"layer 0 ('c1', conv2d)", "'kernel_size' is required"});
  expect_error([] { parse(model_text(R"({"type": "conv2d", "out_channels": 4, "kernel_size": 0})")); },
               {"layer 0", "'kernel_size' must be a whole number in [1, 4096], got 0"});
  expect_error([] { parse(model_text(R"({"type": "conv2d", "out_channels": 4.5, "kernel_size": 3})")); },
               {"'out_channels' must be a whole number", "4.5"});
  expect_error([] { parse(model_text(R"({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "strides": 2})")); },
               {"layer 0 ('0', conv2d)", "unknown field 'strides'", "stride"});
  expect_error([] { parse(model_text(R"({"type": "dropout", "p": 1})")); },
               {"layer 0", "'p' must be a finite number in [0, 1)"});
  expect_error([] { parse(model_text(R"({"type": "relu", "name": "a"}, {"type": "relu", "name": "a"})")); },
               {"layer 1 ('a', relu)", "used by an earlier layer"});
  expect_error([] { parse(model_text(R"({"type": "normalize", "mean": [0, 0], "std": [1, 1, 1]})")); },
               {"'mean' must be a list of three numbers"});
  expect_error([] { parse(model_text(R"({"type": "relu"})") + "x"); }, {"not valid JSON"});
  expect_error([] { parse("{\"input\": [3, 8, 8], \"layers\": [{\"type\": \"relu\"}], \"layer\": 1}"); },
               {"unknown key 'layer'"});
}

TEST(ModelFile, ShapeMismatchesSayTheShapes) {
  // A linear layer on an image: the input shape, and what to do.
  expect_error(
      [] {
        parse(model_text(
            R"({"type": "conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "linear", "name": "fc", "out_features": 2})"));
      },
      {"layer 1 ('fc', linear)", "[N,4,6,6]", "add a flatten layer"});
  // A kernel larger than its input.
  expect_error(
      [] {
        parse(model_text(
            R"({"type": "max_pool2d", "kernel_size": 2}, {"type": "conv2d", "name": "big", "out_channels": 4, "kernel_size": 7})"));
      },
      {"layer 1 ('big', conv2d)", "input [N,3,4,4] does not fit", "[4,3,7,7]"});
  // A declared size that disagrees with the shape flowing in.
  expect_error(
      [] { parse(model_text(R"({"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3})")); },
      {"layer 0", "'in_channels' is 1 but its input [N,3,8,8] has 3"});
  expect_error(
      [] {
        parse(
            model_text(R"({"type": "flatten"}, {"type": "conv2d", "name": "c", "out_channels": 4, "kernel_size": 1})"));
      },
      {"layer 1 ('c', conv2d)", "needs an image input [N, C, H, W]", "[N,192]"});
  expect_error([] { parse(model_text(R"({"type": "normalize", "preset": "imagenet"})", "[1, 8, 8]")); },
               {"normalizes RGB input", "[N,1,8,8]"});
}

TEST(ModelFile, ABuiltInModelExportsAndReadsBackAsTheSameNetwork) {
  TempDir dir;
  for (const std::string name : {"mnist_cnn", "vgg11_bn", "vgg13_cifar", "vgg16"}) {
    SCOPED_TRACE(name);
    Sequential original = make_model(name);
    const std::string path = dir.file(name + ".json");
    export_model_file(path, original, model_spec(name));
    ModelFile back = read_model_file(path);
    EXPECT_EQ(back.spec.input, model_spec(name).input);
    EXPECT_EQ(back.spec.num_classes, model_spec(name).num_classes);
    EXPECT_EQ(parameter_shapes(back.model), parameter_shapes(original));
    ASSERT_EQ(back.model.size(), original.size());
    for (std::size_t i = 0; i < original.size(); ++i) {
      EXPECT_EQ(back.model.layers()[i].first, original.layers()[i].first);
      EXPECT_EQ(back.model.layers()[i].second->describe(), original.layers()[i].second->describe());
    }
    // Same seed, same initialisation (the init scheme travels with each layer); VGG for
    // ImageNet (133M parameters) is left to the shape check above, to keep the test quick.
    if (original.parameter_count() > 20'000'000) continue;
    Context ctx(Device::cpu());
    original.build(ctx, 7);
    back.model.build(ctx, 7);
    EXPECT_EQ(back.model.parameter_block().to_vector(ctx), original.parameter_block().to_vector(ctx));
  }
  // The file is readable JSON with spelled-out fields (a copy-and-edit starting point).
  const auto j = nlohmann::json::parse(slurp(dir.file("mnist_cnn.json")));
  EXPECT_EQ(j["layers"][0]["type"], "conv2d");
  EXPECT_EQ(j["layers"][0]["name"], "conv1");
  EXPECT_EQ(j["layers"][0]["kernel_size"], 3);
}

TEST(ModelFile, ZooNamesEndingInJsonAreModelFiles) {
  const std::string path = kExamples + "catdog_cnn.json";
  EXPECT_TRUE(is_model_file(path));
  EXPECT_FALSE(is_model_file("vgg16"));
  const ModelSpec spec = model_spec(path);
  EXPECT_EQ(spec.name, "catdog_cnn");
  EXPECT_EQ(spec.input, (Shape{3, 64, 64}));
  EXPECT_EQ(spec.num_classes, 2);
  expect_error([] { (void)model_spec("/nonexistent/m.json"); },
               {"model file '/nonexistent/m.json'", "not a readable file"});
}

TEST(ModelFile, TheShippedExamplesHaveTheLectureShapes) {
  Sequential catdog = make_model(kExamples + "catdog_cnn.json");
  // 3->16->16->32 3x3 convs, 2048->128->2.
  EXPECT_EQ(catdog.parameter_count(),
            (16 * 27 + 16) + (16 * 144 + 16) + (32 * 144 + 32) + (2048 * 128 + 128) + (128 * 2 + 2));
  EXPECT_EQ(catdog.output_shape({1, 3, 64, 64}), (Shape{1, 2}));

  ModelFile ae = read_model_file(kExamples + "conv_autoencoder.json");
  EXPECT_EQ(ae.spec.num_classes, 0);  // not a classifier
  EXPECT_EQ(ae.model.output_shape({5, 1, 28, 28}), (Shape{5, 1, 28, 28}));
  EXPECT_EQ(ae.model.summary({1, 1, 28, 28})[6].output_shape, (Shape{1, 32, 7, 7}));  // conv4: the code

  ModelFile vgg = read_model_file(kExamples + "vgg_small.json");
  EXPECT_EQ(vgg.model.output_shape({1, 3, 32, 32}), (Shape{1, 10}));
  EXPECT_EQ(vgg.model.parameters().front().name, "features.0.weight");
}

namespace {

struct CliRun {
  int status = -1;
  std::string out, err;
};

CliRun cli(const TempDir& dir, const std::string& args) {
  const std::string cmd =
      fmt::format("'{}' {} > '{}' 2> '{}'", cudl::testing::cli_path(), args, dir.file("out.txt"), dir.file("err.txt"));
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir.file("out.txt")), slurp(dir.file("err.txt"))};
}

}  // namespace

TEST(ModelFileCli, SummaryPrintsAFileAndExportsABuiltInModel) {
  TempDir dir;
  CliRun r = cli(dir, "summary --model '" + kExamples + "catdog_cnn.json'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "catdog_cnn")) << r.out;
  EXPECT_TRUE(contains(r.out, "[N,32,8,8]")) << r.out;
  EXPECT_TRUE(contains(r.out, "Total params: 269,938")) << r.out;

  r = cli(dir, "summary --model vgg11 --export '" + dir.file("vgg11.json") + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli(dir, "summary --model '" + dir.file("vgg11.json") + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "Total params: 132,863,336")) << r.out;

  // A bad file: one line naming the layer, exit 1, nothing on stdout.
  cudl::testing::write_string(dir.file("bad.json"), model_text(R"({"type": "linear", "out_features": 2})"));
  r = cli(dir, "summary --model '" + dir.file("bad.json") + "'");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(contains(r.err, "cudl: error: model file")) << r.err;
  EXPECT_TRUE(contains(r.err, "layer 0 ('0', linear)")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}
