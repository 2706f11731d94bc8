// Issue 23 item 3: checkpoints describe themselves. eval, predict and --resume take the model, the
// dataset kind, the class names and a replaced head from the checkpoint, so `cudl eval --weights
// run.safetensors --data DIR` works without repeating the training run's flags.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/checkpoint/saved_run.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

struct Cli {
  TempDir& dir;
  int operator()(const std::string& args) const {
    const std::string cmd =
        fmt::format("'{}' {} > '{}' 2> '{}'", cudl::testing::cli_path(), args, dir.file("out"), dir.file("err"));
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string out() const { return slurp(dir.file("out")); }
  std::string err() const { return slurp(dir.file("err")); }
};

std::string mnist_like(TempDir& dir) {
  const std::string data = dir.file("idx");
  std::filesystem::create_directories(data);
  Context ctx(Device::cpu());
  cudl::testing::write_synthetic_mnist_dir(data, ctx, 64, 40);
  return data;
}

// A 3-class folder of 16x16 images, each class its own flat colour plus noise.
std::string colour_folder(const std::string& dir, int classes) {
  for (const std::string split : {"train", "test"})
    for (int c = 0; c < classes; ++c) {
      const std::string folder = fmt::format("{}/{}/c{}", dir, split, c);
      std::filesystem::create_directories(folder);
      for (int i = 0; i < 4; ++i) {
        Image im(16, 16, 3);
        for (int y = 0; y < 16; ++y)
          for (int x = 0; x < 16; ++x)
            for (int ch = 0; ch < 3; ++ch) im.at(y, x, ch) = ch == c ? 0.8f + 0.01f * static_cast<float>(i) : 0.1f;
        write_image(fmt::format("{}/{}.png", folder, i), im);
      }
    }
  return dir;
}

const char* kTwoClassNet = R"({"name": "two", "input": [3, 16, 16], "layers": [
  {"type": "conv2d", "name": "conv", "out_channels": 4, "kernel_size": 3, "padding": 1},
  {"type": "relu", "name": "relu"},
  {"type": "max_pool2d", "name": "pool", "kernel_size": 4},
  {"type": "flatten", "name": "flatten"},
  {"type": "linear", "name": "head", "out_features": 2}]})";

}  // namespace

TEST(CliSavedRun, EvalTakesTheModelAndTheDatasetKindFromTheCheckpoint) {
  TempDir dir;
  Cli cli{dir};
  const std::string data = mnist_like(dir);
  ASSERT_EQ(cli(fmt::format("train --model mlp --dataset fashion-mnist --data '{}' --epochs 1 --batch-size 32 "
                            "--device cpu --save '{}'",
                            data, dir.file("run.safetensors"))),
            0)
      << cli.err();
  const SavedRun saved = read_saved_run(dir.file("run.safetensors"));
  EXPECT_EQ(saved.model, "mlp");
  EXPECT_EQ(saved.dataset, "fashion-mnist");

  // No --model (mnist_cnn was eval's default and failed with a shape mismatch), no --dataset
  // (Fashion-MNIST was labelled as digits).
  ASSERT_EQ(cli(fmt::format("eval --weights '{}' --data '{}' --device cpu", dir.file("run.safetensors"), data)), 0)
      << cli.err();
  EXPECT_TRUE(contains(cli.out(), "mlp on fashion-mnist test split")) << cli.out();
  EXPECT_TRUE(contains(cli.out(), "Ankle boot")) << cli.out();

  // predict names the model from the checkpoint too.
  ASSERT_EQ(cli(fmt::format("predict --weights '{}' --image '{}' --device cpu", dir.file("run.safetensors"),
                            cudl::testing::source_dir() + "/tests/data/brick.png")),
            0)
      << cli.err();

  // A contradicting --model is refused with the hint, not a shape mismatch.
  EXPECT_EQ(cli(fmt::format("eval --model mnist_cnn --weights '{}' --data '{}'", dir.file("run.safetensors"), data)),
            1);
  EXPECT_TRUE(contains(cli.err(), "holds a mlp checkpoint, but --model is mnist_cnn (leave --model out")) << cli.err();

  // --resume without --model or --dataset continues the same run.
  ASSERT_EQ(cli(fmt::format("train --resume '{}' --data '{}' --epochs 2 --batch-size 32 --device cpu",
                            dir.file("run.safetensors"), data)),
            0)
      << cli.err();
  EXPECT_TRUE(contains(cli.out(), "training mlp (")) << cli.out();
  EXPECT_TRUE(contains(cli.out(), "on fashion-mnist")) << cli.out();

  // A plain weights file says nothing: eval asks for --model.
  std::map<std::string, std::string> none;
  write_safetensors(dir.file("plain.safetensors"), {}, none);
  EXPECT_EQ(cli(fmt::format("eval --weights '{}' --data '{}'", dir.file("plain.safetensors"), data)), 1);
  EXPECT_TRUE(contains(cli.err(), "does not say which model it holds")) << cli.err();
}

TEST(CliSavedRun, ARecordedModelFileAndANewHeadCarryThroughEvalAndPredict) {
  TempDir dir;
  Cli cli{dir};
  cudl::testing::write_string(dir.file("two.json"), kTwoClassNet);
  const std::string data = colour_folder(dir.file("three"), 3);
  // Fine-tuned to 3 classes: the checkpoint records the model file (and a copy of it) and the head.
  ASSERT_EQ(cli(fmt::format("train --model '{}' --data '{}' --dataset folder --num-classes 3 --epochs 1 "
                            "--batch-size 4 --device cpu --save '{}'",
                            dir.file("two.json"), data, dir.file("ft.safetensors"))),
            0)
      << cli.err();
  const SavedRun saved = read_saved_run(dir.file("ft.safetensors"));
  EXPECT_EQ(saved.num_classes, 3);
  EXPECT_EQ(saved.dataset, "folder");
  EXPECT_EQ(saved.classes, (std::vector<std::string>{"c0", "c1", "c2"}));
  EXPECT_TRUE(contains(saved.model_file, "\"out_features\": 2")) << saved.model_file;

  // Was: "model two has 2 outputs but the folder data ... has 3 classes".
  ASSERT_EQ(cli(fmt::format("eval --weights '{}' --data '{}' --device cpu", dir.file("ft.safetensors"), data)), 0)
      << cli.err();
  EXPECT_TRUE(contains(cli.out(), "(12 images)")) << cli.out();
  EXPECT_TRUE(contains(cli.out(), "c2")) << cli.out();

  // The model file gone (the checkpoint copied elsewhere): the embedded copy is used.
  std::filesystem::remove(dir.file("two.json"));
  ASSERT_EQ(cli(fmt::format("predict --weights '{}' --image '{}/test/c1/0.png' --top 3 --device cpu",
                            dir.file("ft.safetensors"), data)),
            0)
      << cli.err();
  EXPECT_TRUE(contains(cli.out(), "c0")) << cli.out();
  EXPECT_TRUE(contains(cli.out(), "c1")) << cli.out();
  EXPECT_TRUE(contains(cli.out(), "c2")) << cli.out();
}

// Issue 23 item 5: a flat DIR/<class>/ folder with --test-split (and --val-split), evaluated from
// the checkpoint; predict over a folder with an unreadable file goes on and still writes --json.
TEST(CliFolders, AFlatClassFolderWithATestSplitTrainsAndEvaluates) {
  TempDir dir;
  Cli cli{dir};
  cudl::testing::write_string(dir.file("two.json"), kTwoClassNet);
  const std::string flat = dir.file("flat");
  for (int c = 0; c < 2; ++c) {
    std::filesystem::create_directories(fmt::format("{}/c{}", flat, c));
    for (int i = 0; i < 10; ++i) {
      Image im(16, 16, 3);
      for (int y = 0; y < 16; ++y)
        for (int x = 0; x < 16; ++x)
          for (int ch = 0; ch < 3; ++ch) im.at(y, x, ch) = ch == c ? 0.7f + 0.02f * static_cast<float>(i) : 0.1f;
      write_image(fmt::format("{}/c{}/{}.png", flat, c, i), im);
    }
  }
  const std::string train =
      fmt::format("train --model '{}' --data '{}' --epochs 1 --batch-size 4 --device cpu", dir.file("two.json"), flat);
  EXPECT_EQ(cli(train), 1);
  EXPECT_TRUE(contains(cli.err(), "is a flat folder")) << cli.err();
  EXPECT_TRUE(contains(cli.err(), "--test-split F")) << cli.err();
  ASSERT_EQ(cli(train + fmt::format(" --test-split 0.2 --val-split 0.25 --save '{}'", dir.file("f.safetensors"))), 0)
      << cli.err();
  // 20 images: 4 held out for test (2 per class), 4 of the other 16 for validation.
  EXPECT_TRUE(contains(cli.out(), "(12 train / 4 validation / 4 test images)")) << cli.out();
  EXPECT_EQ(read_saved_run(dir.file("f.safetensors")).test_split, 0.2);

  ASSERT_EQ(cli(fmt::format("eval --weights '{}' --data '{}' --device cpu", dir.file("f.safetensors"), flat)), 0)
      << cli.err();
  EXPECT_TRUE(contains(cli.out(), "(4 images)")) << cli.out();

  // The train/ and test/ layout has its own test split.
  const std::string split = colour_folder(dir.file("split"), 2);
  EXPECT_EQ(cli(fmt::format("train --model '{}' --data '{}' --epochs 1 --device cpu --test-split 0.2",
                            dir.file("two.json"), split)),
            1);
  EXPECT_TRUE(contains(cli.err(), "has its own test split")) << cli.err();
}

TEST(CliFolders, PredictSkipsAnUnreadableFileReportsItAndStillWritesJson) {
  TempDir dir;
  Cli cli{dir};
  cudl::testing::write_string(dir.file("two.json"), kTwoClassNet);
  const std::string data = colour_folder(dir.file("d"), 2);
  ASSERT_EQ(cli(fmt::format("train --model '{}' --data '{}' --epochs 1 --batch-size 4 --device cpu --save '{}'",
                            dir.file("two.json"), data, dir.file("w.safetensors"))),
            0)
      << cli.err();
  cudl::testing::write_string(data + "/test/c0/broken.png", "not a png at all");
  ASSERT_EQ(cli(fmt::format("predict --weights '{}' --image '{}/test' --json '{}' --device cpu",
                            dir.file("w.safetensors"), data, dir.file("p.json"))),
            1);
  EXPECT_TRUE(contains(cli.err(), "predict: skipped '" + data + "/test/c0/broken.png'")) << cli.err();
  EXPECT_TRUE(contains(cli.err(), "predict: 1 of 9 images could not be read")) << cli.err();
  // The 8 readable images were predicted, printed and written.
  const std::string out = cli.out();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 8) << out;
  const auto j = nlohmann::json::parse(slurp(dir.file("p.json")));
  ASSERT_EQ(j["predictions"].size(), 9u);
  int errors = 0;
  for (const auto& p : j["predictions"]) errors += p.contains("error");
  EXPECT_EQ(errors, 1);
}
