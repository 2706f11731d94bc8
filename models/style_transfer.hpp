#pragma once
// Gatys et al. neural style transfer on VGG19 features, following jcjohnson/neural-style: its
// option names, its loss definitions and (where they carry over) its defaults.
//
//   content  cw · mean((F − P)²)             at each content layer (F the image's features, P the content's)
//   style    sw · Σ_l mean((G_l − A_l)²)     G = F·Fᵀ/(C·H·W); A the blend Σ w_i G(style_i), Σ w_i = 1
//   tv       tvw · Σ (x[i+1,j] − x[i,j])² + (x[i,j+1] − x[i,j])²   over the [0,1] image
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
#include <string>
#include <vector>

#include "engine/io/image.hpp"
#include "models/sequential.hpp"

namespace cudl {

struct StyleOptions {
  int size = 512;                           // longest side of the output
  double style_scale = 1.0;                 // style images sized to size * style_scale on their longest side
  std::vector<double> style_blend_weights;  // empty: equal; normalised to sum 1
  int iters = 1000;                         // per scale
  std::string optimizer = "lbfgs";          // lbfgs | adam
  float lr = 0.0f;  // 0: the optimizer's default (L-BFGS 1, Adam 0.04 ≈ neural-style's 10 on 0-255)
  int lbfgs_history = 100;
  double content_weight = 1.0;
  double style_weight = 1e6;
  double tv_weight = 1e-3;
  std::vector<std::string> content_layers{"relu4_2"};
  std::vector<std::string> style_layers{"relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"};
  std::string init = "content";  // content | random | an image file
  bool original_colors = false;
  std::string pooling = "max";  // max | avg
  std::vector<int> scales;      // coarse to fine longest sides; empty: {size}
  int print_every = 50;         // progress callback period (losses read back then only)
  int save_every = 0;           // intermediate image callback period (0: never)
  std::uint64_t seed = 0;       // random init
};

// Losses of one image, already weighted. total = content + style + tv.
struct StyleLosses {
  double total = 0, content = 0, style = 0, tv = 0;
};

struct StyleProgress {
  int scale_index = 0, scales = 1;
  int size = 0;                  // longest side at this scale
  int iteration = 0, iters = 0;  // iterations done at this scale
  StyleLosses losses;            // of the image before update `iteration` (at iteration == iters: the result)
  double ms_per_iteration = 0;
  std::size_t pool_peak_bytes = 0, pool_allocated_bytes = 0;
};

struct StyleCallbacks {
  std::function<void(const StyleProgress&)> on_progress;                       // every print_every and at the end
  std::function<void(int scale_index, int iteration, const Image&)> on_image;  // every save_every
};

struct StyleResult {
  Image image;                                // RGB, clamped to [0,1] (and with the content's colours on request)
  std::vector<std::vector<StyleLosses>> log;  // per scale: iters + 1 rows (losses before update k)
  std::size_t pool_peak_bytes = 0;
  double ms_per_iteration = 0;  // of the last scale
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

// The longest side style transfer takes, for the content (--size, --scales) and the style images.
constexpr int kMaxStyleSide = 1 << 15;

// Throws when a number in the options is out of range or not finite: sizes in [16, kMaxStyleSide]
// (the style images' size * style_scale too), weights finite floats >= 0, lr finite >= 0 (0: the
// optimizer's default). run_style_transfer and check_style_sizes call it first.
void check_style_options(const StyleOptions& options);

// Throws, before any work, when an image at one of the scales (the content at each size, a style
// at size * style_scale) is too small for the network's poolings up to its deepest loss layer,
// naming the image, the size it becomes and the smallest --size that works.
void check_style_sizes(const Sequential& net, const StyleOptions& options, const Image& content,
                       const std::vector<Image>& styles);

// The longest side the style images get when the content's is `size`: size * style_scale, clamped
// to [16, kMaxStyleSide].
int style_image_size(int size, const StyleOptions& options);

// (width, height) with the longest side `longest`, keeping the aspect ratio.
std::pair<int, int> fit_longest_side(int width, int height, int longest);

// Luminance from `styled`, chroma from `content` (YIQ), the same size.
Image transfer_original_colors(const Image& content, const Image& styled);

// The whole run: every scale, both optimizers. content and styles are RGB images of any size.
StyleResult run_style_transfer(Context& ctx, Sequential& net, const Image& content, const std::vector<Image>& styles,
                               const StyleOptions& options, const StyleCallbacks& callbacks = {});

// One loss + gradient evaluation, exposed for tests: the network must come from make_style_network
// (or be a similar chain whose layer names the options use, see StyleLossOptions).
class StyleObjective {
 public:
  // `content_taps` / `style_taps` are layer names in `net` (features.N).
  StyleObjective(Context& ctx, Sequential& net, std::vector<std::string> content_taps,
                 std::vector<std::string> style_taps, double content_weight, double style_weight, double tv_weight);
  // Targets: P from the content image, A = Σ w_i G(style_i) (weights normalised here).
  void set_targets(Context& ctx, const Tensor& content, const std::vector<Tensor>& styles,
                   const std::vector<double>& blend_weights);
  // Losses into device scalars (losses(): [4] = total, content, style, tv) and the image gradient.
  void evaluate(Context& ctx, const Tensor& image, Tensor& grad);
  const Tensor& losses() const { return losses_; }
  StyleLosses read_losses(Context& ctx) const;

 private:
  Sequential* net_;
  std::vector<std::string> content_taps_, style_taps_, all_taps_;
  double cw_, sw_, tvw_;
  std::vector<Tensor> content_targets_, style_targets_;
  Tensor losses_, tmp_;
};

}  // namespace cudl
