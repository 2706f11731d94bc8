// `cudl style`: neural style transfer on a photo (models/style/style_transfer.hpp), with
// jcjohnson/neural-style's option names.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/text.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/progress.hpp"
#include "tools/cudl/style_flags.hpp"

namespace cudl::cli {

namespace {

struct StyleArgs {
  std::string content, style, output, weights, device = "auto", log;
  std::string blend_weights, content_layers = "relu4_2", style_layers = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1";
  std::string scales, model_type = "torchvision", color_transfer = "none", content_mask, style_masks;
  std::string optimizer = "lbfgs", pooling = "max", init = "content";
  std::string content_dir, output_dir;
  bool original_colors = false;
  ComputeOptions compute;
  bool content_weight_given = false, style_weight_given = false;
  StyleOptions o;
};

// The items of a comma-separated list of paths; an empty item ("a.png,", ",") is an error naming
// the option, not a path silently dropped.
std::vector<std::string> split(const std::string& option, const std::string& csv) {
  std::vector<std::string> out = split_list(csv);
  for (const std::string& item : out)
    CUDL_CHECK(!item.empty(), "style: {} '{}' has an empty item; expected comma-separated image paths", option, csv);
  return out;
}

const char* kWeightsHelp =
    "style: --weights is required: a VGG19 safetensors file with torchvision names (features.N.weight/bias). "
    "Convert torchvision's vgg19 with tools/convert_torchvision_vgg19.py, or Caffe's VGG_ILSVRC_19_layers with "
    "tools/convert_caffe_vgg19.py (then --model-type caffe); or pass --weights random:SEED for a smoke test with "
    "seeded random weights";

std::string with_suffix(const std::string& path, const std::string& suffix) {
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + suffix + p.extension().string())).string();
}

bool image_extension(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// The frames of --content-dir: its PNG and JPEG files, in name order.
std::vector<std::filesystem::path> list_frames(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  CUDL_CHECK(fs::is_directory(dir, ec), "style: --content-dir '{}' is not a folder", dir);
  std::vector<fs::path> frames;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (image_extension(e.path()) && !fs::is_directory(e.path())) frames.push_back(e.path());
  CUDL_CHECK(!ec, "style: --content-dir '{}': cannot list it: {}", dir, ec.message());
  CUDL_CHECK(!frames.empty(), "style: --content-dir '{}' holds no .png, .jpg or .jpeg file", dir);
  std::sort(frames.begin(), frames.end());
  for (const auto& f : frames) check_input_file("--content-dir", f.string());
  return frames;
}

// " [relu4_2 1.2 relu5_1 3.4]": per-layer losses, for the progress line.
std::string per_layer(const std::vector<std::string>& names, const std::vector<double>& values) {
  if (names.size() < 2 && values.size() < 2) return {};
  std::string out = " [";
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i)
    out += fmt::format("{}{} {:.4g}", i ? " " : "", names[i], values[i]);
  return out + "]";
}

std::string loss_status(const StyleOptions& o, const StyleLosses& l) {
  return fmt::format("loss {:.4g} (content {:.4g}{} style {:.4g}{} tv {:.4g})", l.total, l.content,
                     per_layer(o.content_layers, l.content_layers), l.style, per_layer(o.style_layers, l.style_layers),
                     l.tv);
}

std::string csv_log(const StyleOptions& o, const StyleResult& r) {
  std::string csv = "iteration,total,content,style,tv";
  for (const auto& n : o.content_layers) csv += ",content_" + n;
  for (const auto& n : o.style_layers) csv += ",style_" + n;
  csv += "\n";
  for (const auto& rows : r.log)
    for (std::size_t k = 0; k < rows.size(); ++k) {
      csv +=
          fmt::format("{},{:.9g},{:.9g},{:.9g},{:.9g}", k, rows[k].total, rows[k].content, rows[k].style, rows[k].tv);
      for (double v : rows[k].content_layers) csv += fmt::format(",{:.9g}", v);
      for (double v : rows[k].style_layers) csv += fmt::format(",{:.9g}", v);
      csv += "\n";
    }
  return csv;
}

void check_finite(const StyleResult& r, const std::string& what) {
  // A NaN or inf loss leaves a black or garbage image: a failure, not a result.
  const StyleLosses& last = r.log.back().back();
  CUDL_CHECK(std::isfinite(last.total),
             "style: the loss ended as {:.4g} (content {:.4g}, style {:.4g}, tv {:.4g}){}: the weights or the loss "
             "weights are unusable; no image written",
             last.total, last.content, last.style, last.tv, what);
}

// Everything style reads, and everything it writes (each frame's output by name), so that no
// output can overwrite an input or another output.
std::vector<PathUse> style_inputs(const StyleArgs& a, const StyleOptions& o, const std::vector<std::string>& styles,
                                  const std::vector<std::string>& masks) {
  std::vector<PathUse> in = {{"--content", a.content},
                             {"--content-dir", a.content_dir, PathUse::Kind::folder},
                             {"--weights", a.weights.starts_with("random:") ? std::string() : a.weights},
                             {"--content-mask", a.content_mask},
                             {"--init", o.init_image}};
  for (const auto& p : styles) in.push_back({"--style", p});
  for (const auto& p : masks) in.push_back({"--style-masks", p});
  return in;
}

std::vector<PathUse> style_outputs(const StyleArgs& a, const StyleOptions& o,
                                   const std::vector<std::filesystem::path>& frames) {
  std::vector<PathUse> out = {
      {"--output", a.output}, {"--output-dir", a.output_dir, PathUse::Kind::folder}, {"--log", a.log}};
  for (const auto& f : frames)
    out.push_back({"--output-dir", (std::filesystem::path(a.output_dir) / f.filename()).string()});
  // --save-every's images beside --output (named as cb.on_image names them below).
  if (!a.output.empty() && o.save_every > 0) {
    const auto sizes = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
    for (int size : sizes)
      for (std::int64_t k = o.save_every; k < o.iters; k += o.save_every)
        out.push_back({"--save-every", with_suffix(a.output, sizes.size() > 1 ? fmt::format("_{}_{}", size, k)
                                                                              : fmt::format("_{}", k))});
  }
  return out;
}

void run_style(StyleArgs a) {
  CUDL_CHECK(!a.weights.empty(), "{}", kWeightsHelp);
  StyleOptions o = a.o;
  o.model = parse_style_model(a.model_type);
  o.optimizer = parse_style_optimizer(a.optimizer);
  o.pooling = parse_style_pooling(a.pooling);
  set_style_init(o, a.init);
  const StyleWeights defaults = default_style_weights(o.model);
  if (!a.content_weight_given) o.content_weight = defaults.content;
  if (!a.style_weight_given) o.style_weight = defaults.style;
  o.color_transfer = parse_color_transfer(a.color_transfer);
  if (a.original_colors) {
    CUDL_CHECK(o.color_transfer == ColorTransfer::none || o.color_transfer == ColorTransfer::luminance,
               "style: --original-colors is --color-transfer luminance; it contradicts --color-transfer {}",
               color_transfer_name(o.color_transfer));
    o.color_transfer = ColorTransfer::luminance;
  }
  o.content_layers = parse_style_layers(a.content_layers);
  o.style_layers = parse_style_layers(a.style_layers);
  if (!a.blend_weights.empty())
    o.style_blend_weights =
        parse_number_list("--style-blend-weights", a.blend_weights, cli_bounds(StyleField::style_blend_weights));
  if (!a.scales.empty()) {
    const StyleBounds b = *style_bounds(StyleField::scales);
    for (std::int64_t s : parse_whole_number_list("--scales", a.scales, static_cast<std::int64_t>(b.lo),
                                                  static_cast<std::int64_t>(b.hi)))
      o.scales.push_back(static_cast<int>(s));
  }
  const bool frames_mode = !a.content_dir.empty() || !a.output_dir.empty();
  if (frames_mode) {
    CUDL_CHECK(!a.content_dir.empty() && !a.output_dir.empty(), "style: --content-dir and --output-dir go together");
    CUDL_CHECK(a.content.empty() && a.output.empty(),
               "style: give either --content and --output (one image) or --content-dir and --output-dir (frames)");
  } else {
    CUDL_CHECK(!a.content.empty() && !a.output.empty(),
               "style: --content and --output are required (or --content-dir and --output-dir for frames)");
  }
  const std::vector<std::string> style_paths = split("--style", a.style);
  CUDL_CHECK(!style_paths.empty(), "style: --style needs at least one image");
  // Counts against the style images, before the network loads (the runner checks them again for
  // library callers).
  CUDL_CHECK(o.style_blend_weights.empty() || o.style_blend_weights.size() == style_paths.size(),
             "style: {} --style-blend-weights for {} style images", o.style_blend_weights.size(), style_paths.size());
  const std::vector<std::string> mask_paths = split("--style-masks", a.style_masks);
  CUDL_CHECK(mask_paths.empty() || mask_paths.size() == style_paths.size(),
             "style: {} --style-masks for {} style images: give one grey mask per style image", mask_paths.size(),
             style_paths.size());
  std::vector<std::filesystem::path> frames;
  if (frames_mode) frames = list_frames(a.content_dir);
  check_outputs_spare_inputs(style_inputs(a, o, style_paths, mask_paths), style_outputs(a, o, frames));
  if (frames_mode) {
    std::error_code ec;
    CUDL_CHECK(std::filesystem::is_directory(a.output_dir, ec), "style: --output-dir '{}' is not a folder",
               a.output_dir);
    check_writable_output("--output-dir", (std::filesystem::path(a.output_dir) / frames[0].filename()).string());
  } else {
    const std::string ext = std::filesystem::path(a.output).extension().string();
    CUDL_CHECK(ext == ".png" || ext == ".PNG" || ext == ".jpg" || ext == ".jpeg" || ext == ".JPG" || ext == ".JPEG",
               "style: --output must end in .png, .jpg or .jpeg, got '{}'", a.output);
    check_writable_output("--output", a.output);
  }
  check_writable_output("--log", a.log);
  // Every input is read and checked before any work (and before anything is written). Only the
  // largest scale's sizes are needed: a large JPEG is decoded at a reduced scale that keeps them.
  const auto sizes = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
  // Clamped: the numbers are checked (once, below) after the masks are read.
  const int largest = std::clamp(*std::max_element(sizes.begin(), sizes.end()), 16, kMaxStyleSide);
  ImageReadOptions content_read, style_read;
  content_read.longest_side = largest;
  style_read.longest_side = style_image_size(largest, o);
  const Image content = read_image(frames_mode ? frames[0].string() : a.content, content_read);
  // Every frame decodes before the first is stylised: a corrupt one found later would leave the
  // output folder half written.
  for (std::size_t i = 1; i < frames.size(); ++i) (void)read_image(frames[i].string(), content_read);
  std::vector<Image> styles;
  for (const auto& p : style_paths) styles.push_back(read_image(p, style_read));
  if (o.init == StyleInit::image) (void)read_image(o.init_image);
  if (!a.content_mask.empty()) o.content_mask = read_image(a.content_mask, content_read);
  for (const auto& p : mask_paths) o.style_masks.push_back(read_image(p, content_read));
  const CheckedStyleOptions checked(o);  // the one check of the options, masks included

  Context ctx(Device::parse(a.device));
  apply_compute_options(ctx, a.compute);
  Sequential net = make_style_network(ctx, checked.get(), a.weights);
  StyleRunner runner(ctx, net, styles, checked);
  // The library's plan: every scale passes the network and fits in memory, before any work.
  const auto plan = runner.prepare(content);
  const StyleScalePlan& last = plan.back();
  const double gib =
      static_cast<double>(estimate_style_bytes(net, checked.get(), last.work_height, last.work_width)) / (1 << 30);
  fmt::print("style transfer on {}: {}x{} output{}, {} x {} iterations, {}, about {:.2f} GiB{}\n", ctx.device(),
             last.width, last.height, frames_mode ? fmt::format(" x {} frames", frames.size()) : std::string(),
             sizes.size(), checked->iters, style_optimizer_name(checked->optimizer), gib,
             last.tiled ? fmt::format(" per {}x{} tile", last.work_width, last.work_height) : std::string());
  if (frames_mode) {
    // One network and one set of style targets for every frame; each frame starts from the
    // previous stylised one (temporal warm start), so the sequence changes only where it moves.
    ProgressBar bar("frames");
    const auto start = std::chrono::steady_clock::now();
    Image previous;
    StyleResult all;
    std::string status;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const Image frame = i == 0 ? content : read_image(frames[i].string(), content_read);
      StyleResult r = runner.run(frame, i == 0 ? nullptr : &previous);
      check_finite(r, fmt::format(" on frame '{}'", frames[i].string()));
      write_image((std::filesystem::path(a.output_dir) / frames[i].filename()).string(), r.image);
      for (auto& rows : r.log) all.log.push_back(std::move(rows));
      all.pool_peak_bytes = std::max(all.pool_peak_bytes, r.pool_peak_bytes);
      status = fmt::format("{} {}", frames[i].filename().string(), loss_status(o, all.log.back().back()));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      bar.update(static_cast<std::int64_t>(i + 1), static_cast<std::int64_t>(frames.size()), s, status);
      previous = std::move(r.image);
    }
    bar.finish(status);
    if (!a.log.empty()) write_file_atomically(a.log, csv_log(o, all));
    fmt::print("wrote {} frames into {}; memory pool peak {:.1f} MiB\n", frames.size(), a.output_dir,
               static_cast<double>(all.pool_peak_bytes) / (1 << 20));
    return;
  }

  std::unique_ptr<ProgressBar> bar;
  std::pair<int, int> bar_key{-1, -1};
  StyleCallbacks cb;
  cb.on_progress = [&](const StyleProgress& p) {
    if (std::make_pair(p.scale_index, p.tile) != bar_key) {
      if (bar) bar->finish("");
      bar =
          std::make_unique<ProgressBar>(p.tiles > 1 ? fmt::format("style {}px tile {}/{}", p.size, p.tile + 1, p.tiles)
                                                    : fmt::format("style {}px", p.size));
      bar_key = {p.scale_index, p.tile};
    }
    const std::string status = fmt::format("{} {:.1f} ms/it", loss_status(o, p.losses), p.ms_per_iteration);
    bar->update(p.iteration, p.iters, p.ms_per_iteration * p.iteration / 1000.0, status);
    if (p.iteration == p.iters) {
      bar->finish(status);
      bar.reset();
    }
  };
  cb.on_image = [&](int scale_index, int iteration, const Image& image) {
    const std::string suffix = sizes.size() > 1
                                   ? fmt::format("_{}_{}", sizes[static_cast<std::size_t>(scale_index)], iteration)
                                   : fmt::format("_{}", iteration);
    write_image(with_suffix(a.output, suffix), image);
  };
  StyleResult r = runner.run(content, nullptr, cb);
  check_finite(r, "");
  if (!a.log.empty()) write_file_atomically(a.log, csv_log(o, r));
  write_image(a.output, r.image);
  fmt::print(
      "wrote {} ({}x{}); {:.1f} ms/iteration over the run's {} iterations ({:.1f} s); memory pool peak {:.1f} MiB\n",
      a.output, r.image.width, r.image.height, r.ms_per_iteration, r.iterations, r.optimise_seconds,
      static_cast<double>(r.pool_peak_bytes) / (1 << 20));
}

}  // namespace

void add_style_command(CLI::App& app) {
  auto a = std::make_shared<StyleArgs>();
  auto* cmd = app.add_subcommand("style", "Neural style transfer (Gatys et al., as jcjohnson/neural-style) on VGG19");
  cmd->add_option("--content", a->content, "Content image (PNG or JPEG)");
  cmd->add_option("--style", a->style, "Style image(s), comma-separated")->required();
  cmd->add_option("--output", a->output, "Output image (.png or .jpg)");
  cmd->add_option("--content-dir", a->content_dir, "Frames to stylise in name order (PNG/JPEG), with --output-dir");
  cmd->add_option("--output-dir", a->output_dir, "Where the stylised frames go (same file names)");
  cmd->add_option("--weights", a->weights, "VGG19 safetensors (torchvision names) or random:SEED")
      ->check(weights_source());
  cmd->add_option("--style-blend-weights", a->blend_weights, "Weights of the style images (normalised to sum 1)")
      ->transform(bounded_list(StyleField::style_blend_weights));
  cmd->add_option("--size", a->o.size, "Longest side of the output")
      ->transform(bounded(StyleField::size))
      ->capture_default_str();
  cmd->add_option("--style-scale", a->o.style_scale, "Style images sized to size x this")
      ->transform(bounded(StyleField::style_scale))
      ->capture_default_str();
  cmd->add_option("--iters", a->o.iters, "Iterations (per scale)")
      ->transform(bounded(StyleField::iters))
      ->capture_default_str();
  cmd->add_option("--optimizer", a->optimizer, "lbfgs | adam")
      ->check(one_of(parse_style_optimizer))
      ->capture_default_str();
  cmd->add_option("--lr", a->o.lr, "Step size (default or 0: L-BFGS 1, Adam 0.04)")
      ->transform(bounded(StyleField::lr, /*as_float=*/true));
  cmd->add_option("--lbfgs-history", a->o.lbfgs_history, "L-BFGS curvature pairs")
      ->transform(bounded(StyleField::lbfgs_history))
      ->capture_default_str();
  // Their defaults depend on --model-type: whether they were given is read in the callback.
  auto* content_weight =
      cmd->add_option("--content-weight", a->o.content_weight, "Content loss weight (default: torchvision 1, caffe 5)")
          ->transform(bounded(StyleField::content_weight, /*as_float=*/true));
  auto* style_weight =
      cmd->add_option("--style-weight", a->o.style_weight, "Style loss weight (default: torchvision 1e6, caffe 100)")
          ->transform(bounded(StyleField::style_weight, /*as_float=*/true));
  cmd->add_option("--tv-weight", a->o.tv_weight, "Total-variation weight")
      ->transform(bounded(StyleField::tv_weight, /*as_float=*/true))
      ->capture_default_str();
  cmd->add_option("--tv-beta", a->o.tv_beta, "TV exponent: sum of (dx^2 + dy^2)^(beta/2) (Keras example: 1.25)")
      ->transform(bounded(StyleField::tv_beta))
      ->capture_default_str();
  cmd->add_flag("--normalize-gradients", a->o.normalize_gradients,
                "Divide each content/style loss's gradient by its L1 norm (neural-style's -normalize_gradients)");
  cmd->add_flag("--clamp", a->o.clamp, "Clamp the image to [0,1] after every step");
  cmd->add_option("--model-type", a->model_type, "torchvision | caffe (VGG_ILSVRC_19_layers, BGR 0-255 input)")
      ->check(one_of(parse_style_model))
      ->capture_default_str();
  cmd->add_option(
         "--color-transfer", a->color_transfer,
         "none | luminance (keep the content's colours) | linear (recolour the styles to the content's mean and "
         "covariance first) | histogram (linear, then each channel's histogram matched exactly)")
      ->check(one_of(parse_color_transfer))
      ->capture_default_str();
  cmd->add_option("--content-mask", a->content_mask, "Grey mask: the content loss applies where it is white")
      ->check(input_file());
  cmd->add_option("--style-masks", a->style_masks,
                  "Grey masks, one per style image, comma-separated: where each style applies");
  cmd->add_option("--tile", a->o.tile, "Optimise the last scale in tiles of this side (0: whole image)")
      ->transform(bounded(StyleField::tile))
      ->capture_default_str();
  cmd->add_option("--tile-overlap", a->o.tile_overlap, "Overlap of the tiles in px (default: tile / 8)")
      ->transform(bounded(StyleField::tile_overlap));
  cmd->add_option("--content-layers", a->content_layers, "Content layers")->capture_default_str();
  cmd->add_option("--style-layers", a->style_layers, "Style layers")->capture_default_str();
  cmd->add_option("--init", a->init, "content | random | an image file")->capture_default_str();
  cmd->add_flag("--original-colors", a->original_colors, "--color-transfer luminance (neural-style's name)");
  cmd->add_option("--pooling", a->pooling, "max | avg")->check(one_of(parse_style_pooling))->capture_default_str();
  cmd->add_option("--scales", a->scales, "Coarse-to-fine sizes, e.g. 256,512,1024 (overrides --size)")
      ->transform(bounded_list(StyleField::scales));
  cmd->add_option("--print-every", a->o.print_every, "Report losses every N iterations (0: at the end only)")
      ->transform(bounded(StyleField::print_every))
      ->capture_default_str();
  cmd->add_option("--save-every", a->o.save_every, "Save the image every N iterations (0: never)")
      ->transform(bounded(StyleField::save_every))
      ->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Seed of --init random")->transform(seed_number())->capture_default_str();
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N")->check(device_name())->capture_default_str();
  add_compute_options(cmd, a->compute);
  cmd->add_option("--log", a->log, "Write per-iteration losses here (CSV)");
  cmd->callback([a, content_weight, style_weight] {
    a->content_weight_given = content_weight->count() > 0;
    a->style_weight_given = style_weight->count() > 0;
    try {
      run_style(*a);
    } catch (const StyleOptionError& e) {  // the library names the field; the user typed the flag
      CUDL_THROW("{}", e.message(flag_name));
    }
  });
}

}  // namespace cudl::cli
