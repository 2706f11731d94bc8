// Neural style transfer: the device-scalar ops L-BFGS runs on, L-BFGS itself, the Gatys losses and
// their image gradient (finite differences), short runs on VGG19 with seeded random weights, and
// the CLI's handling of bad input (exit code 1, no output file).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/lbfgs.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/style_fixtures.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::BackendTest;
namespace fs = std::filesystem;

const std::string kData = cudl::testing::source_dir() + "/tests/data/";

// ---------------------------------------------------------------- device-scalar ops

class ScalarOps : public BackendTest {};

TEST_P(ScalarOps, AxpyScalarAbsSumAndScalarTable) {
  Tensor alpha = make({2.0f}, Shape{1});
  Tensor x = make({1, -2, 3}, Shape{3});
  Tensor y = make({10, 10, 10}, Shape{3});
  backend().axpy_scalar(ctx(), -1.0f, alpha, x, y);
  EXPECT_EQ(host(y), (std::vector<float>{8, 14, 4}));
  Tensor s = make({0}, Shape{1});
  backend().abs_sum(ctx(), x, s);
  EXPECT_FLOAT_EQ(host(s)[0], 6.0f);

  auto op = [&](ScalarOp kind, float a, float b, float out) {
    Tensor ta = make({a}, Shape{1}), tb = make({b}, Shape{1}), to = make({out}, Shape{1});
    backend().scalar_op(ctx(), kind, ta, tb, to);
    return host(to)[0];
  };
  EXPECT_FLOAT_EQ(op(ScalarOp::mul, 3, 4, 0), 12);
  EXPECT_FLOAT_EQ(op(ScalarOp::sub, 3, 4, 0), -1);
  EXPECT_FLOAT_EQ(op(ScalarOp::div, 3, 4, 0), 0.75f);
  EXPECT_FLOAT_EQ(op(ScalarOp::safe_recip, 4, 0, 7), 0.25f);
  EXPECT_FLOAT_EQ(op(ScalarOp::safe_recip, 1e-12f, 0, 7), 0.0f);  // a dropped curvature pair
  EXPECT_FLOAT_EQ(op(ScalarOp::safe_ratio, 2, 8, 7), 0.25f);
  EXPECT_FLOAT_EQ(op(ScalarOp::safe_ratio, -1, 8, 7), 7.0f);  // kept
  EXPECT_FLOAT_EQ(op(ScalarOp::first_step, 4, 0, 0), 0.25f);
  EXPECT_FLOAT_EQ(op(ScalarOp::first_step, 0.5f, 0, 0), 1.0f);
  // A wrong-sized scalar names the op.
  Tensor two = make({1, 2}, Shape{2});
  EXPECT_THROW(backend().axpy_scalar(ctx(), 1.0f, two, x, y), Error);
}

CUDL_INSTANTIATE_BACKENDS(ScalarOps);

// ---------------------------------------------------------------- L-BFGS

class LbfgsTest : public BackendTest {};

TEST_P(LbfgsTest, MinimisesAQuadratic) {
  // f(x) = ½ Σ a_i x_i² − b·x, minimum at b_i / a_i; condition number 100.
  const int n = 20;
  std::vector<float> a(n), b(n);
  for (int i = 0; i < n; ++i) a[i] = 1.0f + 99.0f * static_cast<float>(i) / (n - 1), b[i] = std::sin(i + 1.0f);
  Tensor x = make(std::vector<float>(n, 0.0f), Shape{n});
  Tensor ta = make(a, Shape{n}), tb = make(b, Shape{n}), g = make(std::vector<float>(n, 0.0f), Shape{n});
  Lbfgs opt(ctx(), Shape{n}, {10, 1.0f});
  for (int it = 0; it < 60; ++it) {
    backend().mul(ctx(), ta, x, g);  // g = a x − b
    backend().axpy(ctx(), -1.0f, tb, g);
    opt.step(ctx(), x, g);
  }
  const auto v = host(x);
  for (int i = 0; i < n; ++i) EXPECT_NEAR(v[i], b[i] / a[i], 1e-4) << i;
}

TEST_P(LbfgsTest, MinimisesRosenbrock) {
  // f = Σ_pairs (1 − u)² + 100 (v − u²)², three independent 2-D copies side by side; gradient on the host.
  std::vector<float> start{-1.2f, 1.0f, 0.0f, 0.0f, 1.5f, 2.0f};
  Tensor x = make(start, Shape{6});
  Lbfgs opt(ctx(), Shape{6}, {100, 1.0f});
  auto value = [](const std::vector<float>& p) {
    double f = 0;
    for (std::size_t i = 0; i < p.size(); i += 2) {
      const double u = p[i], w = p[i + 1];
      f += (1 - u) * (1 - u) + 100 * (w - u * u) * (w - u * u);
    }
    return f;
  };
  const double f0 = value(start);
  for (int it = 0; it < 2000; ++it) {
    auto p = host(x);
    std::vector<float> gv(6);
    for (std::size_t i = 0; i < 6; i += 2) {
      const float u = p[i], w = p[i + 1];
      gv[i] = -2 * (1 - u) - 400 * u * (w - u * u);
      gv[i + 1] = 200 * (w - u * u);
    }
    Tensor g = make(gv, Shape{6});
    opt.step(ctx(), x, g);
  }
  const auto p = host(x);
  EXPECT_LT(value(p), 1e-3 * f0);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_NEAR(p[i], 1.0f, 2e-2) << i;
}

CUDL_INSTANTIATE_BACKENDS(LbfgsTest);

// ---------------------------------------------------------------- losses and the image gradient

using cudl::testing::random_image;
using cudl::testing::tiny_style_net;

struct Weights {
  double cw, sw, tvw;
  const char* what;
};

TEST(StyleLosses, ImageGradientMatchesFiniteDifferences) {
  Context ctx;
  Sequential net = tiny_style_net(ctx);
  Tensor content = random_image(ctx, 8, 8, 1);
  Tensor style_a = random_image(ctx, 10, 6, 2), style_b = random_image(ctx, 8, 8, 3);
  for (const Weights& w : {Weights{1, 0, 0, "content"}, Weights{0, 1e3, 0, "style"}, Weights{0, 0, 1, "tv"},
                           Weights{2, 5e2, 0.5, "all"}}) {
    StyleObjective obj(ctx, net, {"act2", "act1"}, {"act1", "act2"}, w.cw, w.sw, w.tvw);
    obj.set_targets(ctx, content, {style_a, style_b}, {1.0, 3.0});
    Tensor image = random_image(ctx, 8, 8, 4);
    Tensor grad = Tensor::empty(image.shape(), ctx);
    obj.evaluate(ctx, image, grad);
    EXPECT_GT(obj.read_losses(ctx).total, 0.0) << w.what;
    Tensor scratch = Tensor::empty(image.shape(), ctx);
    cudl::testing::GradCheckOptions opts;
    opts.step = 1e-2f;
    opts.atol = 1e-4;
    cudl::testing::expect_gradient_matches(
        ctx, image, grad,
        [&] {
          obj.evaluate(ctx, image, scratch);
          return obj.read_losses(ctx).total;
        },
        std::string("style objective, ") + w.what, opts);
  }
}

TEST(StyleLosses, DefinitionsOnHandCases) {
  Context ctx;
  Sequential net = tiny_style_net(ctx);
  Tensor content = random_image(ctx, 8, 8, 1);
  // The content image against itself: no content loss, and no style loss against its own Gram.
  StyleObjective obj(ctx, net, {"act2"}, {"act1", "act2"}, 1.0, 1.0, 0.0);
  obj.set_targets(ctx, content, {content}, {});
  Tensor grad = Tensor::empty(content.shape(), ctx);
  obj.evaluate(ctx, content, grad);
  auto l = obj.read_losses(ctx);
  EXPECT_NEAR(l.content, 0.0, 1e-12);
  EXPECT_NEAR(l.style, 0.0, 1e-12);
  // TV is tvw * the sum of squared neighbour differences of the [0,1] image.
  StyleObjective tv(ctx, net, {}, {}, 0.0, 0.0, 0.25);
  tv.set_targets(ctx, content, {}, {});
  tv.evaluate(ctx, content, grad);
  const auto v = content.to_vector(ctx);
  double expected = 0;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 8; ++j) {
        const float x0 = v[static_cast<std::size_t>((c * 8 + i) * 8 + j)];
        if (i + 1 < 8) expected += std::pow(v[static_cast<std::size_t>((c * 8 + i + 1) * 8 + j)] - x0, 2);
        if (j + 1 < 8) expected += std::pow(v[static_cast<std::size_t>((c * 8 + i) * 8 + j + 1)] - x0, 2);
      }
  EXPECT_NEAR(tv.read_losses(ctx).tv, 0.25 * expected, 1e-4 * expected);
  // Blend weights are normalised: {2, 2} equals {1, 1}, and a single style's target is its Gram.
  Tensor other = random_image(ctx, 8, 8, 9);
  StyleObjective s1(ctx, net, {}, {"act2"}, 0.0, 1.0, 0.0), s2(ctx, net, {}, {"act2"}, 0.0, 1.0, 0.0);
  s1.set_targets(ctx, content, {content, other}, {1, 1});
  s2.set_targets(ctx, content, {content, other}, {2, 2});
  s1.evaluate(ctx, other, grad);
  s2.evaluate(ctx, other, grad);
  EXPECT_FLOAT_EQ(static_cast<float>(s1.read_losses(ctx).style), static_cast<float>(s2.read_losses(ctx).style));
}

// ---------------------------------------------------------------- VGG19 style runs (random weights)

StyleOptions small_options(int size, int iters, const std::string& optimizer) {
  StyleOptions o;
  o.size = size;
  o.iters = iters;
  o.optimizer = parse_style_optimizer(optimizer);
  o.print_every = 0;
  return o;
}

TEST(StyleTransfer, NetworkIsCutAfterTheDeepestLayerAndLoadsTorchvisionNames) {
  Context ctx;
  StyleOptions o;
  Sequential net = make_style_network(ctx, o, "random:3");
  EXPECT_EQ(net.layers().back().first, vgg_layer_name(19, "relu5_1"));  // features.29
  EXPECT_EQ(net.layers().back().first, "features.29");
  // Weights written by our safetensors writer, with a tensor the cut network lacks (a full VGG19
  // file has classifier.*), load into the cut net. (A whole random VGG19 is 550 MB: too slow here.)
  const fs::path file = fs::temp_directory_path() / "cudl_style_vgg19_random.safetensors";
  {
    std::vector<std::vector<float>> values;
    std::vector<SafetensorsEntry> entries;
    for (const auto& p : net.parameters()) values.push_back(p.parameter->value.to_vector(ctx));
    std::size_t i = 0;
    for (const auto& p : net.parameters()) entries.push_back({p.name, "F32", p.parameter->shape, values[i++].data()});
    std::vector<float> extra(1000, 0.5f);
    entries.push_back({"classifier.6.bias", "F32", Shape{1000}, extra.data()});
    write_safetensors(file.string(), entries);
  }
  Sequential loaded = make_style_network(ctx, o, file.string());
  Tensor x = random_image(ctx, 32, 32, 5);
  const auto a = net.forward(ctx, x, false).to_vector(ctx);
  const auto b = loaded.forward(ctx, x, false).to_vector(ctx);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) ASSERT_FLOAT_EQ(a[i], b[i]) << i;
  fs::remove(file);
}

TEST(StyleTransfer, AdamLowersTheLossOnVgg19) {
  Context ctx;
  StyleOptions o = small_options(32, 8, "adam");
  o.lr = 0.01f;
  Sequential net = make_style_network(ctx, o, "random:1");
  const Image content = read_image(kData + "chelsea.png");
  const Image style = read_image(kData + "brick.png");
  StyleResult r = run_style_transfer(ctx, net, content, {style}, o);
  ASSERT_EQ(r.log.size(), 1u);
  ASSERT_EQ(r.log[0].size(), 9u);  // iters + 1 rows
  EXPECT_LT(r.log[0].back().total, r.log[0].front().total);
  EXPECT_NEAR(r.log[0][0].content, 0.0, 1e-9);  // init = content
  EXPECT_EQ(r.image.width, 32);
  EXPECT_EQ(r.image.height, 21);  // 451x300 -> 32 on the longest side
  for (float v : r.image.pixels) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
}

TEST(StyleTransfer, LbfgsLowersTheLossAndPoolPeakDoesNotGrow) {
  Context ctx;
  StyleOptions o = small_options(32, 6, "lbfgs");
  o.print_every = 1;
  o.init = StyleInit::random;
  Sequential net = make_style_network(ctx, o, "random:1");
  const Image content = read_image(kData + "chelsea.png");
  const Image style = read_image(kData + "brick.png");
  std::vector<std::size_t> peaks;
  StyleCallbacks cb;
  cb.on_progress = [&](const StyleProgress& p) { peaks.push_back(p.pool_peak_bytes); };
  StyleResult r = run_style_transfer(ctx, net, content, {style}, o, cb);
  EXPECT_LT(r.log[0].back().total, r.log[0].front().total);
  ASSERT_EQ(peaks.size(), 7u);
  // The pool's high-water mark is reached by the second iteration and stays there.
  for (std::size_t i = 2; i < peaks.size(); ++i) EXPECT_EQ(peaks[i], peaks[2]) << i;
}

TEST(StyleTransfer, ScalesAndOriginalColors) {
  Context ctx;
  StyleOptions o = small_options(0, 2, "adam");
  o.scales = {16, 24};
  o.color_transfer = ColorTransfer::luminance;
  o.style_layers = {"relu1_1", "relu2_1"};
  o.content_layers = {"relu2_2"};
  Sequential net = make_style_network(ctx, o, "random:2");
  EXPECT_EQ(net.layers().back().first, vgg_layer_name(19, "relu2_2"));
  StyleResult r = run_style_transfer(ctx, net, read_image(kData + "chelsea.png"), {read_image(kData + "brick.png")}, o);
  EXPECT_EQ(r.log.size(), 2u);
  EXPECT_EQ(r.image.width, 24);
}

TEST(StyleTransfer, MemoryEstimateRefusesNamingTheLargestSize) {
  Context ctx;
  StyleOptions o;
  Sequential net = make_style_network(ctx, o, "random:1");
  const std::size_t small = estimate_style_bytes(net, o, 64, 64);
  const std::size_t big = estimate_style_bytes(net, o, 512, 512);
  EXPECT_GT(big, 4 * small);  // activations and L-BFGS history grow with the pixel count
  if (available_memory(ctx) == 0) GTEST_SKIP() << "available memory unknown";
  try {
    check_style_memory(ctx, net, o, 1 << 15, 1 << 15);
    FAIL() << "a 32768 px image should not fit";
  } catch (const Error& e) {
    // The library names the field; the CLI spells it as its flag (message(flag) below).
    EXPECT_NE(std::string(e.what()).find("largest size that fits is size "), std::string::npos) << e.what();
    const auto* option = dynamic_cast<const StyleOptionError*>(&e);
    ASSERT_NE(option, nullptr);
    EXPECT_EQ(option->field(), StyleField::size);
    const std::string cli = option->message(+[](StyleField f) { return "--" + std::string(style_field_name(f)); });
    EXPECT_NE(cli.find("largest size that fits is --size "), std::string::npos) << cli;
    EXPECT_NE(cli.find("with --optimizer lbfgs"), std::string::npos) << cli;
  }
}

// relu5_1 sits behind four 2x2 poolings: a thin image is refused before any work, naming the
// image, what it becomes and the smallest --size that passes (16x11 used to reach a pooling of a
// 1-pixel plane).
TEST(StyleTransfer, ImagesTooSmallForThePoolingsAreRefusedNamingTheSize) {
  Context ctx;
  StyleOptions o;
  o.size = 16;
  Sequential net = make_style_network(ctx, o, "random:1");
  const Image wide(451, 300, 3), square(64, 64, 3);
  cudl::testing::expect_error([&] { check_style_sizes(net, o, wide, {square}); },
                              {"content image (451x300) becomes 16x11 at size 16", "use size >= 24"});
  o.size = 24;
  EXPECT_NO_THROW(check_style_sizes(net, o, wide, {square}));
  o.style_scale = 0.5f;
  o.size = 32;
  const Image thin_style(300, 40, 3);
  cudl::testing::expect_error([&] { check_style_sizes(net, o, wide, {thin_style}); },
                              {"style image (300x40)", "at size 32"});
  o.scales = {16, 64};  // every scale is checked, not only the last
  cudl::testing::expect_error([&] { check_style_sizes(net, o, wide, {square}); }, {"at scales 16"});
}

TEST(StyleTransfer, CudaMatchesCpuForAFewIterations) {
  CUDL_REQUIRE_CUDA();
  Context cpu, gpu(Device::cuda(0));
  for (const std::string optimizer : {"adam", "lbfgs"}) {
    StyleOptions o = small_options(32, 3, optimizer);
    Sequential ncpu = make_style_network(cpu, o, "random:1");
    Sequential ngpu = make_style_network(gpu, o, "random:1");
    const Image content = read_image(kData + "chelsea.png"), style = read_image(kData + "brick.png");
    StyleResult a = run_style_transfer(cpu, ncpu, content, {style}, o);
    StyleResult b = run_style_transfer(gpu, ngpu, content, {style}, o);
    for (std::size_t k = 0; k < a.log[0].size(); ++k)
      EXPECT_NEAR(b.log[0][k].total, a.log[0][k].total, 1e-3 * std::abs(a.log[0][k].total) + 1e-6)
          << optimizer << " row " << k;
    for (std::size_t i = 0; i < a.image.pixels.size(); ++i)
      ASSERT_NEAR(b.image.pixels[i], a.image.pixels[i], 2e-3) << optimizer << " pixel " << i;
  }
}

// ---------------------------------------------------------------- the CLI

int run_cli(const std::string& args) {
  const std::string cmd = fmt::format("'{}' {} > /dev/null 2>&1", cudl::testing::cli_path(), args);
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

class StyleCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("cudl_style_cli_{}", ::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary) << bytes;
  }
  std::string base(const std::string& content, const std::string& style, const std::string& weights,
                   int iters = 1) const {
    return fmt::format(
        "style --content '{}' --style '{}' --output '{}' --weights '{}' --size 16 --iters {} "
        "--device cpu --style-layers relu1_1 --content-layers relu1_2",
        content, style, path("out.png"), weights, iters);
  }
  fs::path dir_;
};

TEST_F(StyleCli, RunsAndWritesTheLog) {
  const std::string args = base(kData + "chelsea.png", kData + "brick.png", "random:1", 3) +
                           fmt::format(" --optimizer adam --log '{}'", path("log.csv"));
  ASSERT_EQ(run_cli(args), 0);
  EXPECT_TRUE(fs::exists(path("out.png")));
  std::ifstream log(path("log.csv"));
  std::string line;
  std::getline(log, line);
  EXPECT_EQ(line, "iteration,total,content,style,tv,content_relu1_2,style_relu1_1");  // then per layer
  int rows = 0;
  while (std::getline(log, line)) ++rows;
  EXPECT_EQ(rows, 4);
}

TEST_F(StyleCli, BadInputsFailWithExitCodeOneAndNoOutput) {
  const std::string good = kData + "chelsea.png", style = kData + "brick.png";
  {
    std::ifstream f(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    write("truncated.png", bytes.substr(0, bytes.size() / 2));
    write("corrupt.png", "\x89PNG\r\n\x1a\n this is not a png at all");
  }
  write("garbage.safetensors", "garbage that is not a safetensors file");
  {
    // A VGG19 file whose first convolution has the wrong shape.
    std::vector<float> w(8 * 3 * 3 * 3, 0.1f), b(8, 0.0f);
    write_safetensors(path("wrong.safetensors"), {{"features.0.weight", "F32", Shape{8, 3, 3, 3}, w.data()},
                                                  {"features.0.bias", "F32", Shape{8}, b.data()}});
    std::ifstream f(path("wrong.safetensors"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    write("truncated.safetensors", bytes.substr(0, bytes.size() - 40));
  }
  const std::vector<std::pair<std::string, std::string>> cases{
      {"missing content", base(path("nope.png"), style, "random:1")},
      {"missing style", base(good, path("nope.png"), "random:1")},
      {"truncated content", base(path("truncated.png"), style, "random:1")},
      {"corrupt style", base(good, path("corrupt.png"), "random:1")},
      {"unreadable content", base(dir_.string(), style, "random:1")},
      {"garbage weights", base(good, style, path("garbage.safetensors"))},
      {"truncated weights", base(good, style, path("truncated.safetensors"))},
      {"wrong-shape weights", base(good, style, path("wrong.safetensors"))},
      {"missing weights file", base(good, style, path("nope.safetensors"))},
      {"no weights", fmt::format("style --content '{}' --style '{}' --output '{}' --size 16 --iters 1 --device cpu",
                                 good, style, path("out.png"))},
      {"bad layer", base(good, style, "random:1") + " --style-layers relu9_9"},
      {"bad seed", base(good, style, "random:x")},
      {"too small for the poolings",
       fmt::format(
           "style --content '{}' --style '{}' --output '{}' --weights random:1 --size 16 --iters 1 --device cpu", good,
           style, path("out.png"))},
  };
  for (const auto& [what, args] : cases) {
    EXPECT_EQ(run_cli(args), 1) << what;
    EXPECT_FALSE(fs::exists(path("out.png"))) << what;
  }
}

// A separate suite: a random VGG19 with its classifier (143M parameters) takes ~10 s on a slow CPU.
class ClassifyCli : public StyleCli {};

TEST_F(ClassifyCli, PrintsTopKMostLikelyFirst) {
  const std::string cmd = fmt::format("'{}' classify --weights random:1 --image '{}' --top 3 --device cpu > '{}'",
                                      cudl::testing::cli_path(), kData + "chelsea.png", path("top.txt"));
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(path("top.txt"));
  std::string line;
  std::vector<double> probs;
  while (std::getline(f, line)) {
    ASSERT_NE(line.find(" - "), std::string::npos) << line;
    ASSERT_EQ(line.find('.'), 1u) << line;  // 0.xxxx
    probs.push_back(std::stod(line));
  }
  ASSERT_EQ(probs.size(), 3u);
  EXPECT_GE(probs[0], probs[1]);
  EXPECT_GE(probs[1], probs[2]);
  EXPECT_EQ(run_cli(fmt::format("classify --image '{}' --device cpu", kData + "chelsea.png")), 1);  // no weights
  EXPECT_EQ(run_cli(fmt::format("classify --weights random:1 --image '{}' --device cpu", path("nope.png"))), 1);
}

}  // namespace
