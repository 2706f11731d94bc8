#pragma once
// The typed options of style transfer, their one check, and the run's plan (scales, tiles, the
// size each optimisation works on). The library names what is wrong by the option's field
// (StyleOptionError); the CLI maps the field to its flag, so the two never disagree on a range.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/image.hpp"

namespace cudl {

// How the output's colours relate to the content's (Gatys et al. 2017, "Controlling perceptual
// factors"): none; luminance: the result's luminance with the content's chroma (YIQ, after the
// optimisation, neural-style's -original_colors); before the optimisation, each style image's
// colours mapped to the content's: linear, to its mean and covariance; histogram, that and then
// each channel's histogram matched exactly by sorting.
enum class ColorTransfer { none, luminance, linear, histogram };

// The VGG19 the weights come from. torchvision: RGB in [0,1] normalised by the ImageNet mean and
// std. caffe: VGG_ILSVRC_19_layers, which expects BGR in 0-255 minus the mean pixel (103.939,
// 116.779, 123.68); tools/convert_caffe_vgg19.py stores its weights with torchvision names and
// conv1_1's input channels in RGB order, so the network only scales by 255 and subtracts the mean.
enum class StyleModel { torchvision, caffe };

// The image's optimizer: L-BFGS (neural-style's default) or Adam. Not layers' OptimizerKind,
// which names the parameter optimizers of training (no L-BFGS there).
enum class StyleOptimizer { lbfgs, adam };

// The VGG's poolings: max (torchvision's) or average (Gatys et al. found it smoother).
enum class StylePooling { max, avg };

// Where the first scale starts: the content, seeded noise, or an image file (init_image).
enum class StyleInit { content, random, image };

// Names <-> values; parse_* throws naming what it expected.
ColorTransfer parse_color_transfer(const std::string& name);    // none | luminance | linear | histogram
StyleModel parse_style_model(const std::string& name);          // torchvision | caffe
StyleOptimizer parse_style_optimizer(const std::string& name);  // lbfgs | adam
StylePooling parse_style_pooling(const std::string& name);      // max | avg
const char* color_transfer_name(ColorTransfer c);
const char* style_model_name(StyleModel m);
const char* style_optimizer_name(StyleOptimizer o);
const char* style_pooling_name(StylePooling p);
const char* style_init_name(StyleInit i);  // content | random | image

// The longest side style transfer takes, for the content (size, scales) and the style images.
constexpr int kMaxStyleSide = 1 << 15;
// The smallest tile side: below it the receptive field of relu5_1 covers most of the tile.
constexpr int kMinStyleTile = 64;

struct StyleOptions {
  int size = 512;                           // longest side of the output
  double style_scale = 1.0;                 // style images sized to size * style_scale on their longest side
  std::vector<double> style_blend_weights;  // empty: equal; normalised to sum 1
  int iters = 1000;                         // per scale
  StyleOptimizer optimizer = StyleOptimizer::lbfgs;
  float lr = 0.0f;  // 0: the optimizer's default (L-BFGS 1, Adam 0.04 ≈ neural-style's 10 on 0-255)
  int lbfgs_history = 100;
  double content_weight = 1.0;  // default_style_weights(model) gives the model type's defaults
  double style_weight = 1e6;
  double tv_weight = 1e-3;
  double tv_beta = 2.0;              // TV exponent, in [1, 4]
  bool normalize_gradients = false;  // neural-style's -normalize_gradients: each loss's gradient / its L1 norm
  bool clamp = false;                // clamp the image to [0,1] after every step
  StyleModel model = StyleModel::torchvision;
  ColorTransfer color_transfer = ColorTransfer::none;
  // Spatial control: empty (width 0) for none; otherwise grey images of any size (resized to the
  // content's frame), white where the loss applies. style_masks: none or one per style image.
  Image content_mask;
  std::vector<Image> style_masks;
  // Tiling of the last scale: 0 for none, else the tile side in pixels (>= kMinStyleTile); the
  // image is optimised tile by tile with the whole style images' targets. overlap < 0: tile / 8.
  int tile = 0;
  int tile_overlap = -1;
  std::vector<std::string> content_layers{"relu4_2"};
  std::vector<std::string> style_layers{"relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"};
  StyleInit init = StyleInit::content;
  std::string init_image;  // with StyleInit::image
  StylePooling pooling = StylePooling::max;
  std::vector<int> scales;  // coarse to fine longest sides; empty: {size}
  int print_every = 50;     // progress callback period (losses read back then only)
  int save_every = 0;       // intermediate image callback period (0: never)
  std::uint64_t seed = 0;   // random init
};

// "content", "random" or an image path, as neural-style's -init takes it.
void set_style_init(StyleOptions& options, const std::string& spec);

// The fields check_style_options judges, so that a caller (the CLI) can name them its own way.
enum class StyleField {
  size,
  scales,
  style_scale,
  style_blend_weights,
  iters,
  optimizer,
  lr,
  lbfgs_history,
  content_weight,
  style_weight,
  tv_weight,
  tv_beta,
  model,
  color_transfer,
  content_mask,
  style_masks,
  tile,
  tile_overlap,
  content_layers,
  style_layers,
  init,
  pooling,
  print_every,
  save_every,
};
const char* style_field_name(StyleField f);  // the StyleOptions member's name: "tile_overlap"

// The range of a numeric field (each item of a list field): [lo, hi], lo open if lo_open, and 0
// allowed besides when zero_also (tile: 0 for none). check_style_options judges by these, and the
// CLI builds its validators from them, so the two cannot disagree. Fields that are not numbers:
// nullopt.
struct StyleBounds {
  double lo = 0, hi = 0;
  bool lo_open = false, zero_also = false, whole = false;
};
std::optional<StyleBounds> style_bounds(StyleField f);
// "must be in [16, 32768], got 8", or empty when `value` is within the field's bounds.
std::string style_bounds_problem(StyleField f, double value);

// What the style library throws about an option: "style: <field> <problem>" (or, with
// field_first false, "style: <problem>" for a sentence that names fields where it needs them).
// The problem may name other fields as "<tile>"; message() spells every field with the caller's
// names (the CLI's flags), what() with the StyleOptions members' names.
class StyleOptionError : public Error {
 public:
  StyleOptionError(StyleField field, std::string problem, bool field_first = true);
  StyleField field() const { return field_; }
  const std::string& problem() const { return problem_; }
  std::string message(const char* (*name)(StyleField)) const;
  std::string message(std::string (*name)(StyleField)) const;

 private:
  StyleField field_;
  std::string problem_;
  bool field_first_;
};

// Throws a StyleOptionError when an option is out of range or not finite: sizes in
// [16, kMaxStyleSide] (the style images' size * style_scale too), weights finite floats >= 0,
// lr finite >= 0 (0: the optimizer's default), tiles 0 or in [kMinStyleTile, the last size), masks
// not black everywhere, enums one of their values.
void check_style_options(const StyleOptions& options);

// Options that passed check_style_options: the runner and the size checks take these, so a run
// checks its options once (a StyleOptions converts, checking on the way).
class CheckedStyleOptions {
 public:
  CheckedStyleOptions(StyleOptions options);  // NOLINT: implicit on purpose, it checks
  const StyleOptions& get() const { return o_; }
  const StyleOptions* operator->() const { return &o_; }

 private:
  StyleOptions o_;
};

// The longest side the style images get when the content's is `size`: size * style_scale, clamped
// to [16, kMaxStyleSide].
int style_image_size(int size, const StyleOptions& options);

// (width, height) with the longest side `longest`, keeping the aspect ratio.
std::pair<int, int> fit_longest_side(int width, int height, int longest);

// The tiles of a width x height image: tiles of side <= tile overlapping by >= overlap, the last
// in each row and column flush with the edge. Exposed for tests.
struct StyleTile {
  int x = 0, y = 0, width = 0, height = 0;
};
std::vector<StyleTile> style_tiles(int width, int height, int tile, int overlap);

// One scale of a run: the image's size, whether it is tiled (only the last scale can be) and the
// size one optimisation works on (the image, or its largest tile).
struct StyleScalePlan {
  int size = 0;  // longest side
  int width = 0, height = 0;
  bool tiled = false;
  std::vector<StyleTile> tiles;  // one covering the image when not tiled
  int work_width = 0, work_height = 0;
};

// The tiling decision, made here only: every scale of `options` for a content image of that size.
std::vector<StyleScalePlan> plan_style_scales(const CheckedStyleOptions& options, int content_width,
                                              int content_height);

}  // namespace cudl
