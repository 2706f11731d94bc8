#include "models/style_transfer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "engine/backend.hpp"
#include "engine/check.hpp"
#include "engine/context.hpp"
#include "engine/device.hpp"
#include "layers/lbfgs.hpp"
#include "models/checkpoint.hpp"
#include "models/zoo.hpp"

namespace cudl {

namespace {

constexpr int kDepth = 19;

int feature_index(const std::string& torchvision_name) {  // "features.22" -> 22
  return std::stoi(torchvision_name.substr(torchvision_name.find('.') + 1));
}

std::vector<std::string> to_torchvision(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& n : names) out.push_back(vgg_layer_name(kDepth, n));
  return out;
}

}  // namespace

std::vector<std::string> parse_style_layers(const std::string& csv) {
  std::vector<std::string> out;
  std::stringstream ss(csv);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item.empty()) continue;
    (void)vgg_layer_name(kDepth, item);  // throws naming the valid layers
    out.push_back(item);
  }
  CUDL_CHECK(!out.empty(), "style: empty layer list '{}'", csv);
  return out;
}

Sequential make_style_network(Context& ctx, const StyleOptions& o, const std::string& weights) {
  CUDL_CHECK(o.pooling == "max" || o.pooling == "avg", "style: --pooling must be max or avg, got '{}'", o.pooling);
  CUDL_CHECK(!o.content_layers.empty() || !o.style_layers.empty(), "style: no content or style layers");
  std::string deepest;
  int deepest_index = -1;
  for (const auto* list : {&o.content_layers, &o.style_layers}) {
    for (const auto& n : *list) {
      const int i = feature_index(vgg_layer_name(kDepth, n));
      if (i > deepest_index) deepest_index = i, deepest = n;
    }
  }
  Sequential net = make_vgg_features(kDepth, false, o.pooling == "avg");
  net.truncate_after(vgg_layer_name(kDepth, deepest));
  const std::string random_prefix = "random:";
  if (weights.rfind(random_prefix, 0) == 0) {
    const std::string seed = weights.substr(random_prefix.size());
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(seed.data(), seed.data() + seed.size(), value);
    CUDL_CHECK(!seed.empty() && ec == std::errc() && end == seed.data() + seed.size(),
               "style: --weights random:SEED needs a whole number in [0, {}] as the seed, got '{}'",
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

std::pair<int, int> fit_longest_side(int width, int height, int longest) {
  CUDL_CHECK(width > 0 && height > 0 && longest > 0, "fit_longest_side: bad sizes {}x{} -> {}", width, height, longest);
  if (width >= height) {
    const int h = std::max(1, static_cast<int>(std::lround(static_cast<double>(height) * longest / width)));
    return {longest, h};
  }
  const int w = std::max(1, static_cast<int>(std::lround(static_cast<double>(width) * longest / height)));
  return {w, longest};
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
      o.optimizer == "adam" ? 3 * image : (2LL * o.lbfgs_history + 3) * image + 2LL * o.lbfgs_history;
  // Activations saved for backward, the tap gradients and content targets (bounded by `saved`),
  // two gradients in flight plus a workspace (3 x the largest output), image + gradient.
  const std::int64_t floats = 2 * saved + 3 * largest + optimizer + 3 * image + 2 * params;
  return static_cast<std::size_t>(floats) * sizeof(float) * 11 / 10 + (64u << 20);
}

std::size_t available_memory(const Context& ctx) {
  if (ctx.device().is_cuda()) {
    for (const auto& d : cuda_devices())
      if (d.index == ctx.device().index)
        return d.free_memory + ctx.allocator().stats().reserved_bytes - ctx.allocator().stats().allocated_bytes;
    return 0;
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
  CUDL_THROW(
      "style: a {}x{} image needs about {:.1f} GiB with --optimizer {} but only {:.1f} GiB is available on {}; the "
      "largest size that fits is {}{}",
      width, height, static_cast<double>(need) / (1 << 30), o.optimizer, static_cast<double>(available) / (1 << 30),
      ctx.device(), fits > 0 ? fmt::format("--size {}", fits) : std::string("none"),
      o.optimizer == "lbfgs" ? " (--optimizer adam needs much less)" : "");
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

int style_image_size(int size, const StyleOptions& o) {
  // Clamped before the cast: a huge --style-scale is refused by check_style_options, never wrapped.
  return static_cast<int>(std::clamp(std::round(size * o.style_scale), 16.0, double(kMaxStyleSide)));
}

void check_style_options(const StyleOptions& o) {
  const std::vector<int> scales = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
  for (int s : scales)
    CUDL_CHECK(s >= 16 && s <= kMaxStyleSide, "style: image sizes must be in [16, {}] px, got {}", kMaxStyleSide, s);
  CUDL_CHECK(o.iters >= 0, "style: --iters must be >= 0, got {}", o.iters);
  CUDL_CHECK(std::isfinite(o.style_scale) && o.style_scale > 0,
             "style: --style-scale must be a finite number > 0, got {}", o.style_scale);
  const double style_side = std::round(*std::max_element(scales.begin(), scales.end()) * o.style_scale);
  CUDL_CHECK(style_side <= kMaxStyleSide, "style: --style-scale {} makes the style images {} px, over {} px",
             o.style_scale, style_side, kMaxStyleSide);
  CUDL_CHECK(std::isfinite(o.lr) && o.lr >= 0,
             "style: --lr must be a finite number >= 0 (0: the optimizer's default), got {}", o.lr);
  // The weights scale float losses and gradients: each must be a finite float.
  for (const auto& [name, w] : {std::pair<const char*, double>{"--content-weight", o.content_weight},
                                {"--style-weight", o.style_weight},
                                {"--tv-weight", o.tv_weight}})
    CUDL_CHECK(std::isfinite(w) && w >= 0 && w <= std::numeric_limits<float>::max(),
               "style: {} must be a finite number in [0, {}], got {}", name, std::numeric_limits<float>::max(), w);
  for (double w : o.style_blend_weights)
    CUDL_CHECK(std::isfinite(w) && w >= 0, "style: --style-blend-weights must be finite numbers >= 0, got {}", w);
}

void check_style_sizes(const Sequential& net, const StyleOptions& o, const Image& content,
                       const std::vector<Image>& styles) {
  check_style_options(o);
  const std::vector<int> scales = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
  auto passes = [&](const Image& image, int longest) {
    const auto [w, h] = fit_longest_side(image.width, image.height, longest);
    return passes_the_network(net, h, w);
  };
  // image_size(size): the longest side an image gets at --size `size`.
  auto check = [&](const char* what, const Image& image, int size, auto image_size) {
    if (passes(image, image_size(size))) return;
    int needed = size + 1;
    while (needed < (1 << 16) && !passes(image, image_size(needed))) ++needed;
    const auto [w, h] = fit_longest_side(image.width, image.height, image_size(size));
    CUDL_THROW(
        "style: the {} image ({}x{}) becomes {}x{} at --size {}, too small for the network's poolings up to its "
        "deepest loss layer: use --size >= {}",
        what, image.width, image.height, w, h, size, needed);
  };
  for (int size : scales) {
    check("content", content, size, [](int s) { return s; });
    for (const Image& st : styles) check("style", st, size, [&](int s) { return style_image_size(s, o); });
  }
}

// ---------------------------------------------------------------- colours

Image transfer_original_colors(const Image& content, const Image& styled) {
  CUDL_CHECK(
      content.width == styled.width && content.height == styled.height && content.channels == 3 && styled.channels == 3,
      "transfer_original_colors: need two RGB images of one size, got {}x{}x{} and {}x{}x{}", content.width,
      content.height, content.channels, styled.width, styled.height, styled.channels);
  Image out(styled.width, styled.height, 3);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      const float r = styled.at(y, x, 0), g = styled.at(y, x, 1), b = styled.at(y, x, 2);
      const float cr = content.at(y, x, 0), cg = content.at(y, x, 1), cb = content.at(y, x, 2);
      const float luma = 0.299f * r + 0.587f * g + 0.114f * b;
      const float i = 0.596f * cr - 0.274f * cg - 0.322f * cb;
      const float q = 0.211f * cr - 0.523f * cg + 0.312f * cb;
      out.at(y, x, 0) = std::clamp(luma + 0.956f * i + 0.621f * q, 0.0f, 1.0f);
      out.at(y, x, 1) = std::clamp(luma - 0.272f * i - 0.647f * q, 0.0f, 1.0f);
      out.at(y, x, 2) = std::clamp(luma - 1.106f * i + 1.703f * q, 0.0f, 1.0f);
    }
  }
  return out;
}

// ---------------------------------------------------------------- the objective

StyleObjective::StyleObjective(Context& ctx, Sequential& net, std::vector<std::string> content_taps,
                               std::vector<std::string> style_taps, double content_weight, double style_weight,
                               double tv_weight)
    : net_(&net),
      content_taps_(std::move(content_taps)),
      style_taps_(std::move(style_taps)),
      cw_(content_weight),
      sw_(style_weight),
      tvw_(tv_weight) {
  all_taps_ = content_taps_;
  for (const auto& s : style_taps_)
    if (std::find(all_taps_.begin(), all_taps_.end(), s) == all_taps_.end()) all_taps_.push_back(s);
  net.set_taps(all_taps_);
  losses_ = Tensor::zeros(Shape{4}, ctx);
  tmp_ = Tensor::zeros(Shape{1}, ctx);
}

void StyleObjective::set_targets(Context& ctx, const Tensor& content, const std::vector<Tensor>& styles,
                                 const std::vector<double>& blend_weights) {
  Backend& be = ctx.backend();
  net_->forward(ctx, content, false);
  content_targets_.clear();
  for (const auto& name : content_taps_) content_targets_.push_back(net_->tap(name).clone(ctx));

  std::vector<double> w = blend_weights.empty() ? std::vector<double>(styles.size(), 1.0) : blend_weights;
  CUDL_CHECK(w.size() == styles.size(), "style: {} --style-blend-weights for {} style images", w.size(), styles.size());
  CUDL_CHECK(!styles.empty() || style_taps_.empty(), "style: style layers but no style image");
  double total = 0;
  for (double v : w) {
    CUDL_CHECK(v >= 0 && std::isfinite(v), "style: --style-blend-weights must be >= 0, got {}", v);
    total += v;
  }
  CUDL_CHECK(styles.empty() || total > 0, "style: --style-blend-weights sum to 0");
  style_targets_.clear();
  for (std::size_t i = 0; i < styles.size(); ++i) {
    net_->forward(ctx, styles[i], false);
    for (std::size_t l = 0; l < style_taps_.size(); ++l) {
      const Tensor& f = net_->tap(style_taps_[l]);
      Tensor g = Tensor::empty(Shape{1, f.dim(1), f.dim(1)}, ctx);
      be.gram_forward(ctx, f, g);
      if (i == 0) style_targets_.push_back(Tensor::zeros(g.shape(), ctx));
      be.axpy(ctx, static_cast<float>(w[i] / total), g, style_targets_[l]);
    }
  }
}

void StyleObjective::evaluate(Context& ctx, const Tensor& image, Tensor& grad) {
  CUDL_CHECK(content_targets_.size() == content_taps_.size(), "StyleObjective::evaluate: set_targets first");
  Backend& be = ctx.backend();
  be.fill(ctx, losses_, 0.0f);
  Tensor content = losses_.view(1, Shape{1}), style = losses_.view(2, Shape{1}), tv = losses_.view(3, Shape{1});
  Tensor total = losses_.view(0, Shape{1});
  net_->forward(ctx, image, true);
  std::map<std::string, Tensor> tap_grads;
  auto add_grad = [&](const std::string& name, Tensor g) {
    auto it = tap_grads.find(name);
    if (it == tap_grads.end())
      tap_grads.emplace(name, std::move(g));
    else
      be.axpy(ctx, 1.0f, g, it->second);
  };
  for (std::size_t i = 0; i < content_taps_.size(); ++i) {
    const Tensor& f = net_->tap(content_taps_[i]);
    check::same_shape("style content loss", "features", f, "content target", content_targets_[i]);
    be.mse_loss_forward(ctx, f, content_targets_[i], tmp_);
    be.axpy(ctx, static_cast<float>(cw_), tmp_, content);
    Tensor df = Tensor::empty(f.shape(), ctx);
    be.mse_loss_backward(ctx, f, content_targets_[i], static_cast<float>(cw_), df);
    add_grad(content_taps_[i], std::move(df));
  }
  for (std::size_t i = 0; i < style_targets_.size(); ++i) {
    const Tensor& f = net_->tap(style_taps_[i]);
    Tensor g = Tensor::empty(Shape{1, f.dim(1), f.dim(1)}, ctx);
    be.gram_forward(ctx, f, g);
    be.mse_loss_forward(ctx, g, style_targets_[i], tmp_);
    be.axpy(ctx, static_cast<float>(sw_), tmp_, style);
    Tensor dg = Tensor::empty(g.shape(), ctx);
    be.mse_loss_backward(ctx, g, style_targets_[i], static_cast<float>(sw_), dg);
    Tensor df = Tensor::empty(f.shape(), ctx);
    be.gram_backward(ctx, f, dg, df);
    add_grad(style_taps_[i], std::move(df));
  }
  be.tv_loss_forward(ctx, image, tmp_);
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
  be.tv_loss_backward(ctx, image, static_cast<float>(tvw_), grad, /*accumulate=*/true);
}

StyleLosses StyleObjective::read_losses(Context& ctx) const {
  const auto v = losses_.to_vector(ctx);
  return {v[0], v[1], v[2], v[3]};
}

// ---------------------------------------------------------------- the run

namespace {

Tensor rgb_tensor(const Image& image, Context& ctx) { return image_to_tensor(to_rgb(image), ctx); }

Image clamped_image(Context& ctx, const Tensor& x) {
  Tensor c = x.clone(ctx);
  ctx.backend().clamp(ctx, c, 0.0f, 1.0f);
  return tensor_to_image(c, ctx);
}

}  // namespace

StyleResult run_style_transfer(Context& ctx, Sequential& net, const Image& content_in,
                               const std::vector<Image>& styles_in, const StyleOptions& o,
                               const StyleCallbacks& callbacks) {
  CUDL_CHECK(o.optimizer == "lbfgs" || o.optimizer == "adam", "style: --optimizer must be lbfgs or adam, got '{}'",
             o.optimizer);
  check_style_options(o);
  const std::vector<int> scales = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
  const Image content_rgb = to_rgb(content_in);
  std::vector<Image> styles_rgb;
  for (const auto& s : styles_in) styles_rgb.push_back(to_rgb(s));
  Image init_file;
  if (o.init != "content" && o.init != "random") init_file = to_rgb(read_image(o.init));

  check_style_sizes(net, o, content_rgb, styles_rgb);
  StyleObjective objective(ctx, net, to_torchvision(o.content_layers), to_torchvision(o.style_layers), o.content_weight,
                           o.style_weight, o.tv_weight);
  Backend& be = ctx.backend();
  StyleResult result;
  Image previous, content_scaled;
  for (std::size_t si = 0; si < scales.size(); ++si) {
    const int size = scales[si];
    const auto [w, h] = fit_longest_side(content_rgb.width, content_rgb.height, size);
    check_style_memory(ctx, net, o, h, w);
    content_scaled = resize(content_rgb, w, h);
    std::vector<Tensor> style_tensors;
    const int style_size = style_image_size(size, o);
    for (const auto& s : styles_rgb) {
      const auto [sw, sh] = fit_longest_side(s.width, s.height, style_size);
      style_tensors.push_back(image_to_tensor(resize(s, sw, sh), ctx));
    }
    Tensor content_tensor = image_to_tensor(content_scaled, ctx);
    objective.set_targets(ctx, content_tensor, style_tensors, o.style_blend_weights);
    style_tensors.clear();

    Tensor x;
    if (si > 0) {
      x = rgb_tensor(resize(previous, w, h), ctx);
    } else if (o.init == "content") {
      x = content_tensor.clone(ctx);
    } else if (o.init == "random") {
      x = Tensor::empty(content_tensor.shape(), ctx);
      be.fill_normal(ctx, x, 0.5f, 0.1f, o.seed, 0);
    } else {
      x = rgb_tensor(resize(init_file, w, h), ctx);
    }
    Tensor grad = Tensor::empty(x.shape(), ctx);
    Tensor log = Tensor::zeros(Shape{static_cast<std::int64_t>(o.iters) + 1, 4}, ctx);

    std::unique_ptr<Lbfgs> lbfgs;
    Tensor m, v;
    AdamParams adam;
    if (o.optimizer == "lbfgs") {
      lbfgs = std::make_unique<Lbfgs>(ctx, x.shape(), LbfgsOptions{o.lbfgs_history, o.lr > 0 ? o.lr : 1.0f});
    } else {
      m = Tensor::zeros(x.shape(), ctx);
      v = Tensor::zeros(x.shape(), ctx);
      adam.lr = o.lr > 0 ? o.lr : 0.04f;
    }
    ctx.allocator().reset_peak_stats();
    ctx.synchronize();
    const auto start = std::chrono::steady_clock::now();
    double ms_per_iteration = 0;
    for (int k = 0; k <= o.iters; ++k) {
      objective.evaluate(ctx, x, grad);
      Tensor row = log.view(static_cast<std::int64_t>(k) * 4, Shape{4});
      be.copy(ctx, objective.losses(), row);
      const bool report = k == o.iters || (o.print_every > 0 && k % o.print_every == 0);
      if (report && callbacks.on_progress) {
        StyleProgress p;
        p.scale_index = static_cast<int>(si);
        p.scales = static_cast<int>(scales.size());
        p.size = size;
        p.iteration = k;
        p.iters = o.iters;
        p.losses = objective.read_losses(ctx);  // waits for the device
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        ms_per_iteration = k > 0 ? ms / k : 0.0;
        p.ms_per_iteration = ms_per_iteration;
        const auto stats = ctx.allocator().stats();
        p.pool_peak_bytes = stats.peak_allocated_bytes;
        p.pool_allocated_bytes = stats.allocated_bytes;
        callbacks.on_progress(p);
      }
      if (k > 0 && o.save_every > 0 && k % o.save_every == 0 && k < o.iters && callbacks.on_image) {
        Image img = clamped_image(ctx, x);
        if (o.original_colors) img = transfer_original_colors(content_scaled, img);
        callbacks.on_image(static_cast<int>(si), k, img);
      }
      if (k == o.iters) break;
      if (lbfgs) {
        lbfgs->step(ctx, x, grad);
      } else {
        adam.step = k + 1;
        be.adam_step(ctx, adam, x, grad, m, v);
      }
    }
    ctx.synchronize();
    const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    result.ms_per_iteration = o.iters > 0 ? total_ms / o.iters : ms_per_iteration;
    result.pool_peak_bytes = std::max(result.pool_peak_bytes, ctx.allocator().stats().peak_allocated_bytes);
    const auto values = log.to_vector(ctx);
    std::vector<StyleLosses> rows;
    for (int k = 0; k <= o.iters; ++k) {
      const float* r = values.data() + static_cast<std::size_t>(k) * 4;
      rows.push_back({r[0], r[1], r[2], r[3]});
    }
    result.log.push_back(std::move(rows));
    previous = tensor_to_image(x, ctx);
    if (si + 1 == scales.size()) {
      result.image = clamped_image(ctx, x);
      if (o.original_colors) result.image = transfer_original_colors(content_scaled, result.image);
    }
  }
  return result;
}

}  // namespace cudl
