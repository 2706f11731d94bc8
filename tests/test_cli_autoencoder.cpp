// Issue 23 item 6: autoencoders as first-class models. predict writes reconstructions (and, with
// --encode, code vectors); `cudl plot` and `train --plot` draw a reconstruction run's loss and PSNR.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cudl/engine/io/image.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::slurp;
using cudl::testing::TempDir;

TEST(CliAutoencoder, PredictWritesReconstructionsAndCodesAndPlotDrawsPsnr) {
  TempDir dir;
  auto cli = [&](const std::string& args) {
    const std::string cmd =
        fmt::format("'{}' {} > '{}' 2> '{}'", cudl::testing::cli_path(), args, dir.file("out"), dir.file("err"));
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  const std::string data = dir.file("idx");
  std::filesystem::create_directories(data);
  {
    Context ctx(Device::cpu());
    cudl::testing::write_synthetic_mnist_dir(data, ctx, 64, 16);
  }
  const std::string model = cudl::testing::source_dir() + "/examples/conv_autoencoder.json";
  ASSERT_EQ(cli(fmt::format("train --model '{}' --data '{}' --target input --loss mse --epochs 2 --batch-size 32 "
                            "--device cpu --save '{}' --metrics-json '{}' --plot '{}'",
                            model, data, dir.file("ae.safetensors"), dir.file("m.json"), dir.file("live.png"))),
            0)
      << slurp(dir.file("err"));
  EXPECT_TRUE(contains(slurp(dir.file("out")), "curves: " + dir.file("live.png"))) << slurp(dir.file("out"));
  const Image live = read_image(dir.file("live.png"));
  EXPECT_EQ(live.width, 1400);

  // `cudl plot` on the reconstruction metrics (was: "train_accuracy is missing").
  ASSERT_EQ(cli(fmt::format("plot '{}' -o '{}'", dir.file("m.json"), dir.file("m.png"))), 0) << slurp(dir.file("err"));
  EXPECT_EQ(read_image(dir.file("m.png")).width, 1400);

  // predict: the model and preprocessing from the checkpoint; a reconstruction per image.
  const std::string digits = cudl::testing::source_dir() + "/tools/samples/digits";
  EXPECT_EQ(cli(fmt::format("predict --weights '{}' --image '{}'", dir.file("ae.safetensors"), digits)), 1);
  EXPECT_TRUE(contains(slurp(dir.file("err")), "is an autoencoder: give --reconstructions DIR"))
      << slurp(dir.file("err"));
  ASSERT_EQ(cli(fmt::format("predict --weights '{}' --image '{}' --reconstructions '{}' --encode --json '{}'",
                            dir.file("ae.safetensors"), digits, dir.file("rec"), dir.file("codes.json"))),
            0)
      << slurp(dir.file("err"));
  const std::string out = slurp(dir.file("out"));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;
  EXPECT_TRUE(contains(out, "psnr")) << out;
  int pngs = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir.file("rec"))) {
    const Image im = read_image(f.path().string());
    EXPECT_EQ(im.width, 28);
    EXPECT_EQ(im.height, 28);
    ++pngs;
  }
  EXPECT_EQ(pngs, 3);
  const auto j = nlohmann::json::parse(slurp(dir.file("codes.json")));
  EXPECT_EQ(j["code_layer"], "conv3");  // the first 32x7x7 layer: the narrowest
  ASSERT_EQ(j["reconstructions"].size(), 3u);
  EXPECT_EQ(j["reconstructions"][0]["code"].size(), 32u * 7 * 7);

  // A classifier's predict refuses autoencoder options.
  ASSERT_EQ(cli(fmt::format("train --model mlp --data '{}' --epochs 1 --batch-size 32 --device cpu --save '{}'", data,
                            dir.file("mlp.safetensors"))),
            0);
  EXPECT_EQ(cli(fmt::format("predict --weights '{}' --image '{}' --encode", dir.file("mlp.safetensors"), digits)), 1);
  EXPECT_TRUE(contains(slurp(dir.file("err")), "are for autoencoders")) << slurp(dir.file("err"));
}
