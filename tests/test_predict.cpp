// `cudl predict` and the preprocessing it shares with training (models/preprocess): an image is
// prepared exactly as the image-folder loader prepared the training data, the checkpoint's class
// names and preprocessing are used, one line per image, JSON output, and the refusals.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/zoo/preprocess.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::expect_error;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

// write_image into a folder made first.
void write_png(const std::string& path, const Image& image) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  write_image(path, image);
}

Image noise_image(int w, int h, unsigned seed, float bias) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 0.4f);
  Image img(w, h, 3);
  for (float& v : img.pixels) v = bias + u(rng);
  return img;
}

struct CliRun {
  int status = -1;
  std::string out, err;
};

CliRun cli(const TempDir& dir, const std::string& args) {
  const std::string cmd =
      fmt::format("'{}' {} > '{}' 2> '{}'", cudl::testing::cli_path(), args, dir.file("out"), dir.file("err"));
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir.file("out")), slurp(dir.file("err"))};
}

const char* kNet = R"({"name": "dark_or_light", "input": [3, 16, 16], "layers": [
  {"type": "conv2d", "name": "conv", "out_channels": 4, "kernel_size": 3, "padding": 1},
  {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 4}, {"type": "flatten"},
  {"type": "linear", "name": "fc", "out_features": 2}]})";

}  // namespace

TEST(Predict, AnImageIsPreparedExactlyAsTheFolderLoaderPreparedTrainingData) {
  TempDir dir;
  // A 48x32 image (landscape) and a 20x40 one (portrait): resized and centre-cropped to 16x16.
  write_png(dir.file("d/train/a/wide.png"), noise_image(48, 32, 1, 0.1f));
  write_png(dir.file("d/train/a/tall.png"), noise_image(20, 40, 2, 0.5f));
  write_png(dir.file("d/test/a/x.png"), noise_image(16, 16, 3, 0.2f));
  const DataSplits data = load_image_folder(dir.file("d"), 16);
  Context ctx(Device::cpu());
  const Preprocess p = training_preprocess({3, 16, 16});
  EXPECT_EQ(p.resize, 16);
  const std::vector<float> all = data.train.images.to_vector(ctx);
  // The folder's files are sorted: tall.png, then wide.png.
  const std::vector<std::string> files = {"tall.png", "wide.png"};
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::string path = dir.file("d/train/a/" + files[i]);
    const std::vector<float> got = preprocess_image(read_image(path), p, ctx, path).to_vector(ctx);
    const std::vector<float> want(all.begin() + static_cast<std::ptrdiff_t>(i * 768),
                                  all.begin() + static_cast<std::ptrdiff_t>((i + 1) * 768));
    EXPECT_EQ(got, want) << files[i];
  }
  // One channel: grey by luma; an already grey image keeps its values.
  Image grey(28, 28, 1);
  for (int i = 0; i < 28 * 28; ++i) grey.pixels[static_cast<std::size_t>(i)] = static_cast<float>(i % 7) / 7.0f;
  const std::vector<float> g = preprocess_image(grey, training_preprocess({1, 28, 28}), ctx, "g").to_vector(ctx);
  ASSERT_EQ(g.size(), 784u);
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], grey.pixels[i], 1e-6f);
  // ImageNet-sized models default to torchvision's resize 256 / crop 224, like `cudl classify`.
  EXPECT_EQ(default_preprocess({3, 224, 224}).resize, 256);
  expect_error([] { preprocess_from_json(R"({"resize": 8, "crop": [16, 16], "channels": 3})", "w.st"); },
               {"'w.st'", "extra.preprocess", "out of range"});
}

TEST(Predict, TrainedModelFilePredictsAFolderWithItsClassNamesOneLinePerImage) {
  TempDir dir;
  cudl::testing::write_string(dir.file("net.json"), kNet);
  // Two classes told apart by brightness.
  for (int i = 0; i < 12; ++i) {
    const std::string split = i < 8 ? "train" : "test";
    write_png(dir.file(fmt::format("d/{}/dark/{:02}.png", split, i)), noise_image(16, 16, 10 + i, 0.0f));
    write_png(dir.file(fmt::format("d/{}/light/{:02}.png", split, i)), noise_image(16, 16, 50 + i, 0.6f));
  }
  CliRun r = cli(
      dir,
      fmt::format("train --model '{}' --data '{}' --dataset folder --epochs 8 --batch-size 4 --lr 0.01 --schedule none "
                  "--device cpu --save '{}'",
                  dir.file("net.json"), dir.file("d"), dir.file("w.safetensors")));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto meta = read_safetensors_metadata(dir.file("w.safetensors"));
  EXPECT_EQ(meta.at("extra.classes"), R"(["dark","light"])");
  EXPECT_EQ(preprocess_from_json(meta.at("extra.preprocess"), "w").resize, 16);

  r = cli(dir, fmt::format("predict --model '{}' --weights '{}' --image '{}' --top 2 --json '{}'", dir.file("net.json"),
                           dir.file("w.safetensors"), dir.file("d/test"), dir.file("p.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> lines;
  std::stringstream ss(r.out);
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 8u) << r.out;
  // "PATH: PROB - INDEX LABEL, PROB - INDEX LABEL" (classify's format), sorted by path; the model
  // learnt the classes.
  int right = 0;
  for (const std::string& line : lines) {
    const bool dark = contains(line, "/dark/");
    EXPECT_TRUE(contains(line, ".png: ")) << line;
    const std::string first = line.substr(line.find(".png: ") + 6);
    const std::string item = first.substr(0, first.find(','));
    EXPECT_TRUE(contains(item, " - 0 dark") || contains(item, " - 1 light")) << line;
    right += contains(item, dark ? " - 0 dark" : " - 1 light");
  }
  EXPECT_GE(right, 7) << r.out;
  const auto j = nlohmann::json::parse(slurp(dir.file("p.json")));
  ASSERT_EQ(j["predictions"].size(), 8u);
  const auto& top = j["predictions"][0]["top"];
  ASSERT_EQ(top.size(), 2u);
  EXPECT_NEAR(top[0]["probability"].get<double>() + top[1]["probability"].get<double>(), 1.0, 1e-5);
  EXPECT_TRUE(top[0].contains("label"));

  // One image, built-in grey model with a plain weights file (no metadata): resized to 28x28 grey.
  {
    Context ctx(Device::cpu());
    Sequential m = make_model("mlp");
    m.build(ctx, 1);
    save_weights(dir.file("mlp.safetensors"), ctx, m);
  }
  r = cli(dir, fmt::format("predict --model mlp --weights '{}' --image '{}' --top 3", dir.file("mlp.safetensors"),
                           cudl::testing::source_dir() + "/tests/data/chelsea.png"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), ','), 2) << r.out;

  // Refusals: one line, exit 1, nothing on stdout.
  for (const auto& [args, fragment] : std::vector<std::pair<std::string, std::string>>{
           {fmt::format("predict --model '{}/examples/conv_autoencoder.json' --weights '{}' --image '{}'",
                        cudl::testing::source_dir(), dir.file("w.safetensors"), dir.file("d/test")),
            "is an autoencoder: give --reconstructions DIR"},  // issue 23: autoencoders are predicted too
           {fmt::format("predict --model mlp --weights '{}' --image '{}'", dir.file("w.safetensors"),
                        dir.file("d/test")),
            "was trained on 3x16x16 inputs but mlp takes [1,28,28]"},
           {fmt::format("predict --model mlp --weights '{}' --image '{}'", dir.file("mlp.safetensors"),
                        dir.file("nothing")),
            "neither an image file nor a folder"},
           {fmt::format("predict --model '{}' --weights '{}' --image '{}' --image-size 32", dir.file("net.json"),
                        dir.file("w.safetensors"), dir.file("d/test")),
            "--image-size 32: model"},
       }) {
    r = cli(dir, args);
    EXPECT_EQ(r.status, 1) << args;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_TRUE(contains(r.err, fragment)) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}
