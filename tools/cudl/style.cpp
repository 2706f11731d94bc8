// `cudl style`: neural style transfer on a photo (models/style_transfer.hpp), with
// jcjohnson/neural-style's option names.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <sstream>

#include "engine/context.hpp"
#include "engine/error.hpp"
#include "engine/io/atomic_file.hpp"
#include "engine/io/image.hpp"
#include "models/style_transfer.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/progress.hpp"

namespace cudl::cli {

namespace {

struct StyleArgs {
  std::string content, style, output, weights, device = "auto", log;
  std::string blend_weights, content_layers = "relu4_2", style_layers = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1";
  std::string scales;
  ComputeOptions compute;
  StyleOptions o;
};

std::vector<std::string> split(const std::string& csv) {
  std::vector<std::string> out;
  std::stringstream ss(csv);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

const char* kWeightsHelp =
    "style: --weights is required: a VGG19 safetensors file with torchvision names (features.N.weight/bias). "
    "Convert torchvision's vgg19 with tools/convert_torchvision_vgg19.py, or download timm's vgg19.tv_in1k "
    "model.safetensors; or pass --weights random:SEED for a smoke test with seeded random weights";

std::string with_suffix(const std::string& path, const std::string& suffix) {
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + suffix + p.extension().string())).string();
}

void run_style(StyleArgs a) {
  CUDL_CHECK(!a.weights.empty(), "{}", kWeightsHelp);
  StyleOptions o = a.o;
  o.content_layers = parse_style_layers(a.content_layers);
  o.style_layers = parse_style_layers(a.style_layers);
  if (!a.blend_weights.empty())
    o.style_blend_weights = parse_number_list("--style-blend-weights", a.blend_weights, at_least(0));
  if (!a.scales.empty())
    for (std::int64_t s : parse_whole_number_list("--scales", a.scales, 16, kMaxStyleSide))
      o.scales.push_back(static_cast<int>(s));
  check_style_options(o);
  const std::vector<std::string> style_paths = split(a.style);
  CUDL_CHECK(!style_paths.empty(), "style: --style needs at least one image");
  CUDL_CHECK(o.style_blend_weights.empty() || o.style_blend_weights.size() == style_paths.size(),
             "style: {} --style-blend-weights for {} style images", o.style_blend_weights.size(), style_paths.size());
  {
    const std::string ext = std::filesystem::path(a.output).extension().string();
    CUDL_CHECK(ext == ".png" || ext == ".PNG" || ext == ".jpg" || ext == ".jpeg" || ext == ".JPG" || ext == ".JPEG",
               "style: --output must end in .png, .jpg or .jpeg, got '{}'", a.output);
  }
  check_writable_output("--output", a.output);
  check_writable_output("--log", a.log);
  // Every input is read and checked before any work (and before anything is written). Only the
  // largest scale's sizes are needed: a large JPEG is decoded at a reduced scale that keeps them.
  const auto sizes = o.scales.empty() ? std::vector<int>{o.size} : o.scales;
  const int largest = *std::max_element(sizes.begin(), sizes.end());
  ImageReadOptions content_read, style_read;
  content_read.longest_side = largest;
  style_read.longest_side = style_image_size(largest, o);
  const Image content = read_image(a.content, content_read);
  std::vector<Image> styles;
  for (const auto& p : style_paths) styles.push_back(read_image(p, style_read));
  if (o.init != "content" && o.init != "random") (void)read_image(o.init);

  Context ctx(Device::parse(a.device));
  apply_compute_options(ctx, a.compute);
  Sequential net = make_style_network(ctx, o, a.weights);
  const auto [w, h] = fit_longest_side(content.width, content.height, sizes.back());
  check_style_sizes(net, o, content, styles);  // every scale, before any work
  check_style_memory(ctx, net, o, h, w);       // the largest scale, before spending time on the smaller ones
  fmt::print("style transfer on {}: {}x{} output, {} x {} iterations, {}\n", ctx.device(), w, h, sizes.size(), o.iters,
             o.optimizer);

  std::unique_ptr<ProgressBar> bar;
  int bar_scale = -1;
  StyleCallbacks cb;
  cb.on_progress = [&](const StyleProgress& p) {
    if (p.scale_index != bar_scale) {
      if (bar) bar->finish("");
      bar = std::make_unique<ProgressBar>(fmt::format("style {}px", p.size));
      bar_scale = p.scale_index;
    }
    const std::string status =
        fmt::format("loss {:.4g} (content {:.4g} style {:.4g} tv {:.4g}) {:.1f} ms/it", p.losses.total,
                    p.losses.content, p.losses.style, p.losses.tv, p.ms_per_iteration);
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
  StyleResult r = run_style_transfer(ctx, net, content, styles, o, cb);
  // A NaN or inf loss leaves a black or garbage image: a failure, not a result.
  const StyleLosses& last = r.log.back().back();
  CUDL_CHECK(std::isfinite(last.total),
             "style: the loss ended as {:.4g} (content {:.4g}, style {:.4g}, tv {:.4g}): the weights or the loss "
             "weights are unusable; "
             "no image written",
             last.total, last.content, last.style, last.tv);
  if (!a.log.empty()) {
    std::string csv = "iteration,total,content,style,tv\n";
    for (const auto& rows : r.log)
      for (std::size_t k = 0; k < rows.size(); ++k)
        csv += fmt::format("{},{:.9g},{:.9g},{:.9g},{:.9g}\n", k, rows[k].total, rows[k].content, rows[k].style,
                           rows[k].tv);
    write_file_atomically(a.log, csv);
  }
  write_image(a.output, r.image);
  fmt::print("wrote {} ({}x{}); {:.1f} ms/iteration; memory pool peak {:.1f} MiB\n", a.output, r.image.width,
             r.image.height, r.ms_per_iteration, static_cast<double>(r.pool_peak_bytes) / (1 << 20));
}

}  // namespace

void add_style_command(CLI::App& app) {
  auto a = std::make_shared<StyleArgs>();
  auto* cmd = app.add_subcommand("style", "Neural style transfer (Gatys et al., as jcjohnson/neural-style) on VGG19");
  cmd->add_option("--content", a->content, "Content image (PNG or JPEG)")->required();
  cmd->add_option("--style", a->style, "Style image(s), comma-separated")->required();
  cmd->add_option("--output", a->output, "Output image (.png or .jpg)")->required();
  cmd->add_option("--weights", a->weights, "VGG19 safetensors (torchvision names) or random:SEED")
      ->check(weights_source());
  cmd->add_option("--style-blend-weights", a->blend_weights, "Weights of the style images (normalised to sum 1)")
      ->transform(number_list(at_least(0)));
  cmd->add_option("--size", a->o.size, "Longest side of the output")
      ->transform(whole_number(16, kMaxStyleSide))
      ->capture_default_str();
  cmd->add_option("--style-scale", a->o.style_scale, "Style images sized to size x this")
      ->transform(finite_double({0, 100, /*lo_open=*/true}))
      ->capture_default_str();
  cmd->add_option("--iters", a->o.iters, "Iterations (per scale)")
      ->transform(whole_number(0, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--optimizer", a->o.optimizer, "lbfgs | adam")
      ->check(CLI::IsMember({"lbfgs", "adam"}))
      ->capture_default_str();
  cmd->add_option("--lr", a->o.lr, "Step size (default: L-BFGS 1, Adam 0.04)")
      ->transform(finite_float(greater_than(0)));
  cmd->add_option("--lbfgs-history", a->o.lbfgs_history, "L-BFGS curvature pairs")
      ->transform(whole_number(1, 10000))
      ->capture_default_str();
  // The loss weights scale float losses and gradients: finite floats >= 0.
  cmd->add_option("--content-weight", a->o.content_weight, "Content loss weight")
      ->transform(finite_float(at_least(0)))
      ->capture_default_str();
  cmd->add_option("--style-weight", a->o.style_weight, "Style loss weight")
      ->transform(finite_float(at_least(0)))
      ->capture_default_str();
  cmd->add_option("--tv-weight", a->o.tv_weight, "Total-variation weight")
      ->transform(finite_float(at_least(0)))
      ->capture_default_str();
  cmd->add_option("--content-layers", a->content_layers, "Content layers")->capture_default_str();
  cmd->add_option("--style-layers", a->style_layers, "Style layers")->capture_default_str();
  cmd->add_option("--init", a->o.init, "content | random | an image file")->capture_default_str();
  cmd->add_flag("--original-colors", a->o.original_colors, "Keep the content's colours (luminance-only transfer)");
  cmd->add_option("--pooling", a->o.pooling, "max | avg")->check(CLI::IsMember({"max", "avg"}))->capture_default_str();
  cmd->add_option("--scales", a->scales, "Coarse-to-fine sizes, e.g. 256,512,1024 (overrides --size)")
      ->transform(whole_number_list(16, kMaxStyleSide));
  cmd->add_option("--print-every", a->o.print_every, "Report losses every N iterations (0: at the end only)")
      ->transform(whole_number(0, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--save-every", a->o.save_every, "Save the image every N iterations (0: never)")
      ->transform(whole_number(0, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Seed of --init random")->transform(seed_number())->capture_default_str();
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N")->check(device_name())->capture_default_str();
  add_compute_options(cmd, a->compute);
  cmd->add_option("--log", a->log, "Write per-iteration losses here (CSV)");
  cmd->callback([a] { run_style(*a); });
}

}  // namespace cudl::cli
