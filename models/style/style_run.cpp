// The style-transfer run: coarse-to-fine scales, L-BFGS or Adam on the device, tiling of the last
// scale for photos larger than the device, and a runner that keeps the network and the style
// targets across images (video frames).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/step_graph.hpp"
#include "cudl/layers/lbfgs.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "cudl/models/zoo/zoo.hpp"

namespace cudl {

namespace {

std::vector<std::string> to_torchvision(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& n : names) out.push_back(vgg_layer_name(19, n));
  return out;
}

Tensor rgb_tensor(const Image& image, Context& ctx) { return image_to_tensor(to_rgb(image), ctx); }

Image clamped_image(Context& ctx, const Tensor& x) {
  Tensor c = x.clone(ctx);
  ctx.backend().clamp(ctx, c, 0.0f, 1.0f);
  return tensor_to_image(c, ctx);
}

Image clamped(Image im) {
  for (float& v : im.pixels) v = std::clamp(v, 0.0f, 1.0f);
  return im;
}

}  // namespace

int suggest_style_tile(const Sequential& net, const StyleOptions& o, std::size_t available) {
  for (int t = kMaxStyleSide; t >= 64; t -= 32)
    if (estimate_style_bytes(net, o, t, t) <= available) return t;
  return 0;
}

// ---------------------------------------------------------------- the runner

StyleRunner::StyleRunner(Context& ctx, Sequential& net, std::vector<Image> styles, CheckedStyleOptions options)
    : ctx_(&ctx),
      net_(&net),
      styles_(std::move(styles)),
      checked_(std::move(options)),
      o_(checked_.get()),
      objective_(ctx, net, to_torchvision(o_.content_layers), to_torchvision(o_.style_layers), o_.content_weight,
                 o_.style_weight, o_.tv_weight,
                 StyleObjectiveOptions{o_.normalize_gradients, static_cast<float>(o_.tv_beta)}) {
  for (auto& s : styles_) s = to_rgb(s);
  if (!o_.style_masks.empty() && o_.style_masks.size() != styles_.size())
    throw StyleOptionError(StyleField::style_masks, fmt::format("has {} images for {} style images (one mask per "
                                                                "style image)",
                                                                o_.style_masks.size(), styles_.size()));
  if (!o_.style_blend_weights.empty() && o_.style_blend_weights.size() != styles_.size())
    throw StyleOptionError(StyleField::style_blend_weights, fmt::format("has {} weights for {} style images",
                                                                        o_.style_blend_weights.size(), styles_.size()));
}

std::vector<StyleScalePlan> StyleRunner::prepare(const Image& content) const {
  check_style_sizes(*net_, checked_, content, styles_);
  std::vector<StyleScalePlan> plan = plan_style_scales(checked_, content.width, content.height);
  check_style_memory(*ctx_, *net_, o_, plan);
  return plan;
}

const std::vector<std::vector<Tensor>>& StyleRunner::style_grams_at(int style_size, int tile) {
  const auto key = std::make_pair(style_size, tile);
  if (auto it = grams_.find(key); it != grams_.end()) return it->second;
  ++style_computations_;
  Context& ctx = *ctx_;
  Backend& be = ctx.backend();
  const auto taps = to_torchvision(o_.style_layers);
  std::vector<std::vector<Tensor>> all;
  for (const Image& s : styles_) {
    const auto [sw, sh] = fit_longest_side(s.width, s.height, style_size);
    const Image sized = resize(s, sw, sh);
    if (tile <= 0 || std::max(sw, sh) <= tile) {
      all.push_back(objective_.style_grams(ctx, image_to_tensor(sized, ctx)));
      continue;
    }
    // A style image larger than a tile: its Gram is the pixel-weighted mean of its pieces' Grams
    // (G = Σ_t F_t F_tᵀ / (C Σ_t h_t w_t)), so memory stays bounded by the tile. The pieces split
    // the image evenly (no overlap), each at least tile / 2 on a side.
    const int nx = (sw + tile - 1) / tile, ny = (sh + tile - 1) / tile;
    std::vector<Tensor> acc;
    std::vector<double> pixels(taps.size(), 0.0);
    for (int iy = 0; iy < ny; ++iy)
      for (int ix = 0; ix < nx; ++ix) {
        const int x0 = sw * ix / nx, x1 = sw * (ix + 1) / nx, y0 = sh * iy / ny, y1 = sh * (iy + 1) / ny;
        std::vector<Tensor> g =
            objective_.style_grams(ctx, image_to_tensor(crop(sized, x0, y0, x1 - x0, y1 - y0), ctx));
        for (std::size_t l = 0; l < taps.size(); ++l) {
          const Tensor& f = net_->tap(taps[l]);
          const double area = static_cast<double>(f.dim(2) * f.dim(3));
          if (acc.size() <= l) acc.push_back(Tensor::zeros(g[l].shape(), ctx));
          be.axpy(ctx, static_cast<float>(area), g[l], acc[l]);
          pixels[l] += area;
        }
      }
    for (std::size_t l = 0; l < acc.size(); ++l) be.scale(ctx, acc[l], static_cast<float>(1.0 / pixels[l]));
    all.push_back(std::move(acc));
  }
  return grams_.emplace(key, std::move(all)).first->second;
}

namespace {

struct OptimiseArgs {
  int scale_index, scales, size, tile, tiles;
};

}  // namespace

StyleResult StyleRunner::run(const Image& content_in, const Image* init, const StyleCallbacks& callbacks) {
  Context& ctx = *ctx_;
  Backend& be = ctx.backend();
  const StyleOptions& o = o_;
  const Image content_rgb = to_rgb(content_in);
  if (!recoloured_ && o.color_transfer == ColorTransfer::histogram) {
    for (auto& s : styles_) s = match_color_histogram(ctx, s, content_rgb);
    recoloured_ = true;
  } else if (!recoloured_ && o.color_transfer == ColorTransfer::linear) {
    for (auto& s : styles_) s = match_color_moments(s, content_rgb);
    recoloured_ = true;
  }
  const std::vector<StyleScalePlan> plan = prepare(content_rgb);  // before any work
  Image init_file;
  if (init == nullptr && o.init == StyleInit::image) init_file = to_rgb(read_image(o.init_image));
  const bool per_style = !o.style_masks.empty();
  const std::int64_t row_size = objective_.losses().numel();

  StyleResult result;
  // One optimisation of x (the whole image or a tile), logging every iteration's losses on the device.
  auto optimise = [&](Tensor& x, const OptimiseArgs& a) {
    Tensor grad = Tensor::empty(x.shape(), ctx);
    Tensor log = Tensor::zeros(Shape{static_cast<std::int64_t>(o.iters) + 1, row_size}, ctx);
    std::unique_ptr<Lbfgs> lbfgs;
    Tensor m, v;
    AdamParams adam;
    if (o.optimizer == StyleOptimizer::lbfgs) {
      lbfgs = std::make_unique<Lbfgs>(ctx, x.shape(), LbfgsOptions{o.lbfgs_history, o.lr > 0 ? o.lr : 1.0f});
    } else {
      m = Tensor::zeros(x.shape(), ctx);
      v = Tensor::zeros(x.shape(), ctx);
      adam.lr = o.lr > 0 ? o.lr : 0.04f;
    }
    // The peak so far (targets included) is kept in the result before the per-loop count starts.
    result.pool_peak_bytes = std::max(result.pool_peak_bytes, ctx.allocator().stats().peak_allocated_bytes);
    ctx.allocator().reset_peak_stats();
    ctx.synchronize();
    const auto start = std::chrono::steady_clock::now();
    double ms_per_iteration = 0;
    // The loss and gradient evaluation reads x and writes grad and the losses, the same tensors
    // every iteration: with --cuda-graphs it replays as one graph (the optimizer step stays outside:
    // L-BFGS decides on the host, Adam's step count is an argument).
    StepGraph evaluation("style iteration");
    for (int k = 0; k <= o.iters; ++k) {
      evaluation.run(ctx, [&] { objective_.evaluate(ctx, x, grad); });
      Tensor row = log.view(static_cast<std::int64_t>(k) * row_size, Shape{row_size});
      be.copy(ctx, objective_.losses(), row);
      const bool report = k == o.iters || (o.print_every > 0 && k % o.print_every == 0);
      if (report && callbacks.on_progress) {
        StyleProgress p;
        p.scale_index = a.scale_index;
        p.scales = a.scales;
        p.size = a.size;
        p.tile = a.tile;
        p.tiles = a.tiles;
        p.iteration = k;
        p.iters = o.iters;
        p.losses = objective_.read_losses(ctx);  // waits for the device: only when reporting
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        ms_per_iteration = k > 0 ? ms / k : 0.0;
        p.ms_per_iteration = ms_per_iteration;
        const auto stats = ctx.allocator().stats();
        p.pool_peak_bytes = stats.peak_allocated_bytes + evaluation.private_peak_bytes();
        p.pool_allocated_bytes = stats.allocated_bytes;
        callbacks.on_progress(p);
      }
      if (a.tiles == 1 && k > 0 && o.save_every > 0 && k % o.save_every == 0 && k < o.iters && callbacks.on_image) {
        Image img = clamped_image(ctx, x);
        if (o.color_transfer == ColorTransfer::luminance) {
          const Image c = resize(content_rgb, img.width, img.height);
          img = transfer_original_colors(c, img);
        }
        callbacks.on_image(a.scale_index, k, img);
      }
      if (k == o.iters) break;
      if (lbfgs) {
        lbfgs->step(ctx, x, grad);
      } else {
        adam.step = k + 1;
        be.adam_step(ctx, adam, x, grad, m, v);
      }
      if (o.clamp) be.clamp(ctx, x, 0.0f, 1.0f);
    }
    ctx.synchronize();
    const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    result.optimise_seconds += total_ms / 1000.0;
    result.iterations += o.iters;
    result.ms_per_iteration =
        result.iterations > 0 ? 1000.0 * result.optimise_seconds / static_cast<double>(result.iterations) : 0.0;
    result.pool_peak_bytes = std::max(result.pool_peak_bytes,
                                      ctx.allocator().stats().peak_allocated_bytes + evaluation.private_peak_bytes());
    const auto values = log.to_vector(ctx);
    std::vector<StyleLosses> rows;
    for (int k = 0; k <= o.iters; ++k)
      rows.push_back(
          objective_.unpack(values.data() + static_cast<std::size_t>(k) * static_cast<std::size_t>(row_size)));
    result.log.push_back(std::move(rows));
  };

  Image previous;
  const int scales = static_cast<int>(plan.size());
  for (std::size_t si = 0; si < plan.size(); ++si) {
    const StyleScalePlan& scale = plan[si];
    const int size = scale.size, w = scale.width, h = scale.height;
    const bool last = si + 1 == plan.size();
    const bool tiled = scale.tiled;
    const Image content_scaled = resize(content_rgb, w, h);
    objective_.set_style_grams(ctx, style_grams_at(style_image_size(size, o), tiled ? o.tile : 0),
                               o.style_blend_weights, per_style);
    const bool random_start = si == 0 && init == nullptr && o.init == StyleInit::random;
    Image start;  // the starting image on the host (not for a random start of an untiled scale)
    if (si > 0)
      start = resize(previous, w, h);
    else if (init != nullptr)
      start = resize(to_rgb(*init), w, h);
    else if (o.init == StyleInit::content)
      start = content_scaled;
    else if (!random_start)
      start = resize(init_file, w, h);

    if (!tiled) {
      Tensor content_tensor = image_to_tensor(content_scaled, ctx);
      objective_.set_content(ctx, content_tensor, o.content_mask, o.style_masks);
      Tensor x;
      if (random_start) {
        x = Tensor::empty(content_tensor.shape(), ctx);
        be.fill_normal(ctx, x, 0.5f, 0.1f, o.seed, 0);
      } else {
        x = rgb_tensor(start, ctx);
      }
      content_tensor = Tensor();
      optimise(x, {static_cast<int>(si), scales, size, 0, 1});
      previous = tensor_to_image(x, ctx);
      if (last) result.image = clamped_image(ctx, x);
    } else {
      if (random_start) {  // the same distribution as the device fill, drawn on the host
        start = Image(w, h, 3);
        std::mt19937_64 rng(o.seed);
        std::normal_distribution<float> normal(0.5f, 0.1f);
        for (float& p : start.pixels) p = normal(rng);
      }
      // Masks in the output's frame at this scale, cropped per tile.
      const Image content_mask = o.content_mask.width > 0 ? resize(o.content_mask, w, h) : Image();
      std::vector<Image> style_masks;
      for (const Image& m : o.style_masks) style_masks.push_back(resize(m, w, h));
      const std::vector<StyleTile>& tiles = scale.tiles;
      Image canvas = start;
      for (std::size_t t = 0; t < tiles.size(); ++t) {
        const StyleTile& tile = tiles[t];
        std::vector<Image> masks;
        for (const Image& m : style_masks) masks.push_back(crop(m, tile.x, tile.y, tile.width, tile.height));
        {
          Tensor c = image_to_tensor(crop(content_scaled, tile.x, tile.y, tile.width, tile.height), ctx);
          objective_.set_content(
              ctx, c, content_mask.width > 0 ? crop(content_mask, tile.x, tile.y, tile.width, tile.height) : Image(),
              masks);
        }
        // Every tile starts from the same image (the content, or the previous scale's result), not
        // from its finished neighbours: a tile started half from stylised pixels ends with two
        // amounts of stylisation and an edge between them. Tiles are blended back with linear
        // ramps across their overlaps with the tiles before them (left, above), which also gives
        // a tile's own edge pixels (zero padding in every convolution) almost no weight.
        Tensor x = rgb_tensor(crop(start, tile.x, tile.y, tile.width, tile.height), ctx);
        optimise(x, {static_cast<int>(si), scales, size, static_cast<int>(t), static_cast<int>(tiles.size())});
        const Image done = tensor_to_image(x, ctx);
        // Overlaps with the finished tiles to the left and above (0 at the image's edges).
        int left = 0, top = 0;
        for (std::size_t u = 0; u < t; ++u) {
          const StyleTile& p = tiles[u];
          if (p.y == tile.y && p.x < tile.x) left = std::max(left, p.x + p.width - tile.x);
          if (p.x == tile.x && p.y < tile.y) top = std::max(top, p.y + p.height - tile.y);
        }
        for (int y = 0; y < tile.height; ++y) {
          const float ay =
              top > 0 ? std::clamp((static_cast<float>(y) + 0.5f) / static_cast<float>(top), 0.0f, 1.0f) : 1.0f;
          for (int x0 = 0; x0 < tile.width; ++x0) {
            const float ax =
                left > 0 ? std::clamp((static_cast<float>(x0) + 0.5f) / static_cast<float>(left), 0.0f, 1.0f) : 1.0f;
            const float alpha = ax * ay;
            for (int c = 0; c < 3; ++c) {
              float& dst = canvas.at(tile.y + y, tile.x + x0, c);
              dst = alpha * done.at(y, x0, c) + (1.0f - alpha) * dst;
            }
          }
        }
      }
      previous = canvas;
      if (last) result.image = clamped(std::move(canvas));
    }
    if (last && o.color_transfer == ColorTransfer::luminance)
      result.image = transfer_original_colors(content_scaled, result.image);
  }
  return result;
}

StyleResult run_style_transfer(Context& ctx, Sequential& net, const Image& content, const std::vector<Image>& styles,
                               const StyleOptions& options, const StyleCallbacks& callbacks) {
  StyleRunner runner(ctx, net, styles, options);
  return runner.run(content, nullptr, callbacks);
}

}  // namespace cudl
