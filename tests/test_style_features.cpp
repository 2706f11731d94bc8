// Style transfer's controls beyond the plain Gatys loss (issue 14): the TV exponent (an op on both
// backends), normalised gradients, per-layer losses, clamping, colour control (luminance and
// histogram matching), spatial control with guided Gram matrices, tiling of photos larger than
// the device (pool peak bounded by the tile, no seams) and frame sequences with a warm start.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
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

// ---------------------------------------------------------------- TV with an exponent

double naive_tv(const std::vector<float>& x, int planes, int h, int w, double beta) {
  double s = 0;
  for (int p = 0; p < planes; ++p)
    for (int i = 0; i < h; ++i)
      for (int j = 0; j < w; ++j) {
        auto at = [&](int y, int z) { return static_cast<double>(x[static_cast<std::size_t>((p * h + y) * w + z)]); };
        const double a = i + 1 < h ? at(i + 1, j) - at(i, j) : 0.0;
        const double b = j + 1 < w ? at(i, j + 1) - at(i, j) : 0.0;
        if (a * a + b * b > 0) s += std::pow(a * a + b * b, beta / 2);
      }
  return s;
}

class TvBeta : public BackendTest {};

TEST_P(TvBeta, ForwardMatchesTheDefinitionAndBackwardMatchesFiniteDifferences) {
  const int h = 5, w = 6;
  std::vector<float> values(2 * 3 * h * w);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(std::sin(0.7 * double(i)) * 0.5);
  values[3] = values[4] = values[4 + w] = 0.25f;  // a flat pixel: a² + b² = 0, its term and gradient 0
  Tensor x = make(values, Shape{2, 3, h, w});
  Tensor loss = make({0}, Shape{1});
  for (float beta : {2.0f, 1.25f, 1.0f, 3.0f}) {
    backend().tv_loss_forward(ctx(), x, loss, beta);
    const double expected = naive_tv(values, 6, h, w, beta);
    EXPECT_NEAR(host(loss)[0], expected, 1e-5 * expected) << "beta " << beta;
    Tensor dx = make(std::vector<float>(values.size(), 1.0f), x.shape());
    backend().tv_loss_backward(ctx(), x, 0.5f, dx, /*accumulate=*/true, beta);
    const auto analytic = host(dx);
    // Central differences of 0.5 * tv, in double on the host, at a few elements (not the flat one's).
    for (std::size_t i : {std::size_t{0}, std::size_t{7}, std::size_t{20}, std::size_t{95}, std::size_t{170}}) {
      auto xp = values, xm = values;
      const double step = 1e-3;
      xp[i] = static_cast<float>(xp[i] + step);
      xm[i] = static_cast<float>(xm[i] - step);
      const double fd = 0.5 * (naive_tv(xp, 6, h, w, beta) - naive_tv(xm, 6, h, w, beta)) /
                        (static_cast<double>(xp[i]) - static_cast<double>(xm[i]));
      EXPECT_NEAR(analytic[i] - 1.0f, fd, 2e-3 + 2e-3 * std::abs(fd)) << "beta " << beta << " element " << i;
    }
  }
  // beta = 2 is the plain sum of squares, the same op as before.
  Tensor plain = make({0}, Shape{1});
  backend().tv_loss_forward(ctx(), x, plain);
  backend().tv_loss_forward(ctx(), x, loss, 2.0f);
  EXPECT_EQ(host(plain)[0], host(loss)[0]);
  EXPECT_THROW(backend().tv_loss_forward(ctx(), x, loss, 0.5f), Error);
  Tensor dx = make(std::vector<float>(values.size(), 0.0f), x.shape());
  EXPECT_THROW(backend().tv_loss_backward(ctx(), x, 1.0f, dx, false, 5.0f), Error);
}

CUDL_INSTANTIATE_BACKENDS(TvBeta);

// ---------------------------------------------------------------- the objective's options

using cudl::testing::random_image;
using cudl::testing::tiny_style_net;

Image grey(int w, int h, const std::function<float(int, int)>& f) {
  Image m(w, h, 1);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at(y, x, 0) = f(x, y);
  return m;
}

TEST(StyleObjectiveOptions, PerLayerLossesSumToTheTotals) {
  Context ctx;
  Sequential net = tiny_style_net(ctx);
  StyleObjective obj(ctx, net, {"act2", "act1"}, {"act1", "act2"}, 2.0, 1e3, 0.1);
  obj.set_targets(ctx, random_image(ctx, 8, 8, 1), {random_image(ctx, 8, 8, 2)}, {});
  Tensor image = random_image(ctx, 8, 8, 3), grad = Tensor::empty(image.shape(), ctx);
  obj.evaluate(ctx, image, grad);
  const StyleLosses l = obj.read_losses(ctx);
  ASSERT_EQ(l.content_layers.size(), 2u);
  ASSERT_EQ(l.style_layers.size(), 2u);
  EXPECT_GT(l.content_layers[0], 0);
  EXPECT_GT(l.style_layers[1], 0);
  EXPECT_NEAR(l.content_layers[0] + l.content_layers[1], l.content, 1e-5 * l.content);
  EXPECT_NEAR(l.style_layers[0] + l.style_layers[1], l.style, 1e-5 * l.style);
  EXPECT_NEAR(l.content + l.style + l.tv, l.total, 1e-5 * l.total);
}

TEST(StyleObjectiveOptions, NormalizedGradientsDivideEachLossGradientByItsL1Norm) {
  Context ctx;
  Sequential net = tiny_style_net(ctx);
  Tensor content = random_image(ctx, 8, 8, 1), image = random_image(ctx, 8, 8, 2);
  // ‖∂(mean((F−P)²))/∂F‖₁ = 2·mean|F−P|, from the features on the host.
  net.set_taps({"act2"});
  const auto p = (net.forward(ctx, content, false), net.tap("act2").to_vector(ctx));
  const auto f = (net.forward(ctx, image, false), net.tap("act2").to_vector(ctx));
  double l1 = 0;
  for (std::size_t i = 0; i < f.size(); ++i) l1 += 2.0 * std::abs(f[i] - p[i]) / static_cast<double>(f.size());

  StyleObjective raw(ctx, net, {"act2"}, {}, 1.0, 0.0, 0.0);
  raw.set_targets(ctx, content, {}, {});
  Tensor g_raw = Tensor::empty(image.shape(), ctx);
  raw.evaluate(ctx, image, g_raw);
  StyleObjective normalized(ctx, net, {"act2"}, {}, 3.0, 0.0, 0.0, StyleObjectiveOptions{true, 2.0f});
  normalized.set_targets(ctx, content, {}, {});
  Tensor g_norm = Tensor::empty(image.shape(), ctx);
  normalized.evaluate(ctx, image, g_norm);
  const auto a = g_raw.to_vector(ctx), b = g_norm.to_vector(ctx);
  double biggest = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    biggest = std::max(biggest, std::abs(static_cast<double>(b[i])));
    EXPECT_NEAR(b[i], 3.0 * a[i] / l1, 1e-5 + 1e-4 * std::abs(b[i])) << i;
  }
  EXPECT_GT(biggest, 0);
  // The loss values themselves are not normalised.
  EXPECT_NEAR(normalized.read_losses(ctx).content, 3.0 * raw.read_losses(ctx).content, 1e-5);
}

TEST(StyleObjectiveOptions, MaskedLossesMatchFiniteDifferences) {
  Context ctx;
  Sequential net = tiny_style_net(ctx);
  Tensor content = random_image(ctx, 8, 8, 1);
  Tensor style_a = random_image(ctx, 8, 8, 2), style_b = random_image(ctx, 10, 6, 3);
  StyleObjective obj(ctx, net, {"act2"}, {"act1", "act2"}, 2.0, 5e2, 0.0, StyleObjectiveOptions{false, 1.5f});
  obj.set_style_grams(ctx, {obj.style_grams(ctx, style_a), obj.style_grams(ctx, style_b)}, {1.0, 3.0}, true);
  const Image left = grey(8, 8, [](int x, int) { return x < 4 ? 1.0f : 0.2f; });
  const Image right = grey(8, 8, [](int x, int y) { return x >= 4 ? 1.0f : 0.1f * static_cast<float>(y % 2); });
  obj.set_content(ctx, content, grey(8, 8, [](int, int y) { return y < 5 ? 1.0f : 0.5f; }), {left, right});
  Tensor image = random_image(ctx, 8, 8, 4), grad = Tensor::empty(image.shape(), ctx);
  obj.evaluate(ctx, image, grad);
  EXPECT_GT(obj.read_losses(ctx).style, 0);
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
      "masked style objective", opts);
}

TEST(StyleObjectiveOptions, AWhiteMaskIsNoMaskAndABlackRegionGetsNoStyleGradient) {
  Context ctx;
  Sequential net = tiny_style_net(ctx);
  Tensor content = random_image(ctx, 8, 32, 1), style = random_image(ctx, 8, 8, 2);
  Tensor image = random_image(ctx, 8, 32, 3), grad = Tensor::empty(image.shape(), ctx);
  StyleObjective plain(ctx, net, {}, {"act1", "act2"}, 0.0, 1e3, 0.0);
  plain.set_targets(ctx, content, {style}, {});
  plain.evaluate(ctx, image, grad);
  const double unmasked = plain.read_losses(ctx).style;
  StyleObjective masked(ctx, net, {}, {"act1", "act2"}, 0.0, 1e3, 0.0);
  masked.set_style_grams(ctx, {masked.style_grams(ctx, style)}, {}, true);
  masked.set_content(ctx, content, {}, {grey(32, 8, [](int, int) { return 1.0f; })});
  masked.evaluate(ctx, image, grad);
  EXPECT_NEAR(masked.read_losses(ctx).style, unmasked, 1e-5 * unmasked);
  // The style applies to the right half only: the left quarter lies outside every receptive field
  // that reaches the right half (two 3x3 convolutions and a 2x2 pooling: 8 px), so its gradient is 0.
  masked.set_content(ctx, content, {}, {grey(32, 8, [](int x, int) { return x >= 16 ? 1.0f : 0.0f; })});
  masked.evaluate(ctx, image, grad);
  const auto g = grad.to_vector(ctx);
  double inside = 0;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 32; ++x) {
        const float v = g[static_cast<std::size_t>((c * 8 + y) * 32 + x)];
        if (x < 6) {
          ASSERT_EQ(v, 0.0f) << c << "," << y << "," << x;
        } else if (x >= 16) {
          inside += std::abs(v);
        }
      }
  EXPECT_GT(inside, 0);
}

// ---------------------------------------------------------------- colour

TEST(StyleColor, LinearMatchingGivesTheContentsMeanAndCovariance) {
  // Colours well inside [0,1] so that the clamp does not bend the result; three independent
  // signals per image, so that both covariances have full rank.
  Image style(40, 30, 3), content(20, 20, 3);
  for (int y = 0; y < 30; ++y)
    for (int x = 0; x < 40; ++x) {
      const float t = std::sin(0.3f * static_cast<float>(x * y + x)),
                  u = std::cos(0.17f * static_cast<float>(3 * x + y));
      const float v = std::sin(1.3f * static_cast<float>(x) + 0.4f * static_cast<float>(y * y));
      style.at(y, x, 0) = 0.3f + 0.1f * t + 0.02f * v;
      style.at(y, x, 1) = 0.4f + 0.05f * t + 0.05f * u;
      style.at(y, x, 2) = 0.6f - 0.08f * u + 0.03f * v;
    }
  for (int y = 0; y < 20; ++y)
    for (int x = 0; x < 20; ++x) {
      const float t = std::cos(0.5f * static_cast<float>(x + 2 * y)),
                  u = std::sin(0.21f * static_cast<float>(x * x + y));
      const float v = std::cos(2.1f * static_cast<float>(y) + 0.7f * static_cast<float>(x * y));
      content.at(y, x, 0) = 0.55f + 0.1f * u + 0.03f * v;
      content.at(y, x, 1) = 0.5f + 0.07f * t;
      content.at(y, x, 2) = 0.35f + 0.04f * t - 0.06f * u + 0.02f * v;
    }
  const Image out = match_color_moments(style, content);
  ASSERT_EQ(out.width, 40);
  auto stats = [](const Image& im) {
    std::array<double, 3> mean{};
    std::array<double, 9> cov{};
    const double n = static_cast<double>(im.width) * im.height;
    for (int y = 0; y < im.height; ++y)
      for (int x = 0; x < im.width; ++x)
        for (int c = 0; c < 3; ++c) mean[c] += im.at(y, x, c) / n;
    for (int y = 0; y < im.height; ++y)
      for (int x = 0; x < im.width; ++x)
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) cov[a * 3 + b] += (im.at(y, x, a) - mean[a]) * (im.at(y, x, b) - mean[b]) / n;
    return std::make_pair(mean, cov);
  };
  const auto [cm, cc] = stats(content);
  const auto [om, oc] = stats(out);
  const auto [sm, sc] = stats(style);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(om[c], cm[c], 1e-4) << c;
  for (int k = 0; k < 9; ++k) EXPECT_NEAR(oc[k], cc[k], 1e-6) << k;
  EXPECT_GT(std::abs(sm[0] - cm[0]), 0.2);  // it did move the colours
}

TEST(StyleColor, HistogramMatchingGivesEachChannelTheContentsValuesInTheLinearMapsOrder) {
  // Same pixel count (600), different shapes: each output channel holds exactly the content's values.
  Image style(30, 20, 3), content(20, 30, 3);
  for (int y = 0; y < 20; ++y)
    for (int x = 0; x < 30; ++x)
      for (int c = 0; c < 3; ++c)
        style.at(y, x, c) = 0.2f + 0.1f * static_cast<float>(c) +
                            0.15f * std::sin(0.37f * static_cast<float>(x * (c + 1)) + 0.11f * static_cast<float>(y));
  for (int y = 0; y < 30; ++y)
    for (int x = 0; x < 20; ++x)
      for (int c = 0; c < 3; ++c)
        content.at(y, x, c) = 0.6f - 0.1f * static_cast<float>(c) +
                              0.3f * std::cos(0.23f * static_cast<float>(y * (c + 2)) + 0.5f * static_cast<float>(x));
  Context ctx;
  const Image out = match_color_histogram(ctx, style, content), linear = match_color_moments(style, content);
  ASSERT_EQ(out.width, 30);
  ASSERT_EQ(out.height, 20);
  for (int c = 0; c < 3; ++c) {
    std::vector<float> got, want, order_out, order_linear;
    for (int y = 0; y < 20; ++y)
      for (int x = 0; x < 30; ++x) {
        got.push_back(out.at(y, x, c));
        order_linear.push_back(linear.at(y, x, c));
      }
    for (int y = 0; y < 30; ++y)
      for (int x = 0; x < 20; ++x) want.push_back(content.at(y, x, c));
    order_out = got;
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << "channel " << c;
    // The pixels keep the linear map's order within each channel: a monotone map of it (the
    // content's own ties may make two neighbours equal).
    for (std::size_t i = 1; i < order_out.size(); ++i) {
      if (order_linear[i - 1] < order_linear[i]) {
        ASSERT_LE(order_out[i - 1], order_out[i]) << c << " " << i;
      } else if (order_linear[i - 1] > order_linear[i]) {
        ASSERT_GE(order_out[i - 1], order_out[i]) << c << " " << i;
      }
    }
  }
}

// ---------------------------------------------------------------- VGG19 runs (random weights)

StyleOptions small_options(int size, int iters) {
  StyleOptions o;
  o.size = size;
  o.iters = iters;
  o.optimizer = StyleOptimizer::adam;
  o.print_every = 0;
  o.content_layers = {"relu1_1"};
  o.style_layers = {"relu1_1"};
  return o;
}

TEST(StyleRun, ClampKeepsTheImageInTheUnitCube) {
  Context ctx;
  StyleOptions o = small_options(24, 3);
  o.lr = 50.0f;  // wild steps: without the clamp the TV explodes
  o.tv_weight = 1.0;
  Sequential net = make_style_network(ctx, o, "random:1");
  const Image content = read_image(kData + "chelsea.png"), style = read_image(kData + "brick.png");
  const StyleResult wild = run_style_transfer(ctx, net, content, {style}, o);
  o.clamp = true;
  const StyleResult tame = run_style_transfer(ctx, net, content, {style}, o);
  // TV of an image in [0,1]: at most 2 per pixel and channel (tv_weight 1).
  const double bound = 2.0 * 3 * 24 * 16;
  EXPECT_GT(wild.log[0].back().tv, bound);
  for (const auto& row : tame.log[0]) EXPECT_LE(row.tv, bound);
}

TEST(StyleRun, HistogramColorTransferRecoloursTheStylesOnce) {
  Context ctx;
  StyleOptions o = small_options(24, 1);
  o.color_transfer = ColorTransfer::histogram;
  Sequential net = make_style_network(ctx, o, "random:1");
  const Image content = read_image(kData + "chelsea.png"), style = read_image(kData + "brick.png");
  const StyleResult plain = run_style_transfer(ctx, net, content, {style}, small_options(24, 1));
  StyleRunner runner(ctx, net, {style}, o);
  const StyleResult r = runner.run(content);
  // Recoloured style targets give another style loss from the same start.
  EXPECT_NE(r.log[0][0].style, plain.log[0][0].style);
  runner.run(content);
  EXPECT_EQ(runner.style_target_computations(), 1);
}

TEST(StyleRun, FramesReuseTheStyleTargetsAndStartFromThePreviousFrame) {
  Context ctx;
  StyleOptions o = small_options(24, 2);
  Sequential net = make_style_network(ctx, o, "random:1");
  const Image content = read_image(kData + "chelsea.png"), style = read_image(kData + "brick.png");
  StyleRunner runner(ctx, net, {style}, o);
  const StyleResult first = runner.run(content);
  const StyleResult second = runner.run(content, &first.image);
  EXPECT_EQ(runner.style_target_computations(), 1);
  // Warm start: the second frame's first evaluation is of the first frame's result, not of the content.
  EXPECT_NEAR(second.log[0][0].total, first.log[0].back().total, 1e-3 * first.log[0].back().total);
  EXPECT_GT(second.log[0][0].content, 0.0);
}

// ---------------------------------------------------------------- tiles

TEST(StyleTiles, CoverTheImageWithTheOverlapFlushWithTheEdges) {
  const auto tiles = style_tiles(1000, 300, 256, 32);
  std::vector<int> xs, ys;
  for (const auto& t : tiles) {
    EXPECT_LE(t.x + t.width, 1000);
    EXPECT_LE(t.y + t.height, 300);
    EXPECT_EQ(t.width, 256);
    EXPECT_EQ(t.height, 256);
    if (t.y == 0) xs.push_back(t.x);
    if (t.x == 0) ys.push_back(t.y);
  }
  EXPECT_EQ(xs, (std::vector<int>{0, 224, 448, 672, 744}));
  EXPECT_EQ(ys, (std::vector<int>{0, 44}));
  EXPECT_EQ(tiles.size(), 10u);
  const auto one = style_tiles(200, 100, 256, 32);  // smaller than a tile: one tile, the image
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].width, 200);
  EXPECT_EQ(one[0].height, 100);
}

// Mean |x[j+1] − x[j]| along rows (horizontal) for each column j, over every row and channel.
std::vector<double> column_steps(const Image& im) {
  std::vector<double> out(static_cast<std::size_t>(im.width - 1), 0.0);
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x + 1 < im.width; ++x)
      for (int c = 0; c < 3; ++c)
        out[static_cast<std::size_t>(x)] += std::abs(im.at(y, x + 1, c) - im.at(y, x, c)) / (3.0 * im.height);
  return out;
}

Image transpose(const Image& im) {
  Image t(im.height, im.width, im.channels);
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      for (int c = 0; c < im.channels; ++c) t.at(x, y, c) = im.at(y, x, c);
  return t;
}

TEST(StyleTiles, A1024RunIn256TilesStaysNearThe256RunsPeakWithoutSeams) {
  Context ctx;
  // A square photo, so that a 256 px run and a 256 px tile hold the same number of pixels.
  const Image chelsea = read_image(kData + "chelsea.png");
  const Image content = resize(crop(chelsea, 75, 0, 300, 300), 1024, 1024);
  const Image style = read_image(kData + "brick.png");
  StyleOptions o = small_options(256, 3);
  o.style_weight = 1e8;  // a visible change in three steps, so that a seam would show
  o.lr = 0.05f;
  Sequential net = make_style_network(ctx, o, "random:1");
  ctx.allocator().reset_peak_stats();
  const StyleResult small = run_style_transfer(ctx, net, content, {style}, o);
  const std::size_t small_peak = std::max(small.pool_peak_bytes, ctx.allocator().stats().peak_allocated_bytes);

  o.size = 1024;
  o.tile = 256;
  ctx.allocator().reset_peak_stats();
  std::vector<int> tiles_seen;
  StyleCallbacks cb;
  cb.on_progress = [&](const StyleProgress& p) { tiles_seen.push_back(p.tiles); };
  const StyleResult big = run_style_transfer(ctx, net, content, {style}, o, cb);
  const std::size_t big_peak = std::max(big.pool_peak_bytes, ctx.allocator().stats().peak_allocated_bytes);
  ASSERT_EQ(big.image.width, 1024);
  ASSERT_EQ(big.log.size(), 25u);  // 5 x 5 tiles of 256 overlapping by >= 32
  // The closing ms/iteration is the whole run's (issue 23 item 10), not the last tile's.
  EXPECT_EQ(big.iterations, 25 * 3);
  EXPECT_NEAR(big.ms_per_iteration, 1000.0 * big.optimise_seconds / 75.0, 1e-9);
  ASSERT_FALSE(tiles_seen.empty());
  EXPECT_EQ(tiles_seen.front(), 25);
  std::printf("pool peak: 256 px run %.2f MiB, 1024 px run in 256 px tiles %.2f MiB (%.2fx)\n",
              static_cast<double>(small_peak) / (1 << 20), static_cast<double>(big_peak) / (1 << 20),
              static_cast<double>(big_peak) / static_cast<double>(small_peak));
  EXPECT_LT(static_cast<double>(big_peak), 1.5 * static_cast<double>(small_peak));
  // An untiled 1024 px run would need about 16x the pixels of a tile.
  EXPECT_GT(estimate_style_bytes(net, o, 1024, 1024), 8 * estimate_style_bytes(net, o, 256, 256));

  // The optimisation moved the image (else no seam could show) ...
  double moved = 0;
  for (std::size_t i = 0; i < big.image.pixels.size(); ++i)
    moved += std::abs(big.image.pixels[i] - content.pixels[i]) / static_cast<double>(big.image.pixels.size());
  EXPECT_GT(moved, 0.01);
  // ... and across the tile borders (every column or row within an overlap, and the one on each
  // side) the mean step between neighbouring pixels stays within the range of the interior's.
  const auto tiles = style_tiles(1024, 1024, 256, 32);
  std::vector<bool> border(1023, false);
  for (const auto& t : tiles)
    if (t.x > 0)
      for (int j = t.x - 2; j <= t.x + 34 && j < 1023; ++j) border[static_cast<std::size_t>(j)] = true;
  for (const Image& im : {big.image, transpose(big.image)}) {
    const auto steps = column_steps(im);
    double interior_max = 0, border_max = 0;
    for (std::size_t j = 0; j < steps.size(); ++j)
      (border[j] ? border_max : interior_max) = std::max(border[j] ? border_max : interior_max, steps[j]);
    EXPECT_GT(interior_max, 0);
    EXPECT_LE(border_max, interior_max) << "a seam: border step " << border_max << " vs interior " << interior_max;
  }
}

// ---------------------------------------------------------------- the CLI

int run_cli(const std::string& args) {
  const std::string cmd = fmt::format("'{}' {} > /dev/null 2>&1", cudl::testing::cli_path(), args);
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

class StyleFeaturesCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("cudl_style_features_{}", ::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string base() const {
    return fmt::format(
        "style --style '{}' --weights random:1 --size 32 --iters 2 --optimizer adam --device cpu "
        "--style-layers relu1_1,relu2_1 --content-layers relu2_1",
        kData + "brick.png");
  }
  std::string one() const {
    return base() + fmt::format(" --content '{}' --output '{}'", kData + "chelsea.png", path("out.png"));
  }
  fs::path dir_;
};

TEST_F(StyleFeaturesCli, NewOptionsRunAndTheLogHasPerLayerColumns) {
  write_image(path("left.png"), grey(40, 30, [](int x, int) { return x < 20 ? 1.0f : 0.0f; }));
  const std::string args =
      one() + fmt::format(
                  " --normalize-gradients --tv-beta 1.25 --clamp --color-transfer histogram --content-mask '{}' "
                  "--style-masks '{}' --log '{}'",
                  path("left.png"), path("left.png"), path("log.csv"));
  ASSERT_EQ(run_cli(args), 0);
  EXPECT_TRUE(fs::exists(path("out.png")));
  std::ifstream log(path("log.csv"));
  std::string line;
  std::getline(log, line);
  EXPECT_EQ(line, "iteration,total,content,style,tv,content_relu2_1,style_relu1_1,style_relu2_1");
}

TEST_F(StyleFeaturesCli, FramesAreStylisedInNameOrder) {
  fs::create_directories(path("in"));
  fs::create_directories(path("out"));
  const Image frame = read_image(kData + "chelsea.png");
  for (const char* name : {"f2.png", "f0.png", "f1.jpg"}) write_image(path(std::string("in/") + name), frame);
  fs::create_directories(path("in/not-a-frame.png"));  // a folder with an image's name is no frame
  const std::string args = base() + fmt::format(" --content-dir '{}' --output-dir '{}' --log '{}'", path("in"),
                                                path("out"), path("log.csv"));
  ASSERT_EQ(run_cli(args), 0);
  for (const char* name : {"f0.png", "f1.jpg", "f2.png"}) EXPECT_TRUE(fs::exists(path(std::string("out/") + name)));
  std::ifstream log(path("log.csv"));
  std::string line;
  int rows = 0;
  while (std::getline(log, line)) ++rows;
  EXPECT_EQ(rows, 1 + 3 * 3);  // header, then iters + 1 rows per frame
}

TEST_F(StyleFeaturesCli, BadNewOptionsFailBeforeAnyWork) {
  write_image(path("black.png"), grey(8, 8, [](int, int) { return 0.0f; }));
  write_image(path("white.png"), grey(8, 8, [](int, int) { return 1.0f; }));
  fs::create_directories(path("empty"));
  fs::create_directories(path("frames_out"));
  const std::vector<std::pair<std::string, std::string>> cases{
      {"tile below 64", one() + " --tile 32"},
      {"tile larger than the image", one() + " --tile 64"},
      {"overlap over half the tile", one() + " --size 256 --tile 64 --tile-overlap 40"},
      {"overlap without a tile", one() + " --tile-overlap 8"},
      {"tv beta out of range", one() + " --tv-beta 0.5"},
      {"bad colour transfer", one() + " --color-transfer sepia"},
      {"contradicting colours", one() + " --color-transfer histogram --original-colors"},
      {"bad model type", one() + " --model-type tensorflow"},
      {"missing content mask", one() + fmt::format(" --content-mask '{}'", path("nope.png"))},
      {"black content mask", one() + fmt::format(" --content-mask '{}'", path("black.png"))},
      {"two masks for one style",
       one() + fmt::format(" --style-masks '{}','{}'", path("white.png"), path("white.png"))},
      {"missing style mask", one() + fmt::format(" --style-masks '{}'", path("nope.png"))},
      {"missing content dir",
       base() + fmt::format(" --content-dir '{}' --output-dir '{}'", path("nope"), path("frames_out"))},
      {"empty content dir",
       base() + fmt::format(" --content-dir '{}' --output-dir '{}'", path("empty"), path("frames_out"))},
      {"content dir without output dir", base() + fmt::format(" --content-dir '{}'", kData)},
      {"both content and content dir",
       one() + fmt::format(" --content-dir '{}' --output-dir '{}'", kData, path("frames_out"))},
      {"neither content nor content dir", base() + fmt::format(" --output '{}'", path("out.png"))},
  };
  for (const auto& [what, args] : cases) {
    EXPECT_EQ(run_cli(args), 1) << what;
    EXPECT_FALSE(fs::exists(path("out.png"))) << what;
    EXPECT_TRUE(fs::is_empty(path("frames_out"))) << what;
  }
}

}  // namespace
