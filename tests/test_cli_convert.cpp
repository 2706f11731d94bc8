// `cudl convert`: a checkpoint becomes an inference weights file: parameters only, rounded to
// bf16/fp16 within half a unit in the last place of the format (or exact in fp32), with the
// metadata eval/classify need and nothing that makes it resumable; bad input is one line, exit 1,
// and no output file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::run_cli;

namespace {

class CliConvert : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = make_model("mnist_cnn");
    model_.build(ctx_, 7);
    Optimizer adam(ctx_, model_, OptimizerConfig{});
    ctx_.backend().fill_uniform(ctx_, model_.gradient_block(), -1.0f, 1.0f, 3, 0);
    adam.step(ctx_, 0.01f);  // optimizer state that must not travel into the export
    CheckpointInfo info;
    info.model = "mnist_cnn";
    info.epoch = 1;
    info.step = 1;
    info.extra["dataset"] = "mnist";
    save_checkpoint(dir_.file("ckpt.safetensors"), ctx_, model_, &adam, info);
    trained_ = model_.parameter_block().to_vector(ctx_);
  }

  // The converted file's parameters, widened back by load_weights into a fresh model.
  std::vector<float> loaded(const std::string& file) {
    Sequential fresh = make_model("mnist_cnn");
    fresh.build(ctx_, 99);
    load_weights(file, ctx_, fresh, /*allow_unused=*/false);
    return fresh.parameter_block().to_vector(ctx_);
  }

  Context ctx_{Device::cpu()};
  Sequential model_;
  std::vector<float> trained_;
  cudl::testing::TempDir dir_;
};

TEST_F(CliConvert, HalfExportKeepsOnlyWeightsRoundedToTheFormat) {
  // Half a unit in the last place: 2^-8 relative for bf16 (7 stored mantissa bits), 2^-11 for
  // fp16 (10 bits) with fp16's subnormal spacing 2^-24 as the floor.
  struct Case {
    std::string flag, dtype;
    double relative, absolute;
  };
  for (const Case& c : {Case{"bf16", "BF16", std::ldexp(1.0, -8), 0.0},
                        Case{"fp16", "F16", std::ldexp(1.0, -11), std::ldexp(1.0, -25)}}) {
    SCOPED_TRACE(c.flag);
    const std::string out = dir_.file(c.flag + ".safetensors");
    const auto r = run_cli(dir_, "convert --weights ckpt.safetensors --output " + out + " --save-dtype " + c.flag);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.out, "as " + std::string(c.flag == "fp16" ? "f16" : "bf16"))) << r.out;
    const SafetensorsFile file = SafetensorsFile::open(out);
    for (const std::string& name : file.names()) {
      EXPECT_FALSE(name.starts_with("optimizer.")) << name;
      EXPECT_EQ(file.dtype(name), c.dtype) << name;
    }
    EXPECT_EQ(file.metadata().at("model"), "mnist_cnn");
    EXPECT_EQ(file.metadata().at("extra.dataset"), "mnist");
    EXPECT_EQ(file.metadata().count("format"), 0u);  // not a checkpoint: --resume refuses it
    EXPECT_THROW(read_checkpoint_info(out), Error);

    const std::vector<float> back = loaded(out);
    ASSERT_EQ(back.size(), trained_.size());
    std::size_t changed = 0;
    for (std::size_t i = 0; i < back.size(); ++i) {
      const double bound = c.relative * std::fabs(trained_[i]) + c.absolute;
      ASSERT_LE(std::fabs(static_cast<double>(back[i]) - trained_[i]), bound) << "parameter " << i;
      changed += back[i] != trained_[i];
    }
    EXPECT_GT(changed, back.size() / 2);  // the values were really rounded, not stored in f32
  }
}

TEST_F(CliConvert, Fp32ExportIsExactAndTwiceTheHalfSize) {
  const auto f32 = run_cli(dir_, "convert --weights ckpt.safetensors --output f32.safetensors");
  ASSERT_EQ(f32.status, 0) << f32.err;
  EXPECT_EQ(loaded(dir_.file("f32.safetensors")), trained_);
  const auto bf16 = run_cli(dir_, "convert --weights ckpt.safetensors --output bf16.safetensors --save-dtype bf16");
  ASSERT_EQ(bf16.status, 0) << bf16.err;
  const auto full = std::filesystem::file_size(dir_.file("f32.safetensors"));
  const auto half = std::filesystem::file_size(dir_.file("bf16.safetensors"));
  const auto payload = static_cast<std::uintmax_t>(trained_.size()) * 4;
  EXPECT_GT(full, payload);
  EXPECT_LT(half, full - payload / 2 + 4096);  // the tensors take half the bytes; the header about the same
  // The checkpoint itself is larger still: Adam's two moments per parameter.
  EXPECT_GT(std::filesystem::file_size(dir_.file("ckpt.safetensors")), full + 2 * payload - 4096);
}

TEST_F(CliConvert, BadInputIsOneLineAndWritesNothing) {
  struct Case {
    std::string args, fragment, output;
  };
  for (const Case& c : {
           Case{"--weights missing.safetensors --output a.safetensors", "--weights", "a.safetensors"},
           Case{"--weights ckpt.safetensors --output b.safetensors --save-dtype int8", "--save-dtype", "b.safetensors"},
           Case{"--weights ckpt.safetensors --output no/such/dir/c.safetensors", "--output",
                "no/such/dir/c.safetensors"},
           Case{"--weights ckpt.safetensors --output d.safetensors --model vgg11", "vgg11", "d.safetensors"},
           Case{"--weights ckpt.safetensors --output ckpt.safetensors", "--output", ""},
       }) {
    SCOPED_TRACE(c.args);
    const auto r = run_cli(dir_, "convert " + c.args);
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(contains(r.err, c.fragment)) << r.err;
    if (!c.output.empty()) {
      EXPECT_FALSE(std::filesystem::exists(dir_.file(c.output)));
    }
  }
  // The refused overwrite left the checkpoint intact.
  EXPECT_NO_THROW(read_checkpoint_info(dir_.file("ckpt.safetensors")));
}

}  // namespace
