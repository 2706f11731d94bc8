// A ResNet written in PyTorch and exported by torch.onnx.export (tests/onnx/torch_resnet.py) gives
// PyTorch's logits in cudl, with its batch norms folded into the convolutions (torch's default) or
// kept as BatchNormalization nodes, at the lowest and highest opsets cudl reads; and the CLI takes
// it as --model. Skips visibly without python3 torch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "cudl/models/onnx/onnx.hpp"
#include "tests/test_util.hpp"

namespace cudl {
namespace {

using testing::contains;

std::vector<float> read_floats(const std::string& path) {
  const std::vector<std::uint8_t> bytes = testing::read_bytes(path);
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

class OnnxTorch : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!onnx_available()) GTEST_SKIP() << "cudl was built without ONNX (libonnx-dev)";
    if (std::system("/usr/bin/python3 -c 'import torch, onnx' > /dev/null 2>&1") != 0)
      GTEST_SKIP() << "no python3 torch (with its ONNX exporter) for /usr/bin/python3";
  }
  // Exports the ResNet; returns false (with the script's output as a failure) when it cannot.
  bool export_resnet(const std::string& opset, const std::string& mode) {
    const std::string cmd = fmt::format(
        "/usr/bin/python3 '{}/tests/onnx/torch_resnet.py' '{}' '{}' '{}' {} {} > '{}' 2>&1", testing::source_dir(),
        model(), dir_.file("input.bin"), dir_.file("logits.bin"), opset, mode, dir_.file("log"));
    const int status = std::system(cmd.c_str());
    EXPECT_EQ(status, 0) << testing::slurp(dir_.file("log"));
    return status == 0;
  }
  std::string model() const { return dir_.file("resnet.onnx"); }

  // cudl's logits for the exported input match PyTorch's within 1e-4 relative.
  void expect_torch_logits() {
    OnnxModel m = read_onnx(model());
    Context ctx(Device::cpu());
    m.file.model.build(ctx, 0);
    load_onnx_weights(m, ctx, m.file.model);
    const std::vector<float> x = read_floats(dir_.file("input.bin"));
    const std::vector<float> want = read_floats(dir_.file("logits.bin"));
    ASSERT_EQ(x.size(), 2u * 3 * 32 * 32);
    ASSERT_EQ(want.size(), 20u);
    const std::vector<float> got =
        m.file.model.forward(ctx, Tensor::from_host(x, Shape{2, 3, 32, 32}, ctx), false).to_vector(ctx);
    ASSERT_EQ(got.size(), want.size());
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::abs(v));
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4f * scale) << "logit " << i;
  }

  testing::TempDir dir_;
};

TEST_F(OnnxTorch, FoldedBatchNormsOpset13MatchPyTorch) {
  if (!export_resnet("13", "fused")) return;
  expect_torch_logits();
}

TEST_F(OnnxTorch, BatchNormalizationNodesAtOpsets11And17MatchPyTorch) {
  for (const char* opset : {"11", "17"}) {
    SCOPED_TRACE(opset);
    if (!export_resnet(opset, "unfused")) return;
    OnnxModel m = read_onnx(model());
    // torch keeps the modules' names on unfused weights: the layers get torchvision's names.
    EXPECT_EQ(m.file.model.layers()[0].first, "conv1");
    EXPECT_EQ(m.file.model.layers()[1].first, "bn1");
    expect_torch_logits();
  }
}

TEST_F(OnnxTorch, TheCliTakesItAsModel) {
  if (!export_resnet("13", "unfused")) return;
  const testing::CliRun s = testing::run_cli(dir_, "summary --model resnet.onnx", 120);
  ASSERT_EQ(s.status, 0) << s.err;
  EXPECT_TRUE(contains(s.out, "layer2.downsample.0")) << s.out;
  EXPECT_TRUE(contains(s.out, "Add() <- layer1.bn2, maxpool")) << s.out;
  // predict: the model carries its weights; one line, classify's "PROB - INDEX" format.
  const std::string image = testing::source_dir() + "/tests/data/chelsea.png";
  const testing::CliRun p = testing::run_cli(dir_, "predict --model resnet.onnx --image '" + image + "' --top 2", 120);
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_TRUE(contains(p.out, "chelsea.png: 0.")) << p.out;
  EXPECT_TRUE(contains(p.out, ", 0.")) << p.out;
  // Exported again by cudl, it reads back with the same summary.
  const testing::CliRun e = testing::run_cli(dir_, "summary --model resnet.onnx --export again.onnx", 120);
  ASSERT_EQ(e.status, 0) << e.err;
  const testing::CliRun s2 = testing::run_cli(dir_, "summary --model again.onnx", 120);
  ASSERT_EQ(s2.status, 0) << s2.err;
  EXPECT_EQ(s2.out.substr(s2.out.find('\n')), s.out.substr(s.out.find('\n')));
}

}  // namespace
}  // namespace cudl
