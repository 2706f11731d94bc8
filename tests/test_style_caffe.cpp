// Caffe's VGG19 for style transfer: tools/convert_caffe_vgg19.py on a small synthetic .caffemodel
// that this test encodes itself (protobuf wire format, written here independently of the
// converter's protobuf library), and the network --model-type caffe builds around it: BGR,
// 0-255, mean-subtracted input, checked against a convolution computed by hand.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
namespace fs = std::filesystem;

const std::string kData = cudl::testing::source_dir() + "/tests/data/";

// ---- a protobuf writer: just what NetParameter needs

std::string varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string key(int field, int wire) {
  return varint(static_cast<std::uint64_t>(field) << 3 | static_cast<unsigned>(wire));
}
std::string bytes_field(int field, const std::string& b) { return key(field, 2) + varint(b.size()) + b; }
std::string int_field(int field, std::int64_t v) { return key(field, 0) + varint(static_cast<std::uint64_t>(v)); }
std::string packed_floats(int field, const std::vector<float>& v) {
  std::string b(v.size() * 4, '\0');
  std::memcpy(b.data(), v.data(), b.size());  // little-endian host, like the wire format
  return bytes_field(field, b);
}

// BlobProto with the legacy 4-D fields (V1 files) or a BlobShape (new files).
std::string legacy_blob(std::vector<int> nchw, const std::vector<float>& data) {
  return int_field(1, nchw[0]) + int_field(2, nchw[1]) + int_field(3, nchw[2]) + int_field(4, nchw[3]) +
         packed_floats(5, data);
}
std::string shaped_blob(const std::vector<std::int64_t>& dims, const std::vector<float>& data) {
  std::string shape;
  std::string packed;
  for (auto d : dims) packed += varint(static_cast<std::uint64_t>(d));
  shape = bytes_field(1, packed);
  return packed_floats(5, data) + bytes_field(7, shape);
}

std::vector<float> values(std::size_t n, float scale, float phase) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * std::sin(phase + 0.37f * static_cast<float>(i));
  return v;
}

struct SyntheticCaffe {
  std::vector<float> w11, b11, w12, b12;
  std::string bytes;
};

// conv1_1 as a V1 layer (field 2, the 2014 VGG release's format) among weightless ones, conv1_2
// as a new-style layer (field 100).
SyntheticCaffe synthetic_caffemodel() {
  SyntheticCaffe s;
  s.w11 = values(64 * 3 * 3 * 3, 0.02f, 0.1f);
  s.b11 = values(64, 0.5f, 0.7f);
  s.w12 = values(64 * 64 * 3 * 3, 0.01f, 0.3f);
  s.b12 = values(64, 0.2f, 1.1f);
  const std::string conv11 = bytes_field(4, "conv1_1") + int_field(5, 4) +
                             bytes_field(6, legacy_blob({64, 3, 3, 3}, s.w11)) +
                             bytes_field(6, legacy_blob({1, 1, 1, 64}, s.b11));
  const std::string relu11 = bytes_field(4, "relu1_1") + int_field(5, 18);
  const std::string conv12 = bytes_field(1, "conv1_2") + bytes_field(2, "Convolution") +
                             bytes_field(7, shaped_blob({64, 64, 3, 3}, s.w12)) +
                             bytes_field(7, shaped_blob({64}, s.b12));
  s.bytes = bytes_field(1, "VGG_ILSVRC_19_layers") + bytes_field(2, conv11) + bytes_field(2, relu11) +
            bytes_field(100, conv12);
  return s;
}

const char* kPython = "/usr/bin/python3";

bool have_protobuf() {
  const std::string cmd = fmt::format("{} -c 'import google.protobuf' > /dev/null 2>&1", kPython);
  return std::system(cmd.c_str()) == 0;
}

int run(const std::string& cmd) {
  const int status = std::system((cmd + " > /dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

class CaffeVgg : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_protobuf()) GTEST_SKIP() << "no python3-protobuf for /usr/bin/python3 (apt-get install python3-protobuf)";
    dir_ = fs::temp_directory_path() / fmt::format("cudl_caffe_{}", ::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  int convert(const std::string& in, const std::string& out) const {
    return run(
        fmt::format("{} '{}/tools/convert_caffe_vgg19.py' '{}' '{}'", kPython, cudl::testing::source_dir(), in, out));
  }
  fs::path dir_;
};

TEST_F(CaffeVgg, ConvertedWeightsGiveCaffesConvolutionOnBgrMeanSubtractedInput) {
  const SyntheticCaffe caffe = synthetic_caffemodel();
  std::ofstream(path("vgg.caffemodel"), std::ios::binary) << caffe.bytes;
  ASSERT_EQ(convert(path("vgg.caffemodel"), path("vgg.safetensors")), 0);

  Context ctx;
  StyleOptions o;
  o.model = StyleModel::caffe;
  o.content_layers = {"relu1_2"};
  o.style_layers = {"relu1_1"};
  Sequential net = make_style_network(ctx, o, path("vgg.safetensors"));
  net.set_taps({"features.1"});  // relu1_1
  const int h = 6, w = 7;
  std::vector<float> rgb(3 * h * w);
  for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = 0.5f + 0.4f * std::sin(1.7f * static_cast<float>(i));
  Tensor x = Tensor::from_host(rgb, Shape{1, 3, h, w}, ctx);
  net.forward(ctx, x, false);
  const auto y = net.tap("features.1").to_vector(ctx);
  // Caffe: y[k] = relu(b[k] + Σ_{c ∈ B,G,R} Σ w[k][c] · (255 · x[c] − mean[c])), zero padded.
  const float mean_bgr[3] = {103.939f, 116.779f, 123.68f};
  for (int k : {0, 17, 63})
    for (auto [i, j] : {std::pair{0, 0}, std::pair{3, 4}, std::pair{5, 6}}) {
      double acc = caffe.b11[static_cast<std::size_t>(k)];
      for (int c = 0; c < 3; ++c)  // c: Caffe's channel (B, G, R); RGB channel 2 - c
        for (int di = -1; di <= 1; ++di)
          for (int dj = -1; dj <= 1; ++dj) {
            const int ii = i + di, jj = j + dj;
            if (ii < 0 || ii >= h || jj < 0 || jj >= w) continue;
            const double pixel = 255.0 * rgb[static_cast<std::size_t>(((2 - c) * h + ii) * w + jj)] - mean_bgr[c];
            acc += caffe.w11[static_cast<std::size_t>(((k * 3 + c) * 3 + di + 1) * 3 + dj + 1)] * pixel;
          }
      const double expected = std::max(0.0, acc);
      EXPECT_NEAR(y[static_cast<std::size_t>((k * h + i) * w + j)], expected, 1e-3 + 1e-4 * std::abs(expected))
          << "channel " << k << " at " << i << "," << j;
    }
}

TEST_F(CaffeVgg, CliRunsWithTheCaffeModelTypeAndItsDefaultWeights) {
  std::ofstream(path("vgg.caffemodel"), std::ios::binary) << synthetic_caffemodel().bytes;
  ASSERT_EQ(convert(path("vgg.caffemodel"), path("vgg.safetensors")), 0);
  const StyleWeights d = default_style_weights(StyleModel::caffe);
  EXPECT_EQ(d.content, 5.0);  // neural-style's
  EXPECT_EQ(d.style, 100.0);
  const std::string args = fmt::format(
      "style --content '{}' --style '{}' --output '{}' --weights '{}' --model-type caffe --size 24 --iters 2 "
      "--device cpu --style-layers relu1_1 --content-layers relu1_2 --log '{}'",
      kData + "chelsea.png", kData + "brick.png", path("out.png"), path("vgg.safetensors"), path("log.csv"));
  ASSERT_EQ(run(fmt::format("'{}' {}", cudl::testing::cli_path(), args)), 0);
  EXPECT_TRUE(fs::exists(path("out.png")));
  // A layer the converted file lacks is refused when the network loads, before any output.
  fs::remove(path("out.png"));
  EXPECT_EQ(run(fmt::format("'{}' {} --style-layers relu2_1", cudl::testing::cli_path(), args)), 1);
  EXPECT_FALSE(fs::exists(path("out.png")));
}

TEST_F(CaffeVgg, BadFilesFailWithOneLineAndNoOutput) {
  std::ofstream(path("garbage.caffemodel"), std::ios::binary) << "\xff\xff\xff\xff not a protobuf at all";
  EXPECT_EQ(convert(path("garbage.caffemodel"), path("out.safetensors")), 1);
  EXPECT_FALSE(fs::exists(path("out.safetensors")));
  // A well-formed NetParameter without VGG19's layers.
  std::ofstream(path("empty.caffemodel"), std::ios::binary) << bytes_field(1, "LeNet");
  EXPECT_EQ(convert(path("empty.caffemodel"), path("out.safetensors")), 1);
  // conv1_1 with the wrong number of weights for its shape.
  const std::string bad = bytes_field(4, "conv1_1") + int_field(5, 4) +
                          bytes_field(6, legacy_blob({64, 3, 3, 3}, values(10, 1, 0))) +
                          bytes_field(6, legacy_blob({1, 1, 1, 64}, values(64, 1, 0)));
  std::ofstream(path("short.caffemodel"), std::ios::binary) << bytes_field(2, bad);
  EXPECT_EQ(convert(path("short.caffemodel"), path("out.safetensors")), 1);
  EXPECT_FALSE(fs::exists(path("out.safetensors")));
}

}  // namespace
