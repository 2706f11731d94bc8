#include "tools/cudl/train_extras.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>

#include "cudl/models/checkpoint/saved_run.hpp"
#include "cudl/models/train/classification.hpp"
#include "cudl/models/train/curves.hpp"
#include "cudl/models/train/finetune.hpp"
#include "cudl/models/train/reconstruction.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/preprocess.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/progress.hpp"
#include "tools/cudl/threads.hpp"

namespace cudl::cli {

namespace {

std::string listed(const std::vector<std::string>& items, std::size_t shown = 6) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < shown; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > shown) out += fmt::format(" and {} more", items.size() - shown);
  return out;
}

}  // namespace

void add_train_extra_options(CLI::App* cmd, TrainExtras& e) {
  cmd->add_option("--loss", e.loss, "cross_entropy (with --target labels) | mse | l1 (with --target input)")
      ->transform(named_enum({LossKind::cross_entropy, LossKind::mse, LossKind::l1}, loss_name))
      ->default_str(loss_name(e.loss));
  cmd->add_option("--target", e.target, "labels (classification) | input (reconstruction, e.g. an autoencoder)")
      ->transform(named_enum({Target::labels, Target::input}, target_name))
      ->default_str(target_name(e.target));
  cmd->add_option("--samples", e.samples,
                  "With --target input: write a PNG of test inputs above their reconstructions here after every epoch");
  cmd->add_option("--init-from", e.init_from,
                  "Start from the tensors of this safetensors file whose names and shapes match (lists the others)")
      ->check(input_file());
  cmd->add_option("--num-classes", e.num_classes, "Replace the last linear layer with a new one with N outputs")
      ->transform(whole_number(1, 1 << 20));
  cmd->add_option("--freeze", e.freeze,
                  "Freeze the layers whose names start with PREFIX[,PREFIX...] (e.g. features): no weight gradients, "
                  "the gradient still flows through");
}

void check_train_extras(const TrainExtras& e, const std::string& model, float weight_decay, bool resuming) {
  const bool reconstruct = e.target == Target::input;
  CUDL_CHECK(!reconstruct || e.loss != LossKind::cross_entropy,
             "--target input: reconstruction needs a pixel loss: add --loss mse or --loss l1");
  CUDL_CHECK(reconstruct || e.loss == LossKind::cross_entropy,
             "--loss {}: a pixel loss compares the output with the input: add --target input (or use --loss "
             "cross_entropy for labels)",
             loss_name(e.loss));
  CUDL_CHECK(e.samples.empty() || reconstruct, "--samples: only with --target input (it shows reconstructions)");
  check_writable_output("--samples", e.samples);
  CUDL_CHECK(e.samples.empty() || e.samples.ends_with(".png"), "--samples '{}': must be a .png file", e.samples);
  CUDL_CHECK(e.init_from.empty() || !resuming,
             "--init-from and --resume: a resumed run continues from its own checkpoint; give one of them");
  // With weight decay the optimizer would move frozen weights (decay acts without a gradient).
  CUDL_CHECK(e.freeze.empty() || weight_decay == 0.0f,
             "--freeze with --weight-decay {}: decay would still change the frozen weights; use --weight-decay 0",
             weight_decay);
  // The head and the prefixes are tried on an unbuilt copy of the model (no memory, no data yet).
  if (e.num_classes > 0 || !e.freeze.empty()) {
    Sequential probe = make_model(model);
    if (e.num_classes > 0) (void)replace_classifier(probe, e.num_classes);
    if (!e.freeze.empty()) (void)freeze_layers(probe, split_prefixes("--freeze", e.freeze));
  }
}

// --augment [LIST]: comma-separated crop (pad 4 and crop, CIFAR's recipe), random-resized-crop
// (torchvision's, scale 0.08-1, ratio 3/4-4/3), flip, color-jitter (brightness, contrast and
// saturation by `jitter`); given bare, crop,flip.
Augment parse_augment(const std::string& list, float jitter) {
  Augment a;
  if (list.empty()) return a;
  for (const std::string& item : split_prefixes("--augment", list == "default" ? "crop,flip" : list)) {
    if (item == "crop") {
      a.random_crop = true;
    } else if (item == "random-resized-crop") {
      a.random_resized_crop = true;
    } else if (item == "flip") {
      a.hflip = true;
    } else if (item == "color-jitter") {
      a.brightness = a.contrast = a.saturation = jitter;
    } else {
      CUDL_THROW(
          "--augment: unknown '{}': expected a comma-separated list of crop, random-resized-crop, flip, "
          "color-jitter",
          item);
    }
  }
  CUDL_CHECK(!(a.random_crop && a.random_resized_crop),
             "--augment: crop and random-resized-crop both crop; choose one");
  return a;
}

DataSplits load_train_data(const TrainExtras& e, const std::string& kind, const std::string& dir,
                           const std::string& model, int image_size) {
  if (e.target == Target::input || e.num_classes > 0) {
    CUDL_CHECK(image_size == 0 || image_size == model_spec(model).input[1],
               "--image-size {} with --target input or --num-classes: these train at the model's own size ({})",
               image_size, model_spec(model).input[1]);
    return load_images_for_model(kind, dir, model);
  }
  return load_dataset(kind, dir, model, image_size);
}

std::string prepare_model(const TrainExtras& e, Sequential& model) {
  if (e.num_classes == 0) return {};
  const std::string head = replace_classifier(model, e.num_classes);
  fmt::print("new head: {} with {} outputs\n", head, e.num_classes);
  return head;
}

void finish_model(const TrainExtras& e, Context& ctx, Sequential& model, const std::string& new_head) {
  if (!e.init_from.empty()) {
    std::vector<std::string> fresh;
    if (!new_head.empty()) fresh.push_back(new_head);
    // An ONNX file's initializers, under the layer names its import gives them.
    const InitFromReport r = init_from(resolve_onnx_weights("--init-from", "", e.init_from), ctx, model, fresh);
    fmt::print("--init-from: loaded {} tensor{} from '{}'\n", r.loaded.size(), r.loaded.size() == 1 ? "" : "s",
               e.init_from);
    if (!r.skipped.empty())
      fmt::print("--init-from: skipped {} (kept at their initialisation): {}\n", r.skipped.size(), listed(r.skipped));
    if (!r.unused.empty()) fmt::print("--init-from: unused in the file: {}\n", listed(r.unused));
  }
  if (!e.freeze.empty()) {
    const std::vector<std::string> frozen = freeze_layers(model, split_prefixes("--freeze", e.freeze));
    fmt::print("frozen: {}\n", listed(frozen, 12));
  }
}

void add_metadata(const TrainExtras& e, const std::string& model, const std::string& kind, const DataSplits& data,
                  FitOptions& o) {
  const Shape s = data.train.image_shape();  // the model's input, or the --image-size it also takes
  o.metadata =
      training_metadata(s.rank() == 4 ? Shape{s[1], s[2], s[3]} : model_spec(model).input, data.train.class_names);
  if (e.num_classes > 0) o.metadata["num_classes"] = std::to_string(e.num_classes);
  o.metadata[kDatasetKey] = kind;
  if (is_model_file(model)) {
    std::ifstream in(model, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CUDL_CHECK(in.good() || in.eof(), "--model '{}': cannot read it to keep a copy in the checkpoint", model);
    o.metadata[kModelFileKey] = std::move(text);
  }
}

std::function<void(const TrainProgress&)> epoch_progress_bars(std::function<std::string(const TrainProgress&)> status) {
  auto bar = std::make_shared<std::unique_ptr<ProgressBar>>();
  return [bar, status = std::move(status)](const TrainProgress& p) {
    adapt_threads();  // --threads auto: the team follows other processes' load
    const std::string text = status(p);
    if (!*bar) *bar = std::make_unique<ProgressBar>(fmt::format("epoch {}/{}", p.epoch, p.epochs));
    if (p.epoch_done) {
      (*bar)->finish(text);
      bar->reset();
      return;
    }
    (*bar)->update(p.batch, p.batches, p.elapsed_seconds, text);
  };
}

std::unique_ptr<Task> make_task(const TrainExtras& e) {
  if (e.target != Target::input) return std::make_unique<ClassificationTask>();
  return std::make_unique<ReconstructionTask>(e.loss, e.samples);
}

std::function<void(const TrainProgress&)> reconstruction_progress_bars() {
  return epoch_progress_bars(
      [](const TrainProgress& p) { return fmt::format("loss {:.5f} {:.0f} img/s", p.loss, p.images_per_second); });
}

namespace {

double extra(const EpochMetrics& m, const std::string& key) {
  const auto it = m.extra.find(key);
  return it == m.extra.end() ? 0.0 : it->second;
}

// "l1 0.01234 mse 0.00456 psnr 23.41 dB" of a split ("test", "val") for the run's loss.
std::string split_errors(const EpochMetrics& m, const std::string& split, const std::string& loss) {
  const std::string errors =
      loss == "l1" ? fmt::format("l1 {:.5f} mse {:.5f}", extra(m, split + "_l1"), extra(m, split + "_mse"))
                   : fmt::format("mse {:.5f}", extra(m, split + "_mse"));
  return fmt::format("{} psnr {:.2f} dB", errors, extra(m, split + "_psnr"));
}

}  // namespace

void print_reconstruction_epoch(const EpochMetrics& m, const std::string& loss) {
  const std::string val = m.has_val ? fmt::format("val {} | ", split_errors(m, "val", loss)) : std::string();
  const std::string test = m.has_test ? fmt::format("test {} | ", split_errors(m, "test", loss)) : std::string();
  fmt::print("epoch {:>3}: train {} {:.5f} | {}{}mean image: {} {:.5f} psnr {:.2f} dB | {:.1f} s, {:.0f} img/s\n",
             m.epoch, loss, m.train_loss, val, test, loss, extra(m, "mean_image_" + loss), extra(m, "mean_image_psnr"),
             m.seconds, m.images_per_second);
  std::fflush(stdout);
}

void print_reconstruction_result(const EpochMetrics& m, const std::string& loss, bool best) {
  fmt::print("test {}{}: {:.5f} (the mean image: {:.5f}); psnr {:.2f} dB (the mean image: {:.2f} dB)\n", loss,
             best ? fmt::format(" of the best checkpoint (epoch {})", m.epoch) : std::string(), m.test_loss,
             extra(m, "mean_image_" + loss), extra(m, "test_psnr"), extra(m, "mean_image_psnr"));
}

}  // namespace cudl::cli
