// Style transfer's options: names of the enums, the one check, and the plan of a run's scales and
// tiles (the only place that decides whether and how a scale is tiled).
#include "cudl/models/style/style_options.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <utility>

#include "cudl/engine/check.hpp"

namespace cudl {

namespace {

// One enum's names, in the enum's order; parse and name go through it so they cannot drift.
template <typename E, std::size_t N>
E parse_named(const std::array<const char*, N>& names, StyleField field, const std::string& name) {
  for (std::size_t i = 0; i < N; ++i)
    if (name == names[i]) return static_cast<E>(i);
  std::string expected;
  for (std::size_t i = 0; i < N; ++i)
    expected += fmt::format("{}{}", i == 0 ? "" : i + 1 == N ? " or " : ", ", names[i]);
  throw StyleOptionError(field, fmt::format("must be {}, got '{}'", expected, name));
}

template <typename E, std::size_t N>
const char* name_of(const std::array<const char*, N>& names, E value) {
  const auto i = static_cast<std::size_t>(value);
  return i < N ? names[i] : "?";
}

template <typename E, std::size_t N>
bool valid(const std::array<const char*, N>&, E value) {
  return static_cast<std::size_t>(value) < N;
}

constexpr std::array<const char*, 4> kColorTransfers{"none", "luminance", "linear", "histogram"};
constexpr std::array<const char*, 2> kModels{"torchvision", "caffe"};
constexpr std::array<const char*, 2> kOptimizers{"lbfgs", "adam"};
constexpr std::array<const char*, 2> kPoolings{"max", "avg"};
constexpr std::array<const char*, 3> kInits{"content", "random", "image"};

// The largest iteration count and callback period: 2^24 iterations at 1 ms each are 4.7 hours.
constexpr int kMaxIters = 1 << 24;
constexpr int kMaxLbfgsHistory = 10000;

[[noreturn]] void refuse(StyleField f, std::string problem) { throw StyleOptionError(f, std::move(problem)); }

void require(bool ok, StyleField f, std::string problem) {
  if (!ok) refuse(f, std::move(problem));
}

template <typename E, std::size_t N>
void require_enum(const std::array<const char*, N>& names, E value, StyleField f) {
  require(valid(names, value), f, fmt::format("is not one of its values (got {})", static_cast<int>(value)));
}

void in_bounds(StyleField f, double value) {
  std::string problem = style_bounds_problem(f, value);
  if (!problem.empty()) refuse(f, std::move(problem));
}

void check_numbers(const StyleOptions& o) {
  const bool has_scales = !o.scales.empty();
  const std::vector<int> scales = has_scales ? o.scales : std::vector<int>{o.size};
  for (int s : scales) in_bounds(has_scales ? StyleField::scales : StyleField::size, s);
  in_bounds(StyleField::style_scale, o.style_scale);
  const double style_side = std::round(*std::max_element(scales.begin(), scales.end()) * o.style_scale);
  require(style_side <= kMaxStyleSide, StyleField::style_scale,
          fmt::format("{} makes the style images {} px, over {} px", o.style_scale, style_side, kMaxStyleSide));
  for (const auto& [field, v] : {std::pair{StyleField::iters, double(o.iters)},
                                 {StyleField::lr, double(o.lr)},
                                 {StyleField::lbfgs_history, double(o.lbfgs_history)},
                                 {StyleField::content_weight, o.content_weight},
                                 {StyleField::style_weight, o.style_weight},
                                 {StyleField::tv_weight, o.tv_weight},
                                 {StyleField::tv_beta, o.tv_beta},
                                 {StyleField::print_every, double(o.print_every)},
                                 {StyleField::save_every, double(o.save_every)},
                                 {StyleField::tile, double(o.tile)}})
    in_bounds(field, v);
  double blend_total = 0;
  for (double w : o.style_blend_weights) {
    in_bounds(StyleField::style_blend_weights, w);
    blend_total += w;
  }
  require(o.style_blend_weights.empty() || blend_total > 0, StyleField::style_blend_weights, "sum to 0");
  if (o.tile_overlap >= 0) in_bounds(StyleField::tile_overlap, o.tile_overlap);  // < 0: tile / 8
  require(o.tile > 0 || o.tile_overlap < 0, StyleField::tile_overlap, fmt::format("{} needs a tile", o.tile_overlap));
  if (o.tile > 0) {
    const int overlap = o.tile_overlap >= 0 ? o.tile_overlap : o.tile / 8;
    require(overlap <= o.tile / 2, StyleField::tile_overlap,
            fmt::format("must be at most half of the tile {} ({}), got {}", o.tile, o.tile / 2, overlap));
    require(o.tile < scales.back(), StyleField::tile,
            fmt::format("{} must be smaller than the image's longest side {} (the last size)", o.tile, scales.back()));
  }
}

// Masks: grey images, not black everywhere (a style or content loss with nowhere to apply).
void check_mask(StyleField f, const std::string& which, const Image& m) {
  require(m.width > 0 && m.height > 0, f, fmt::format("{}is empty", which));
  float brightest = 0;
  for (float v : m.pixels) brightest = std::max(brightest, v);
  require(brightest > 0, f,
          fmt::format("{}({}x{}) is black everywhere: its loss would apply nowhere", which, m.width, m.height));
}

}  // namespace

ColorTransfer parse_color_transfer(const std::string& n) {
  return parse_named<ColorTransfer>(kColorTransfers, StyleField::color_transfer, n);
}
StyleModel parse_style_model(const std::string& n) { return parse_named<StyleModel>(kModels, StyleField::model, n); }
StyleOptimizer parse_style_optimizer(const std::string& n) {
  return parse_named<StyleOptimizer>(kOptimizers, StyleField::optimizer, n);
}
StylePooling parse_style_pooling(const std::string& n) {
  return parse_named<StylePooling>(kPoolings, StyleField::pooling, n);
}
const char* color_transfer_name(ColorTransfer c) { return name_of(kColorTransfers, c); }
const char* style_model_name(StyleModel m) { return name_of(kModels, m); }
const char* style_optimizer_name(StyleOptimizer o) { return name_of(kOptimizers, o); }
const char* style_pooling_name(StylePooling p) { return name_of(kPoolings, p); }
const char* style_init_name(StyleInit i) { return name_of(kInits, i); }

void set_style_init(StyleOptions& o, const std::string& spec) {
  if (spec == "content" || spec == "random") {
    o.init = spec == "content" ? StyleInit::content : StyleInit::random;
    o.init_image.clear();
  } else {
    o.init = StyleInit::image;
    o.init_image = spec;
  }
}

const char* style_field_name(StyleField f) {
  static constexpr std::array<const char*, 24> names{
      "size",        "scales",  "style_scale",   "style_blend_weights", "iters",
      "optimizer",   "lr",      "lbfgs_history", "content_weight",      "style_weight",
      "tv_weight",   "tv_beta", "model",         "color_transfer",      "content_mask",
      "style_masks", "tile",    "tile_overlap",  "content_layers",      "style_layers",
      "init",        "pooling", "print_every",   "save_every"};
  return name_of(names, f);
}

std::optional<StyleBounds> style_bounds(StyleField f) {
  constexpr double kFloatMax = std::numeric_limits<float>::max();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  switch (f) {
    case StyleField::size:
    case StyleField::scales:
      return StyleBounds{16, kMaxStyleSide, false, false, true};
    // 100: a style image 100 times the content's side is no style any more (and huge).
    case StyleField::style_scale:
      return StyleBounds{0, 100, true, false, false};
    case StyleField::iters:
    case StyleField::print_every:
    case StyleField::save_every:
      return StyleBounds{0, kMaxIters, false, false, true};
    case StyleField::lr:  // 0: the optimizer's default
    case StyleField::content_weight:
    case StyleField::style_weight:
    case StyleField::tv_weight:
      return StyleBounds{0, kFloatMax, false, false, false};  // they scale float losses
    case StyleField::style_blend_weights:
      return StyleBounds{0, kInf, false, false, false};
    case StyleField::lbfgs_history:
      return StyleBounds{1, kMaxLbfgsHistory, false, false, true};
    case StyleField::tv_beta:
      return StyleBounds{1, 4, false, false, false};
    case StyleField::tile:
      return StyleBounds{kMinStyleTile, kMaxStyleSide, false, true, true};
    case StyleField::tile_overlap:
      return StyleBounds{0, kMaxStyleSide, false, false, true};
    default:
      return std::nullopt;
  }
}

std::string style_bounds_problem(StyleField f, double v) {
  const auto b = style_bounds(f);
  if (!b) return {};
  if (std::isfinite(v) && (b->zero_also && v == 0)) return {};
  const bool above_lo = b->lo_open ? v > b->lo : v >= b->lo;
  if (std::isfinite(v) && above_lo && v <= b->hi && (!b->whole || v == std::floor(v))) return {};
  const std::string range = std::isinf(b->hi) ? fmt::format("{} {}", b->lo_open ? ">" : ">=", b->lo)
                                              : fmt::format("in {}{}, {}]", b->lo_open ? "(" : "[", b->lo, b->hi);
  return fmt::format("must be {}{} {}, got {}", b->zero_also ? "0 or " : "",
                     b->whole ? "a whole number" : "a finite number", range, v);
}

namespace {

// "<tile>" -> name(StyleField::tile) for every field named in `text`.
template <typename Name>
std::string spell_fields(const std::string& text, StyleField field, bool field_first, Name name) {
  std::string out = field_first ? std::string(name(field)) + " " : std::string();
  for (std::size_t i = 0; i < text.size(); ++i) {
    const std::size_t close = text[i] == '<' ? text.find('>', i) : std::string::npos;
    bool replaced = false;
    if (close != std::string::npos) {
      const std::string token = text.substr(i + 1, close - i - 1);
      for (int f = 0; f <= static_cast<int>(StyleField::save_every) && !replaced; ++f)
        if (token == style_field_name(static_cast<StyleField>(f))) {
          out += name(static_cast<StyleField>(f));
          i = close;
          replaced = true;
        }
    }
    if (!replaced) out += text[i];
  }
  return "style: " + out;
}

}  // namespace

StyleOptionError::StyleOptionError(StyleField field, std::string problem, bool field_first)
    : Error(spell_fields(problem, field, field_first, style_field_name)),
      field_(field),
      problem_(std::move(problem)),
      field_first_(field_first) {}

std::string StyleOptionError::message(const char* (*name)(StyleField)) const {
  return spell_fields(problem_, field_, field_first_, name);
}

std::string StyleOptionError::message(std::string (*name)(StyleField)) const {
  return spell_fields(problem_, field_, field_first_, name);
}

void check_style_options(const StyleOptions& o) {
  check_numbers(o);
  require_enum(kOptimizers, o.optimizer, StyleField::optimizer);
  require_enum(kModels, o.model, StyleField::model);
  require_enum(kColorTransfers, o.color_transfer, StyleField::color_transfer);
  require_enum(kPoolings, o.pooling, StyleField::pooling);
  require_enum(kInits, o.init, StyleField::init);
  require(o.init != StyleInit::image || !o.init_image.empty(), StyleField::init, "image needs a file (init_image)");
  require(!o.content_layers.empty() || !o.style_layers.empty(), StyleField::style_layers,
          "and content_layers are both empty: no loss to optimise");
  if (o.content_mask.width > 0 || o.content_mask.height > 0) check_mask(StyleField::content_mask, "", o.content_mask);
  for (std::size_t i = 0; i < o.style_masks.size(); ++i)
    check_mask(StyleField::style_masks, fmt::format("image {} ", i + 1), o.style_masks[i]);
}

CheckedStyleOptions::CheckedStyleOptions(StyleOptions options) : o_(std::move(options)) { check_style_options(o_); }

int style_image_size(int size, const StyleOptions& o) {
  // Clamped before the cast: a huge style_scale is refused by check_style_options, never wrapped.
  return static_cast<int>(std::clamp(std::round(size * o.style_scale), 16.0, double(kMaxStyleSide)));
}

std::pair<int, int> fit_longest_side(int width, int height, int longest) {
  CUDL_CHECK(width > 0 && height > 0 && longest > 0, "fit_longest_side: bad sizes {}x{} -> {}", width, height, longest);
  if (width >= height) {
    const int h = std::max(1, static_cast<int>(std::lround(static_cast<double>(height) * longest / width)));
    return {longest, h};
  }
  const int w = std::max(1, static_cast<int>(std::lround(static_cast<double>(width) * longest / height)));
  return {w, longest};
}

namespace {

// Starts of tiles of side `tile` covering [0, extent) with overlaps >= overlap, the last flush with
// the end (so it may overlap its neighbour by more).
std::vector<int> tile_starts(int extent, int tile, int overlap) {
  if (extent <= tile) return {0};
  const int step = tile - overlap;
  std::vector<int> starts;
  for (int s = 0;; s += step) {
    if (s + tile >= extent) {
      starts.push_back(extent - tile);
      break;
    }
    starts.push_back(s);
  }
  return starts;
}

}  // namespace

std::vector<StyleTile> style_tiles(int width, int height, int tile, int overlap) {
  CUDL_CHECK(tile > 0 && overlap >= 0 && overlap < tile, "style_tiles: bad tile {} / overlap {}", tile, overlap);
  std::vector<StyleTile> out;
  for (int y : tile_starts(height, tile, overlap))
    for (int x : tile_starts(width, tile, overlap))
      out.push_back({x, y, std::min(tile, width), std::min(tile, height)});
  return out;
}

std::vector<StyleScalePlan> plan_style_scales(const CheckedStyleOptions& checked, int content_width,
                                              int content_height) {
  const StyleOptions& o = checked.get();
  const std::vector<int> sizes = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
  std::vector<StyleScalePlan> plan;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    StyleScalePlan s;
    s.size = sizes[i];
    std::tie(s.width, s.height) = fit_longest_side(content_width, content_height, s.size);
    // Only the last scale is tiled: the smaller ones fit wherever the last one's tiles do.
    s.tiled = i + 1 == sizes.size() && o.tile > 0 && std::max(s.width, s.height) > o.tile;
    if (s.tiled) {
      s.tiles = style_tiles(s.width, s.height, o.tile, o.tile_overlap >= 0 ? o.tile_overlap : o.tile / 8);
      s.work_width = std::min(s.width, o.tile);
      s.work_height = std::min(s.height, o.tile);
    } else {
      s.tiles = {StyleTile{0, 0, s.width, s.height}};
      s.work_width = s.width;
      s.work_height = s.height;
    }
    plan.push_back(std::move(s));
  }
  return plan;
}

}  // namespace cudl
