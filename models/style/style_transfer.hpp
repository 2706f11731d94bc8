#pragma once
// Gatys et al. neural style transfer on VGG19 features, following jcjohnson/neural-style: its
// option names, its loss definitions and (where they carry over) its defaults.
//
//   content  cw · mean((F − P)²)             at each content layer (F the image's features, P the content's)
//   style    sw · Σ_l mean((G_l − A_l)²)     G = F·Fᵀ/(C·H·W); A the blend Σ w_i G(style_i), Σ w_i = 1
//   tv       tvw · Σ_ij (a² + b²)^(β/2), a = x[i+1,j] − x[i,j], b = x[i,j+1] − x[i,j]   over the [0,1] image
//            (β = tv_beta, 2 by default: the sum of squared differences; the Keras example uses 1.25)
//
// Spatial control (Gatys et al. 2017, guided Gram matrices): with style masks, style i's loss at
// layer l compares G(F ⊙ m_il) · h·w/Σ m_il² with the Gram of style i alone, m_il its mask resized
// to the layer; the content mask weights the content loss the same way, mean(m² (F − P)²).
//
// The image is optimised in [0,1] RGB (ImageNet normalisation is the network's first layer), by
// L-BFGS or Adam, entirely on the device: the losses land in device scalars and are read back only
// when the progress callback asks for them (every print_every iterations) or at the end for the log.
//
// Default weights. neural-style's (content 5, style 100, tv 1e-3) were tuned for Caffe's VGG19 on
// [0,255] images; with torchvision's weights on [0,1] images normalised by the ImageNet std, the
// features are ~50x smaller and the Gram entries ~2500x smaller. PyTorch's own neural-style
// tutorial uses the same Gram normalisation with content 1 and style 1e6, which balances; we take
// those, and tv 1e-3 against our sum-form TV (about 1-5 at 512 px for a photo).
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cudl/engine/io/image.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/style/style_options.hpp"

namespace cudl {

// Losses of one image, already weighted. total = content + style + tv.
struct StyleLosses {
  double total = 0, content = 0, style = 0, tv = 0;
  std::vector<double> content_layers, style_layers;  // per loss layer, in the options' order (weighted)
};

struct StyleProgress {
  int scale_index = 0, scales = 1;
  int size = 0;                  // longest side at this scale
  int iteration = 0, iters = 0;  // iterations done at this scale (this tile)
  int tile = 0, tiles = 1;       // the tile being optimised, of how many (1: the whole image)
  StyleLosses losses;            // of the image before update `iteration` (at iteration == iters: the result)
  double ms_per_iteration = 0;
  std::size_t pool_peak_bytes = 0, pool_allocated_bytes = 0;
};

struct StyleCallbacks {
  std::function<void(const StyleProgress&)> on_progress;                       // every print_every and at the end
  std::function<void(int scale_index, int iteration, const Image&)> on_image;  // every save_every
};

struct StyleResult {
  Image image;  // RGB, clamped to [0,1] (and with the content's colours on request)
  std::vector<std::vector<StyleLosses>>
      log;  // per scale (a tiled scale: per tile): iters + 1 rows (losses before update k)
  std::size_t pool_peak_bytes = 0;
  // The whole run: every scale's and every tile's optimisation time over all their iterations
  // (not the last tile's, which read 430 ms against 0.9-1.4 s per tile in a tiled run).
  double ms_per_iteration = 0;
  double optimise_seconds = 0;  // time in the optimisation loops, all scales and tiles
  std::int64_t iterations = 0;  // iterations run, all scales and tiles
};

// Parses "relu4_2,relu5_1"-style layer lists and validates every name for VGG19.
std::vector<std::string> parse_style_layers(const std::string& csv);

// The VGG19 feature stack cut after the deepest layer the options use, weights from a safetensors
// file with torchvision names (extra tensors such as classifier.* are ignored) or, for
// "random:SEED", seeded random weights; frozen, with gradients flowing to the image only.
Sequential make_style_network(Context& ctx, const StyleOptions& options, const std::string& weights);

// Bytes the optimisation of an image with longest side `size` needs (activations, gradients,
// optimizer state, weights), an estimate on the safe side.
std::size_t estimate_style_bytes(const Sequential& net, const StyleOptions& options, int height, int width);
// Memory usable on ctx's device (CUDA: free device memory; CPU: MemAvailable), 0 if unknown.
std::size_t available_memory(const Context& ctx);
// Throws naming the largest size that fits when `size` does not.
void check_style_memory(Context& ctx, const Sequential& net, const StyleOptions& options, int height, int width);
// The memory decision of a run, made here only: every scale's work (an image or a tile) must fit;
// returns the bytes of the largest.
std::size_t check_style_memory(Context& ctx, const Sequential& net, const StyleOptions& options,
                               const std::vector<StyleScalePlan>& plan);

// Throws, before any work, when an image at one of the scales (the content at each size, a style
// at size * style_scale) is too small for the network's poolings up to its deepest loss layer,
// naming the image, the size it becomes and the smallest --size that works.
void check_style_sizes(const Sequential& net, const CheckedStyleOptions& options, const Image& content,
                       const std::vector<Image>& styles);

// Default (content, style, tv) weights of a model type: torchvision (1, 1e6, 1e-3, see above);
// caffe neural-style's (5, 100, 1e-3), tuned for that network's 0-255 input.
struct StyleWeights {
  double content, style, tv;
};
StyleWeights default_style_weights(StyleModel model);

// Luminance from `styled`, chroma from `content` (YIQ), the same size.
Image transfer_original_colors(const Image& content, const Image& styled);
// `style`'s colours mapped to `content`'s mean and covariance (RGB): x' = A (x − μs) + μc with
// A = Lc Ls⁻¹ (Cholesky factors, Σ = L Lᵀ), clamped to [0,1]. Sizes may differ.
// --color-transfer linear.
Image match_color_moments(const Image& style, const Image& content);
// match_color_moments, then each channel's histogram matched to the content's exactly by sorting
// (Backend::match_histograms, on ctx's device): the result's channels hold the content's values
// (at the style's pixel count's quantiles) in the style's order. --color-transfer histogram.
Image match_color_histogram(Context& ctx, const Image& style, const Image& content);

// One loss + gradient evaluation, exposed for tests: the network must come from make_style_network
// (or be a similar chain whose layer names the options use, see StyleLossOptions).
struct StyleObjectiveOptions {
  bool normalize_gradients = false;
  float tv_beta = 2.0f;
};

// The network's weights are held constant (Backend::hold_constant) while the objective lives:
// load weights into `net` before constructing it.
class StyleObjective {
 public:
  // `content_taps` / `style_taps` are layer names in `net` (features.N).
  StyleObjective(Context& ctx, Sequential& net, std::vector<std::string> content_taps,
                 std::vector<std::string> style_taps, double content_weight, double style_weight, double tv_weight,
                 StyleObjectiveOptions extra = {});
  // Targets: P from the content image, A = Σ w_i G(style_i) (weights normalised here).
  void set_targets(Context& ctx, const Tensor& content, const std::vector<Tensor>& styles,
                   const std::vector<double>& blend_weights);

  // The two halves of set_targets, for callers that keep style targets across images (frames,
  // tiles). grams[i][l]: style i's Gram at style tap l ([1,C,C]). Without masks the targets are
  // blended into one per layer; with masks (set_content's style_masks) each style keeps its own.
  void set_style_grams(Context& ctx, const std::vector<std::vector<Tensor>>& grams,
                       const std::vector<double>& blend_weights, bool per_style);
  // The Grams of one style image at the style taps (one forward pass).
  std::vector<Tensor> style_grams(Context& ctx, const Tensor& style);
  // P from `content`; masks (grey [0,1] images in the content's frame, any size: resized to each
  // layer) restrict the content loss and each style's loss. style_masks: empty or one per style.
  void set_content(Context& ctx, const Tensor& content, const Image& content_mask = {},
                   const std::vector<Image>& style_masks = {});

  // Losses into device scalars (losses(): total, content, style, tv, then per content layer, per
  // style layer) and the image gradient.
  void evaluate(Context& ctx, const Tensor& image, Tensor& grad);
  const Tensor& losses() const { return losses_; }
  StyleLosses read_losses(Context& ctx) const;
  // A row of losses() read back (the log keeps them on the device until the end).
  StyleLosses unpack(const float* row) const;

 private:
  // g (+)= the gradient scaled by w, or by w / (‖g‖₁ + tiny) with normalize_gradients.
  void add_weighted(Context& ctx, Tensor& df, float weight, Tensor& into, bool first);

  Sequential* net_;
  std::vector<std::string> content_taps_, style_taps_, all_taps_;
  double cw_, sw_, tvw_;
  StyleObjectiveOptions extra_;
  std::vector<Tensor> content_targets_;
  std::vector<std::vector<Tensor>> style_targets_;  // [style][layer]; one "style" when blended
  std::vector<double> style_factors_;               // per style: its blend weight when masked
  std::vector<Tensor> content_masks_;               // per content tap, [1,C,h,w]; empty: none
  std::vector<std::vector<Tensor>> style_masks_;    // [style][layer] [1,C,h,w]; empty: none
  std::vector<std::vector<float>> mask_gains_;      // [style][layer] h·w / Σ m²
  Tensor losses_, tmp_, norm_;
  ConstantHold weights_;  // the network's weights, constant for the objective's lifetime
};

// Style transfer of one or more content images (video frames) with the same styles: the network
// and the style targets (per style size) are computed once and reused.
class StyleRunner {
 public:
  // Options already checked (a StyleOptions converts, checking); with ColorTransfer::histogram or
  // linear the styles are recoloured against the first content image run() sees (so every frame keeps the
  // same targets and colours do not flicker).
  StyleRunner(Context& ctx, Sequential& net, std::vector<Image> styles, CheckedStyleOptions options);
  // The run's plan for `content` (scales, tiles), after checking that every scale passes the
  // network and fits in memory: run() starts with it; a caller may ask first, before any work.
  std::vector<StyleScalePlan> prepare(const Image& content) const;
  StyleRunner(const StyleRunner&) = delete;  // o_ refers into the runner
  StyleRunner& operator=(const StyleRunner&) = delete;
  // Every scale; `init` (optional, any size) replaces options.init at the first scale: a frame
  // starts from the previous frame's result.
  StyleResult run(const Image& content, const Image* init = nullptr, const StyleCallbacks& callbacks = {});
  // How many times the style targets were computed (once per style size).
  int style_target_computations() const { return style_computations_; }

 private:
  const std::vector<std::vector<Tensor>>& style_grams_at(int size, int tile);

  Context* ctx_;
  Sequential* net_;
  std::vector<Image> styles_;
  CheckedStyleOptions checked_;
  const StyleOptions& o_;  // checked_'s
  StyleObjective objective_;
  bool recoloured_ = false;
  std::map<std::pair<int, int>, std::vector<std::vector<Tensor>>> grams_;  // (style size, tile) -> [style][layer]
  int style_computations_ = 0;
};

// The whole run: every scale, both optimizers. content and styles are RGB images of any size.
StyleResult run_style_transfer(Context& ctx, Sequential& net, const Image& content, const std::vector<Image>& styles,
                               const StyleOptions& options, const StyleCallbacks& callbacks = {});

// The largest square tile (a multiple of 32, >= 64) whose optimisation fits in `available` bytes, 0 if none.
int suggest_style_tile(const Sequential& net, const StyleOptions& options, std::size_t available);

}  // namespace cudl
