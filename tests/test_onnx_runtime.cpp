// Another runtime runs cudl's ONNX exports: onnxruntime (the npm package onnxruntime-node, fetched
// by tools/fetch-onnxruntime.sh into data/onnxruntime/, or CUDL_ONNXRUNTIME_DIR) gives cudl's
// outputs for a ResNet and for a network of every layer kind the export writes. Skips visibly
// without node or the package.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "cudl/models/onnx/onnx.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/test_util.hpp"

namespace cudl {
namespace {

std::string runtime_dir() {
  const char* dir = std::getenv("CUDL_ONNXRUNTIME_DIR");
  return dir != nullptr && *dir != '\0' ? std::string(dir) : testing::source_dir() + "/data/onnxruntime";
}

class OnnxRuntime : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!onnx_available()) GTEST_SKIP() << "cudl was built without ONNX (libonnx-dev)";
    if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no node (Node.js) to run onnxruntime";
    // Fetched on first use, as the MNIST tests fetch MNIST (the script locks, so parallel tests
    // wait for one download).
    if (!std::filesystem::exists(runtime_dir() + "/node_modules/onnxruntime-node/package.json") &&
        std::system(
            ("bash '" + testing::source_dir() + "/tools/fetch-onnxruntime.sh' '" + runtime_dir() + "'").c_str()) != 0)
      GTEST_SKIP() << "no onnxruntime-node in " << runtime_dir()
                   << " (tools/fetch-onnxruntime.sh failed: no npm or no network)";
  }

  // Exports the built `model`, runs it in onnxruntime on a random batch and compares with cudl.
  void expect_same_outputs(Sequential& model, const ModelSpec& spec, Context& ctx) {
    const std::string path = dir_.file(spec.name + ".onnx");
    export_onnx(path, ctx, model, spec);
    const Shape in{2, spec.input[0], spec.input[1], spec.input[2]};
    const std::vector<float> x = testing::random_values(in.numel(), 11, 0.0f, 1.0f);
    testing::write_bytes(dir_.file("x.bin"),
                         std::vector<std::uint8_t>(reinterpret_cast<const std::uint8_t*>(x.data()),
                                                   reinterpret_cast<const std::uint8_t*>(x.data()) + x.size() * 4));
    const std::string cmd = fmt::format(
        "NODE_PATH='{}/node_modules' node '{}/tests/onnx/ort_run.js' '{}' '{}' {} {} {} {} '{}' > '{}' 2>&1",
        runtime_dir(), testing::source_dir(), path, dir_.file("x.bin"), in[0], in[1], in[2], in[3], dir_.file("y.bin"),
        dir_.file("log"));
    ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::slurp(dir_.file("log"));
    const std::vector<std::uint8_t> bytes = testing::read_bytes(dir_.file("y.bin"));
    std::vector<float> theirs(bytes.size() / 4);
    std::memcpy(theirs.data(), bytes.data(), theirs.size() * 4);
    const std::vector<float> ours = model.forward(ctx, Tensor::from_host(x, in, ctx), false).to_vector(ctx);
    ASSERT_EQ(theirs.size(), ours.size());
    float scale = 0;
    for (float v : ours) scale = std::max(scale, std::abs(v));
    for (std::size_t i = 0; i < ours.size(); ++i)
      EXPECT_NEAR(theirs[i], ours[i], 1e-4f * std::max(scale, 1.0f)) << spec.name << " output " << i;
  }

  testing::TempDir dir_;
};

TEST_F(OnnxRuntime, RunsAnExportedResNetWithCudlsOutputs) {
  Context ctx(Device::cpu());
  Sequential m = make_model("resnet8_mnist");
  m.build(ctx, 3);
  expect_same_outputs(m, model_spec("resnet8_mnist"), ctx);
}

TEST_F(OnnxRuntime, RunsEveryLayerKindTheExportWritesWithCudlsOutputs) {
  const std::string json = R"({"name": "kinds", "input": [3, 12, 12], "layers": [
    {"type": "normalize", "preset": "imagenet", "name": "norm"},
    {"type": "conv2d", "name": "c1", "out_channels": 4, "kernel_size": 3, "padding": 1, "stride": 2},
    {"type": "batchnorm2d", "name": "bn"},
    {"type": "conv2d", "name": "dw", "out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 4},
    {"type": "relu6", "name": "r6"},
    {"type": "leaky_relu", "name": "lr", "negative_slope": 0.2},
    {"type": "conv_transpose2d", "name": "up", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1,
     "output_padding": 1},
    {"type": "conv2d", "name": "c2", "out_channels": 4, "kernel_size": 1, "bias": false, "inputs": ["norm"]},
    {"type": "tanh", "name": "t"},
    {"type": "add", "name": "sum", "inputs": ["up", "t", "c2"]},
    {"type": "concat", "name": "cat", "inputs": ["sum", "t", "up"]},
    {"type": "max_pool2d", "name": "mp", "kernel_size": 2},
    {"type": "avg_pool2d", "name": "ap", "kernel_size": 3, "stride": 1, "padding": 1},
    {"type": "sigmoid", "name": "s"},
    {"type": "global_avg_pool2d", "name": "gap"},
    {"type": "flatten", "name": "fl"},
    {"type": "dropout", "name": "drop", "p": 0.25},
    {"type": "linear", "name": "fc", "out_features": 5},
    {"type": "relu", "name": "r"}
  ]})";
  ModelFile f = parse_model_json(json, "kinds.json");
  Context ctx(Device::cpu());
  f.model.build(ctx, 4);
  expect_same_outputs(f.model, f.spec, ctx);
}

}  // namespace
}  // namespace cudl
