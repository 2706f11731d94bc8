// Style transfer's typed options (models/style/style_options.hpp): the enums' names, the one check that
// names the field, the bounds the CLI shares with the library, and the plan of scales and tiles.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "cudl/models/style/style_options.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;

const std::string kData = cudl::testing::source_dir() + "/tests/data/";

// The message check_style_options throws for `o`, and the field it names ("" when it passes).
std::pair<std::string, std::string> refusal(const StyleOptions& o) {
  try {
    check_style_options(o);
  } catch (const StyleOptionError& e) {
    return {e.what(), style_field_name(e.field())};
  }
  return {};
}

TEST(StyleOptions, EnumsParseTheirNamesAndRefuseOthersNamingTheField) {
  for (auto c : {ColorTransfer::none, ColorTransfer::luminance, ColorTransfer::linear, ColorTransfer::histogram})
    EXPECT_EQ(parse_color_transfer(color_transfer_name(c)), c);
  for (auto m : {StyleModel::torchvision, StyleModel::caffe}) EXPECT_EQ(parse_style_model(style_model_name(m)), m);
  for (auto o : {StyleOptimizer::lbfgs, StyleOptimizer::adam})
    EXPECT_EQ(parse_style_optimizer(style_optimizer_name(o)), o);
  for (auto p : {StylePooling::max, StylePooling::avg}) EXPECT_EQ(parse_style_pooling(style_pooling_name(p)), p);
  try {
    (void)parse_style_optimizer("sgd");
    ADD_FAILURE() << "sgd parsed";
  } catch (const StyleOptionError& e) {
    EXPECT_EQ(e.field(), StyleField::optimizer);
    EXPECT_EQ(e.problem(), "must be lbfgs or adam, got 'sgd'");
  }
  try {
    (void)parse_color_transfer("sepia");
    ADD_FAILURE() << "sepia parsed";
  } catch (const StyleOptionError& e) {
    EXPECT_EQ(e.problem(), "must be none, luminance, linear or histogram, got 'sepia'");
  }
}

TEST(StyleOptions, InitTakesContentRandomOrAnImagePath) {
  StyleOptions o;
  set_style_init(o, "random");
  EXPECT_EQ(o.init, StyleInit::random);
  set_style_init(o, "photo.png");
  EXPECT_EQ(o.init, StyleInit::image);
  EXPECT_EQ(o.init_image, "photo.png");
  set_style_init(o, "content");
  EXPECT_EQ(o.init, StyleInit::content);
  EXPECT_TRUE(o.init_image.empty());
  o.init = StyleInit::image;  // an image without a file
  EXPECT_EQ(refusal(o).second, "init");
}

// Each numeric field: its bounds' ends pass, one step outside is refused naming the field.
TEST(StyleOptions, EveryNumericFieldIsJudgedByItsBounds) {
  struct Case {
    StyleField field;
    void (*set)(StyleOptions&, double);
  };
  const std::vector<Case> cases{
      {StyleField::size, [](StyleOptions& o, double v) { o.size = static_cast<int>(v); }},
      {StyleField::iters, [](StyleOptions& o, double v) { o.iters = static_cast<int>(v); }},
      {StyleField::lbfgs_history, [](StyleOptions& o, double v) { o.lbfgs_history = static_cast<int>(v); }},
      {StyleField::tv_beta, [](StyleOptions& o, double v) { o.tv_beta = v; }},
      {StyleField::print_every, [](StyleOptions& o, double v) { o.print_every = static_cast<int>(v); }},
      {StyleField::save_every, [](StyleOptions& o, double v) { o.save_every = static_cast<int>(v); }},
      {StyleField::style_scale, [](StyleOptions& o, double v) { o.style_scale = v; }},
  };
  for (const auto& c : cases) {
    const StyleBounds b = *style_bounds(c.field);
    const std::string name = style_field_name(c.field);
    StyleOptions o;
    o.size = 64;  // style_scale's upper end must not push the style images past kMaxStyleSide
    if (c.field != StyleField::style_scale) {
      c.set(o, b.lo);
      EXPECT_EQ(refusal(o).second, "") << name << " at " << b.lo << ": " << refusal(o).first;
    }
    StyleOptions hi = o;
    c.set(hi, c.field == StyleField::style_scale ? 100 : b.hi);
    EXPECT_EQ(refusal(hi).second, "") << name << ": " << refusal(hi).first;
    StyleOptions below = o;
    c.set(below, b.whole ? b.lo - 1 : (b.lo_open ? b.lo : b.lo - 0.5));
    EXPECT_EQ(refusal(below).second, name) << refusal(below).first;
    StyleOptions above = o;
    c.set(above, b.whole ? b.hi + 1 : b.hi + 0.5);
    EXPECT_EQ(refusal(above).second, name) << refusal(above).first;
  }
  StyleOptions nan;
  nan.tv_weight = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(refusal(nan).second, "tv_weight");
}

TEST(StyleOptions, TileIsZeroOrAtLeast64AndSmallerThanTheImage) {
  StyleOptions o;
  o.size = 512;
  o.tile = 32;
  EXPECT_EQ(refusal(o).first,
            fmt::format("style: tile must be 0 or a whole number in [64, {}], got 32", kMaxStyleSide));
  o.tile = 64;
  EXPECT_EQ(refusal(o).first, "");
  o.tile = 512;
  EXPECT_EQ(refusal(o).second, "tile");
  o.tile = 0;
  o.tile_overlap = 8;
  EXPECT_EQ(refusal(o).first, "style: tile_overlap 8 needs a tile");
  o.tile = 128;
  o.tile_overlap = 65;
  EXPECT_EQ(refusal(o).first, "style: tile_overlap must be at most half of the tile 128 (64), got 65");
}

TEST(StyleOptions, CheckedOptionsCheckOnConstruction) {
  StyleOptions bad;
  bad.iters = -1;
  EXPECT_THROW(CheckedStyleOptions{bad}, StyleOptionError);
  StyleOptions good;
  good.iters = 7;
  const CheckedStyleOptions checked(good);
  EXPECT_EQ(checked->iters, 7);
}

// The tiling decision: only the last scale is tiled, its work is one tile, the smaller scales are
// whole images.
TEST(StyleOptions, PlanTilesOnlyTheLastScale) {
  StyleOptions o;
  o.scales = {200, 1000};
  o.tile = 256;
  o.tile_overlap = 32;
  const auto plan = plan_style_scales(o, 2000, 600);  // 1000x300 at the last scale
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_FALSE(plan[0].tiled);
  EXPECT_EQ(plan[0].width, 200);
  EXPECT_EQ(plan[0].height, 60);
  EXPECT_EQ(plan[0].work_width, 200);
  ASSERT_EQ(plan[0].tiles.size(), 1u);
  EXPECT_TRUE(plan[1].tiled);
  EXPECT_EQ(plan[1].work_width, 256);
  EXPECT_EQ(plan[1].work_height, 256);
  const auto tiles = style_tiles(1000, 300, 256, 32);
  ASSERT_EQ(plan[1].tiles.size(), tiles.size());
  for (std::size_t i = 0; i < tiles.size(); ++i) EXPECT_EQ(plan[1].tiles[i].x, tiles[i].x);
  // Untiled options: every scale is one whole image.
  o.tile = 0;
  o.tile_overlap = -1;
  const auto whole = plan_style_scales(o, 2000, 600);
  EXPECT_FALSE(whole[1].tiled);
  EXPECT_EQ(whole[1].work_width, 1000);
  EXPECT_EQ(whole[1].work_height, 300);
}

// The CLI's parse-time validators come from the library's bounds, and the library's refusals come
// back with the flag's name: both ends of --tile agree.
class StyleOptionsCli : public ::testing::Test {
 protected:
  std::string run(const std::string& extra, const std::string& layers = "relu1_1") {
    const std::string err = (dir_.path() / "err.txt").string();
    const std::string cmd = fmt::format(
        "'{}' style --content '{}' --style '{}' --output '{}' --weights random:1 --size 32 --iters 1 --device cpu "
        "--style-layers {} --content-layers {} {} > /dev/null 2> '{}'",
        cudl::testing::cli_path(), kData + "chelsea.png", kData + "brick.png", (dir_.path() / "out.png").string(),
        layers, layers, extra, err);
    const int status = std::system(cmd.c_str());
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    return cudl::testing::slurp(err);
  }
  cudl::testing::TempDir dir_;
  int status_ = 0;
};

TEST_F(StyleOptionsCli, RefusalsNameTheFlagWithTheLibrarysRange) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"--tile 32", fmt::format("--tile: 32 must be 0 or a whole number in [64, {}]", kMaxStyleSide)},
      {"--tile 64", "style: --tile 64 must be smaller than the image's longest side 32"},
      {"--tile-overlap 8", "style: --tile-overlap 8 needs a tile"},
      {"--optimizer sgd", "--optimizer: must be lbfgs or adam, got 'sgd'"},
      {"--pooling min", "--pooling: must be max or avg, got 'min'"},
      {"--style-scale 101", "--style-scale: 101 must be a finite number in (0, 100]"},
      {"--style-blend-weights 0", "style: --style-blend-weights sum to 0"},
  };
  // A sentence from the library with the field inside it: the flag there too.
  EXPECT_NE(run("--scales 16", "relu5_1")
                .find("style: the content image (451x300) becomes 16x11 at --scales 16, too small for the network's "
                      "poolings up to its deepest loss layer: use --scales >= 24"),
            std::string::npos);
  EXPECT_EQ(status_, 1);
  for (const auto& [args, fragment] : cases) {
    const std::string err = run(args);
    EXPECT_EQ(status_, 1) << args;
    EXPECT_NE(err.find(fragment), std::string::npos) << args << ": " << err;
    EXPECT_EQ(err.find("tile_overlap"), std::string::npos) << err;  // a field name never reaches the user
  }
  // 0 is the optimizer's default step in both.
  run("--lr 0 --optimizer adam");
  EXPECT_EQ(status_, 0);
}

}  // namespace
