// Issue 20 item 5: checkpoints hold the fp32 master weights whatever the precision a run trained
// in, so a bf16 run resumes in fp32 and an fp32 run in fp16 (with loss scaling), from the CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cudl/engine/io/safetensors.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::CliRun;
using cudl::testing::contains;
using cudl::testing::run_cli;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

// Every tensor of a checkpoint is stored in F32 (the masters; no half copy leaks into it).
void expect_all_f32(const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  ASSERT_FALSE(file.names().empty()) << path;
  for (const std::string& name : file.names()) {
    const std::string dtype = file.dtype(name);
    if (dtype != "I32") {
      EXPECT_EQ(dtype, "F32") << path << ": " << name;
    }
  }
}

// The metrics file of a run: its precision and the last epoch's finite training loss.
void expect_epochs_in(const std::string& metrics_path, const std::string& precision, std::size_t epochs) {
  const auto doc = nlohmann::json::parse(slurp(metrics_path));
  EXPECT_EQ(doc.at("precision").get<std::string>(), precision);
  ASSERT_EQ(doc.at("epochs").size(), epochs) << doc.dump();
  EXPECT_TRUE(std::isfinite(doc.at("epochs").back().at("train_loss").get<double>())) << doc.dump();
}

}  // namespace

TEST(CliPrecision, ABf16RunResumesInFp32AndAnFp32RunResumesInFp16) {
  TempDir dir;
  const std::string data = dir.file("idx");
  std::filesystem::create_directories(data);
  {
    Context ctx(Device::cpu());
    cudl::testing::write_synthetic_mnist_dir(data, ctx, 64, 32);
  }
  const std::string common = fmt::format("--model mlp --data '{}' --batch-size 32 --device cpu", data);
  const auto train = [&](const std::string& args) {
    const CliRun r = run_cli(dir, fmt::format("train {} {}", common, args));
    EXPECT_EQ(r.status, 0) << args << "\n" << r.err;
    return r.status == 0;
  };

  ASSERT_TRUE(train(fmt::format("--epochs 1 --precision bf16 --save '{}' --metrics-json '{}'",
                                dir.file("bf16.safetensors"), dir.file("bf16.json"))));
  expect_all_f32(dir.file("bf16.safetensors"));
  expect_epochs_in(dir.file("bf16.json"), "bf16", 1);
  ASSERT_TRUE(train(fmt::format("--epochs 2 --precision fp32 --resume '{0}' --save '{0}' --metrics-json '{1}'",
                                dir.file("bf16.safetensors"), dir.file("resumed.json"))));
  expect_all_f32(dir.file("bf16.safetensors"));
  expect_epochs_in(dir.file("resumed.json"), "fp32", 2);

  ASSERT_TRUE(train(fmt::format("--epochs 1 --save '{}'", dir.file("fp32.safetensors"))));
  ASSERT_TRUE(train(fmt::format("--epochs 2 --precision fp16 --resume '{0}' --save '{0}' --metrics-json '{1}'",
                                dir.file("fp32.safetensors"), dir.file("fp16.json"))));
  expect_all_f32(dir.file("fp32.safetensors"));
  expect_epochs_in(dir.file("fp16.json"), "fp16", 2);
  const auto fp16 = nlohmann::json::parse(slurp(dir.file("fp16.json")));
  EXPECT_GT(fp16.at("epochs").back().at("loss_scale").get<double>(), 0) << fp16.dump();
}

TEST(CliPrecision, AnUnknownPrecisionListsTheValidOnes) {
  TempDir dir;
  const CliRun r = run_cli(dir, "train --model mlp --precision fp8 --device cpu --data nowhere");
  EXPECT_EQ(r.status, 1);
  for (const char* name : {"fp32", "tf32", "bf16", "fp16"}) EXPECT_TRUE(contains(r.err, name)) << r.err;
  EXPECT_TRUE(contains(r.err, "fp8")) << r.err;
}

// --memory-format: a bf16 ResNet (no dropout, whose masks are drawn in storage order) trains to the
// same loss with channels_last and NCHW activations (the same ops on re-laid-out data; the
// one-channel first convolution sums its taps in another order, hence a tolerance), and an unknown
// format lists the valid ones.
TEST(CliPrecision, MemoryFormatsTrainAlikeAndAnUnknownOneIsRefused) {
  TempDir dir;
  const std::string data = dir.file("idx");
  std::filesystem::create_directories(data);
  {
    Context ctx(Device::cpu());
    cudl::testing::write_synthetic_mnist_dir(data, ctx, 64, 32);
  }
  double loss[2] = {0, 0};
  int i = 0;
  for (const char* format : {"nchw", "channels_last"}) {
    const std::string metrics = dir.file(fmt::format("{}.json", format));
    const CliRun r = run_cli(dir, fmt::format("train --model resnet8_mnist --data '{}' --batch-size 32 --device cpu "
                                              "--epochs 1 --precision bf16 --memory-format {} --metrics-json '{}'",
                                              data, format, metrics));
    ASSERT_EQ(r.status, 0) << format << "\n" << r.err;
    loss[i++] = nlohmann::json::parse(slurp(metrics)).at("epochs").back().at("train_loss").get<double>();
  }
  ASSERT_TRUE(std::isfinite(loss[0])) << loss[0];
  EXPECT_NEAR(loss[1], loss[0], 0.02 * std::abs(loss[0])) << "channels_last against nchw";
  const CliRun bad = run_cli(dir, "train --model mlp --memory-format nhwc --device cpu --data nowhere");
  EXPECT_EQ(bad.status, 1);
  for (const char* name : {"auto", "nchw", "channels_last", "nhwc"}) EXPECT_TRUE(contains(bad.err, name)) << bad.err;
}
