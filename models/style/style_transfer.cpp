#include "cudl/models/style/style_transfer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/text.hpp"
#include "cudl/layers/normalization.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/zoo/zoo.hpp"

namespace cudl {

namespace {

constexpr int kDepth = 19;

int feature_index(const std::string& torchvision_name) {  // "features.22" -> 22
  return std::stoi(torchvision_name.substr(torchvision_name.find('.') + 1));
}

}  // namespace

std::vector<std::string> parse_style_layers(const std::string& csv) {
  std::vector<std::string> out;
  for (const std::string& raw : split_list(csv)) {
    const std::string item = trim_blanks(raw);
    if (item.empty()) continue;
    (void)vgg_layer_name(kDepth, item);  // throws naming the valid layers
    // A layer twice would count its loss twice: a typo more likely than a wish.
    CUDL_CHECK(std::find(out.begin(), out.end(), item) == out.end(), "style: layer '{}' is listed twice in '{}'", item,
               csv);
    out.push_back(item);
  }
  CUDL_CHECK(!out.empty(), "style: empty layer list '{}'", csv);
  return out;
}

Sequential make_style_network(Context& ctx, const StyleOptions& o, const std::string& weights) {
  CUDL_CHECK(!o.content_layers.empty() || !o.style_layers.empty(), "style: no content or style layers");
  std::string deepest;
  int deepest_index = -1;
  for (const auto* list : {&o.content_layers, &o.style_layers}) {
    for (const auto& n : *list) {
      const int i = feature_index(vgg_layer_name(kDepth, n));
      if (i > deepest_index) deepest_index = i, deepest = n;
    }
  }
  Sequential net = make_vgg_features(kDepth, false, o.pooling == StylePooling::avg);
  if (o.model == StyleModel::caffe) {
    // Caffe's VGG19 takes 0-255 pixels minus its mean pixel (B 103.939, G 116.779, R 123.68): as
    // (x - mean/255) / (1/255) on our [0,1] RGB input. The BGR order is in the weights (the
    // converter reverses conv1_1's input channels), so the image stays RGB here.
    constexpr float k = 1.0f / 255.0f;
    dynamic_cast<Normalize&>(net.layer("normalize")) = Normalize({123.68f * k, 116.779f * k, 103.939f * k}, {k, k, k});
  }
  net.truncate_after(vgg_layer_name(kDepth, deepest));
  const std::string random_prefix = "random:";
  if (weights.rfind(random_prefix, 0) == 0) {
    const std::string seed = weights.substr(random_prefix.size());
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(seed.data(), seed.data() + seed.size(), value);
    CUDL_CHECK(!seed.empty() && ec == std::errc() && end == seed.data() + seed.size(),
               "style: weights random:SEED needs a whole number in [0, {}] as the seed, got '{}'",
               std::numeric_limits<std::uint64_t>::max(), weights);
    net.build(ctx, value);
  } else {
    net.build(ctx, 0);
    load_weights(weights, ctx, net, /*allow_unused=*/true);
  }
  net.set_frozen(true);
  net.set_input_grad(true);
  return net;
}

// ---------------------------------------------------------------- memory

std::size_t estimate_style_bytes(const Sequential& net, const StyleOptions& o, int height, int width) {
  const std::int64_t image = 3LL * height * width;
  std::int64_t saved = 0, largest = image;
  for (const auto& row : net.summary(Shape{1, 3, height, width})) {
    saved += row.output_shape.numel();
    largest = std::max(largest, row.output_shape.numel());
  }
  std::int64_t params = 0;
  for (const auto& [name, layer] : net.layers())
    for (Parameter* p : layer->parameters()) params += p->shape.numel();
  const std::int64_t optimizer =
      o.optimizer == StyleOptimizer::adam ? 3 * image : (2LL * o.lbfgs_history + 3) * image + 2LL * o.lbfgs_history;
  // Activations saved for backward, the tap gradients and content targets (bounded by `saved`),
  // two gradients in flight plus a workspace (3 x the largest output), image + gradient.
  const std::int64_t floats = 2 * saved + 3 * largest + optimizer + 3 * image + 2 * params;
  return static_cast<std::size_t>(floats) * sizeof(float) * 11 / 10 + (64u << 20);
}

std::size_t available_memory(const Context& ctx) {
  if (ctx.device().is_cuda()) {
    const std::optional<CudaDeviceInfo> d = cuda_device(ctx.device().index);  // this GPU alone
    if (!d) return 0;
    return d->free_memory + ctx.allocator().stats().reserved_bytes - ctx.allocator().stats().allocated_bytes;
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::size_t kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

void check_style_memory(Context& ctx, const Sequential& net, const StyleOptions& o, int height, int width) {
  const std::size_t available = available_memory(ctx);
  if (available == 0) return;  // unknown: let the pool report an out-of-memory if it comes to that
  const std::size_t need = estimate_style_bytes(net, o, height, width);
  if (need <= available) return;
  // Everything but the weights and the slack grows with the pixel count: scale the longest side.
  const int longest = std::max(height, width);
  int fits = 0;
  for (int s = longest - 1; s >= 16; s -= std::max(1, s / 64)) {
    const auto [w, h] = fit_longest_side(width, height, s);
    if (estimate_style_bytes(net, o, h, w) <= available) {
      fits = s;
      break;
    }
  }
  // Tiling bounds the memory by the tile, whatever the photo: suggest the largest tile that fits.
  const int tile = suggest_style_tile(net, o, available);
  const StyleField field = o.tile > 0 ? StyleField::tile : o.scales.empty() ? StyleField::size : StyleField::scales;
  throw StyleOptionError(
      field,
      fmt::format(
          "a {}x{} {} needs about {:.1f} GiB with <optimizer> {} but only {:.1f} GiB is available on {}; the "
          "largest size that fits is {}{}{}",
          width, height, o.tile > 0 ? "tile" : "image", static_cast<double>(need) / (1 << 30),
          style_optimizer_name(o.optimizer), static_cast<double>(available) / (1 << 30), ctx.device(),
          fits > 0 ? fmt::format("<{}> {}", style_field_name(field), fits) : std::string("none"),
          o.optimizer == StyleOptimizer::lbfgs ? " (<optimizer> adam needs much less)" : "",
          o.tile == 0 && tile > 0 ? fmt::format("; or keep the size and tile it: <tile> {}", tile) : std::string()),
      /*field_first=*/false);
}

std::size_t check_style_memory(Context& ctx, const Sequential& net, const StyleOptions& o,
                               const std::vector<StyleScalePlan>& plan) {
  // The largest work first, so the error names the scale that matters (an untiled smaller scale
  // can outweigh the last scale's tile).
  const StyleScalePlan* largest = nullptr;
  std::size_t most = 0;
  for (const auto& s : plan) {
    const std::size_t bytes = estimate_style_bytes(net, o, s.work_height, s.work_width);
    if (largest == nullptr || bytes > most) largest = &s, most = bytes;
  }
  if (largest != nullptr) check_style_memory(ctx, net, o, largest->work_height, largest->work_width);
  return most;
}

namespace {
bool passes_the_network(const Sequential& net, int height, int width) {
  try {
    (void)net.output_shape(Shape{1, 3, height, width});
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

void check_style_sizes(const Sequential& net, const CheckedStyleOptions& checked, const Image& content,
                       const std::vector<Image>& styles) {
  const StyleOptions& o = checked.get();
  const std::vector<int> scales = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
  auto passes = [&](const Image& image, int longest) {
    const auto [w, h] = fit_longest_side(image.width, image.height, longest);
    return passes_the_network(net, h, w);
  };
  // image_size(size): the longest side an image gets at size `size`.
  auto check = [&](const char* what, const Image& image, int size, auto image_size) {
    if (passes(image, image_size(size))) return;
    int needed = size + 1;
    while (needed < (1 << 16) && !passes(image, image_size(needed))) ++needed;
    const auto [w, h] = fit_longest_side(image.width, image.height, image_size(size));
    const StyleField field = o.scales.empty() ? StyleField::size : StyleField::scales;
    throw StyleOptionError(field,
                           fmt::format("the {} image ({}x{}) becomes {}x{} at <{}> {}, too small for the network's "
                                       "poolings up to its deepest loss layer: use <{}> >= {}",
                                       what, image.width, image.height, w, h, style_field_name(field), size,
                                       style_field_name(field), needed),
                           /*field_first=*/false);
  };
  for (int size : scales) {
    check("content", content, size, [](int s) { return s; });
    for (const Image& st : styles) check("style", st, size, [&](int s) { return style_image_size(s, o); });
  }
}

// ---------------------------------------------------------------- the objective

namespace {

// A grey mask (any channel count: the first channel, or the luminance of RGB) resized to the
// layer's h x w and repeated over its C channels, as [1,C,h,w]; `sum_sq` gets Σ m² over one plane.
Tensor mask_tensor(Context& ctx, const Image& mask, const Shape& layer, double& sum_sq) {
  const auto c = layer[1], h = layer[2], w = layer[3];
  const Image grey = resize(mask, static_cast<int>(w), static_cast<int>(h));
  std::vector<float> plane(static_cast<std::size_t>(h * w));
  sum_sq = 0;
  for (std::int64_t y = 0; y < h; ++y)
    for (std::int64_t x = 0; x < w; ++x) {
      const int yi = static_cast<int>(y), xi = static_cast<int>(x);
      float v = grey.channels >= 3
                    ? 0.299f * grey.at(yi, xi, 0) + 0.587f * grey.at(yi, xi, 1) + 0.114f * grey.at(yi, xi, 2)
                    : grey.at(yi, xi, 0);
      v = std::clamp(v, 0.0f, 1.0f);
      plane[static_cast<std::size_t>(y * w + x)] = v;
      sum_sq += static_cast<double>(v) * v;
    }
  std::vector<float> all;
  all.reserve(static_cast<std::size_t>(c * h * w));
  for (std::int64_t k = 0; k < c; ++k) all.insert(all.end(), plane.begin(), plane.end());
  return Tensor::from_host(all, layer, ctx);
}

}  // namespace

StyleObjective::StyleObjective(Context& ctx, Sequential& net, std::vector<std::string> content_taps,
                               std::vector<std::string> style_taps, double content_weight, double style_weight,
                               double tv_weight, StyleObjectiveOptions extra)
    : net_(&net),
      content_taps_(std::move(content_taps)),
      style_taps_(std::move(style_taps)),
      cw_(content_weight),
      sw_(style_weight),
      tvw_(tv_weight),
      extra_(extra),
      weights_(net.hold_parameters_constant(ctx)) {
  all_taps_ = content_taps_;
  for (const auto& s : style_taps_)
    if (std::find(all_taps_.begin(), all_taps_.end(), s) == all_taps_.end()) all_taps_.push_back(s);
  net.set_taps(all_taps_);
  losses_ = Tensor::zeros(Shape{static_cast<std::int64_t>(4 + content_taps_.size() + style_taps_.size())}, ctx);
  tmp_ = Tensor::zeros(Shape{1}, ctx);
  norm_ = Tensor::zeros(Shape{2}, ctx);
}

std::vector<Tensor> StyleObjective::style_grams(Context& ctx, const Tensor& style) {
  net_->forward(ctx, style, false);
  std::vector<Tensor> out;
  for (const auto& name : style_taps_) {
    const Tensor& f = net_->tap(name);
    Tensor g = Tensor::empty(Shape{1, f.dim(1), f.dim(1)}, ctx);
    ctx.backend().gram_forward(ctx, f, g);
    out.push_back(std::move(g));
  }
  return out;
}

void StyleObjective::set_style_grams(Context& ctx, const std::vector<std::vector<Tensor>>& grams,
                                     const std::vector<double>& blend_weights, bool per_style) {
  Backend& be = ctx.backend();
  std::vector<double> w = blend_weights.empty() ? std::vector<double>(grams.size(), 1.0) : blend_weights;
  if (w.size() != grams.size())
    throw StyleOptionError(StyleField::style_blend_weights,
                           fmt::format("has {} weights for {} style images", w.size(), grams.size()));
  CUDL_CHECK(!grams.empty() || style_taps_.empty(), "style: style layers but no style image");
  double total = 0;
  for (double v : w) {
    if (!(v >= 0 && std::isfinite(v)))
      throw StyleOptionError(StyleField::style_blend_weights, fmt::format("must be finite numbers >= 0, got {}", v));
    total += v;
  }
  if (!grams.empty() && total <= 0) throw StyleOptionError(StyleField::style_blend_weights, "sum to 0");
  style_targets_.clear();
  style_factors_.clear();
  style_masks_.clear();
  mask_gains_.clear();
  if (grams.empty() || style_taps_.empty()) return;
  if (per_style) {
    // Each style keeps its own target; its blend weight scales its loss (equal weights: 1 each).
    for (std::size_t i = 0; i < grams.size(); ++i) {
      std::vector<Tensor> layers;
      for (const Tensor& g : grams[i]) layers.push_back(g.clone(ctx));
      style_targets_.push_back(std::move(layers));
      style_factors_.push_back(w[i] / total * static_cast<double>(grams.size()));
    }
    return;
  }
  std::vector<Tensor> blended;
  for (std::size_t l = 0; l < style_taps_.size(); ++l) {
    blended.push_back(Tensor::zeros(grams[0][l].shape(), ctx));
    for (std::size_t i = 0; i < grams.size(); ++i)
      be.axpy(ctx, static_cast<float>(w[i] / total), grams[i][l], blended.back());
  }
  style_targets_.push_back(std::move(blended));
  style_factors_.push_back(1.0);
}

void StyleObjective::set_content(Context& ctx, const Tensor& content, const Image& content_mask,
                                 const std::vector<Image>& style_masks) {
  Backend& be = ctx.backend();
  net_->forward(ctx, content, false);
  content_targets_.clear();
  content_masks_.clear();
  for (const auto& name : content_taps_) {
    const Tensor& f = net_->tap(name);
    if (content_mask.width == 0) {
      content_targets_.push_back(f.clone(ctx));
      continue;
    }
    double sum_sq = 0;
    content_masks_.push_back(
        mask_tensor(ctx, content_mask, f.shape(), sum_sq).cast(ctx, f.dtype()).to_format(ctx, f.format()));
    Tensor p = Tensor::empty_like(f, ctx);
    be.mul(ctx, f, content_masks_.back(), p);  // targets P ⊙ m: the loss is mean((F ⊙ m − P ⊙ m)²)
    content_targets_.push_back(std::move(p));
  }
  style_masks_.clear();
  mask_gains_.clear();
  if (style_masks.empty()) return;
  CUDL_CHECK(style_masks.size() == style_targets_.size(),
             "style: {} style masks for {} per-style targets (set_style_grams with per_style first)",
             style_masks.size(), style_targets_.size());
  for (const Image& mask : style_masks) {
    std::vector<Tensor> layers;
    std::vector<float> gains;
    for (const auto& name : style_taps_) {
      const Tensor& f = net_->tap(name);
      double sum_sq = 0;
      layers.push_back(mask_tensor(ctx, mask, f.shape(), sum_sq).cast(ctx, f.dtype()).to_format(ctx, f.format()));
      // G(F ⊙ m) · h·w/Σm² is the Gram per masked pixel, comparable with a whole style image's;
      // 0 marks a mask with nothing left at this layer (that style is skipped there).
      gains.push_back(sum_sq > 1e-12 ? static_cast<float>(static_cast<double>(f.dim(2) * f.dim(3)) / sum_sq) : 0.0f);
    }
    style_masks_.push_back(std::move(layers));
    mask_gains_.push_back(std::move(gains));
  }
}

void StyleObjective::set_targets(Context& ctx, const Tensor& content, const std::vector<Tensor>& styles,
                                 const std::vector<double>& blend_weights) {
  std::vector<std::vector<Tensor>> grams;
  for (const Tensor& s : styles) grams.push_back(style_grams(ctx, s));
  set_style_grams(ctx, grams, blend_weights, /*per_style=*/false);
  set_content(ctx, content);
}

void StyleObjective::add_weighted(Context& ctx, Tensor& df, float weight, Tensor& into, bool first) {
  Backend& be = ctx.backend();
  if (!extra_.normalize_gradients) {  // df was computed with the weight already
    if (first)
      into = std::move(df);
    else
      be.axpy(ctx, 1.0f, df, into);
    return;
  }
  // neural-style's -normalize_gradients: gradInput / (‖gradInput‖₁ + 1e-8) * strength, with the
  // scale kept on the device (safe_recip: 1/‖g‖₁, or 0 for a gradient that is already ~0).
  // In f32 under autocast too: the norm is a reduction, and the sum of normalised parts is kept in
  // f32 until the model casts it to the layer's dtype.
  const Tensor df32 = df.cast(ctx, DType::f32);
  Tensor norm = norm_.view(0, Shape{1}), factor = norm_.view(1, Shape{1});
  be.abs_sum(ctx, df32, norm);
  be.scalar_op(ctx, ScalarOp::safe_recip, norm, norm, factor);
  be.scale(ctx, factor, weight);
  if (first) {
    into = Tensor::empty_like(df, ctx, DType::f32);
    be.fill(ctx, into, 0.0f);
  }
  be.axpy_scalar(ctx, 1.0f, factor, df32, into);
}

void StyleObjective::evaluate(Context& ctx, const Tensor& image, Tensor& grad) {
  CUDL_CHECK(content_targets_.size() == content_taps_.size() && (style_taps_.empty() || !style_targets_.empty()),
             "StyleObjective::evaluate: set the targets first");
  Backend& be = ctx.backend();
  const bool norm = extra_.normalize_gradients;
  be.fill(ctx, losses_, 0.0f);
  Tensor content = losses_.view(1, Shape{1}), style = losses_.view(2, Shape{1}), tv = losses_.view(3, Shape{1});
  Tensor total = losses_.view(0, Shape{1});
  const auto nc = static_cast<std::int64_t>(content_taps_.size());
  net_->forward(ctx, image, true);
  std::map<std::string, Tensor> tap_grads;
  auto add_grad = [&](const std::string& name, Tensor& df, float weight) {
    auto it = tap_grads.find(name);
    if (it == tap_grads.end()) {
      Tensor into;
      add_weighted(ctx, df, weight, into, true);
      tap_grads.emplace(name, std::move(into));
    } else {
      add_weighted(ctx, df, weight, it->second, false);
    }
  };
  const auto cw = static_cast<float>(cw_);
  for (std::size_t i = 0; i < content_taps_.size(); ++i) {
    const Tensor& f = net_->tap(content_taps_[i]);
    check::same_shape("style content loss", "features", f, "content target", content_targets_[i]);
    Tensor layer = losses_.view(4 + static_cast<std::int64_t>(i), Shape{1});
    Tensor df = Tensor::empty_like(f, ctx);
    if (content_masks_.empty()) {
      be.mse_loss_forward(ctx, f, content_targets_[i], tmp_);
      be.mse_loss_backward(ctx, f, content_targets_[i], norm ? 1.0f : cw, df);
    } else {
      Tensor fm = Tensor::empty_like(f, ctx);
      be.mul(ctx, f, content_masks_[i], fm);
      be.mse_loss_forward(ctx, fm, content_targets_[i], tmp_);
      Tensor dfm = Tensor::empty_like(f, ctx);
      be.mse_loss_backward(ctx, fm, content_targets_[i], norm ? 1.0f : cw, dfm);
      be.mul(ctx, dfm, content_masks_[i], df);
    }
    be.axpy(ctx, cw, tmp_, content);
    be.axpy(ctx, cw, tmp_, layer);
    add_grad(content_taps_[i], df, cw);
  }
  const bool masked = !style_masks_.empty();
  for (std::size_t l = 0; l < style_taps_.size() && !style_targets_.empty(); ++l) {
    const Tensor& f = net_->tap(style_taps_[l]);
    Tensor layer = losses_.view(4 + nc + static_cast<std::int64_t>(l), Shape{1});
    Tensor df_layer;
    for (std::size_t s = 0; s < style_targets_.size(); ++s) {
      const float gain = masked ? mask_gains_[s][l] : 1.0f;
      if (gain == 0.0f) continue;
      const auto weight = static_cast<float>(sw_ * style_factors_[s]);
      Tensor fm;
      if (masked) {
        fm = Tensor::empty_like(f, ctx);
        be.mul(ctx, f, style_masks_[s][l], fm);
      }
      const Tensor& input = masked ? fm : f;
      Tensor g = Tensor::empty(Shape{1, f.dim(1), f.dim(1)}, ctx);
      be.gram_forward(ctx, input, g);
      if (masked) be.scale(ctx, g, gain);
      be.mse_loss_forward(ctx, g, style_targets_[s][l], tmp_);
      be.axpy(ctx, weight, tmp_, style);
      be.axpy(ctx, weight, tmp_, layer);
      Tensor dg = Tensor::empty(g.shape(), ctx);
      be.mse_loss_backward(ctx, g, style_targets_[s][l], norm ? static_cast<float>(style_factors_[s]) : weight, dg);
      if (masked) be.scale(ctx, dg, gain);
      Tensor df = Tensor::empty_like(f, ctx);
      be.gram_backward(ctx, input, dg, df);
      if (masked) {
        Tensor dfm = std::move(df);
        df = Tensor::empty_like(f, ctx);
        be.mul(ctx, dfm, style_masks_[s][l], df);
      }
      if (!df_layer.defined())
        df_layer = std::move(df);
      else
        be.axpy(ctx, 1.0f, df, df_layer);
    }
    if (df_layer.defined()) add_grad(style_taps_[l], df_layer, static_cast<float>(sw_));
  }
  be.tv_loss_forward(ctx, image, tmp_, static_cast<float>(extra_.tv_beta));
  be.axpy(ctx, static_cast<float>(tvw_), tmp_, tv);
  be.copy(ctx, content, total);
  be.axpy(ctx, 1.0f, style, total);
  be.axpy(ctx, 1.0f, tv, total);

  if (tap_grads.empty()) {
    be.fill(ctx, grad, 0.0f);
  } else {
    Tensor dx = net_->backward(ctx, Tensor(), tap_grads);
    be.copy(ctx, dx, grad);
  }
  be.tv_loss_backward(ctx, image, static_cast<float>(tvw_), grad, /*accumulate=*/true,
                      static_cast<float>(extra_.tv_beta));
}

StyleLosses StyleObjective::unpack(const float* r) const {
  StyleLosses l{r[0], r[1], r[2], r[3], {}, {}};
  const std::size_t nc = content_taps_.size();
  for (std::size_t i = 0; i < nc; ++i) l.content_layers.push_back(r[4 + i]);
  for (std::size_t i = 0; i < style_taps_.size(); ++i) l.style_layers.push_back(r[4 + nc + i]);
  return l;
}

StyleLosses StyleObjective::read_losses(Context& ctx) const {
  const auto v = losses_.to_vector(ctx);
  return unpack(v.data());
}

}  // namespace cudl
