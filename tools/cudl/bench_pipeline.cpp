// `cudl bench --pipeline DIR`: images per second of the image-folder pipeline alone (listing,
// decoding, resizing, augmenting on the loader's workers; no model), of the model's training step
// alone on a synthetic batch, and of the two together, on the CPU; says which one limits.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/train_extras.hpp"

namespace cudl::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string line;
  std::getline(in, line);
  return line.empty() ? "unknown" : line;
}

// One training step (forward, loss, backward, Adam) of `model` on `x`, `labels`.
void train_step(Context& ctx, Sequential& model, Optimizer& optimizer, const Tensor& x, const Tensor& labels) {
  model.zero_grad(ctx);
  Tensor logits = model.forward(ctx, x, true);
  Tensor probs = Tensor::empty(logits.shape(), ctx), dlogits = Tensor::empty(logits.shape(), ctx);
  Tensor loss = Tensor::empty({1}, ctx);
  ctx.backend().softmax_cross_entropy_forward(ctx, logits, labels, probs, loss);
  ctx.backend().softmax_cross_entropy_backward(ctx, probs, labels, 1.0f, dlogits);
  model.backward(ctx, dlogits);
  optimizer.step(ctx, 1e-4f);
}

struct Rate {
  double images_per_second = 0;
  std::int64_t images = 0;
};

// `batches` batches of the training split's first epoch through the loader, each handed to
// `step` (nothing for the pipeline alone).
Rate run_loader(Context& ctx, const Dataset& data, LoaderOptions lo, std::int64_t batches,
                const std::function<void(const Batch&)>& step) {
  DataLoader loader(data, ctx, lo);
  const std::int64_t n = std::min(batches, loader.batches_per_epoch());
  const auto start = Clock::now();
  loader.start_epoch(0);
  Batch b;
  Rate r;
  for (std::int64_t i = 0; i < n && loader.next(b); ++i) {
    step(b);
    r.images += b.labels.numel();
  }
  ctx.synchronize();
  r.images_per_second = static_cast<double>(r.images) / std::max(seconds_since(start), 1e-9);
  return r;
}

}  // namespace

void add_pipeline_bench_options(CLI::App* cmd, PipelineBenchArgs& a) {
  cmd->add_option("--pipeline", a.dir,
                  "Time the image pipeline alone on this folder (train/<class>/...) against --models' train step on "
                  "the CPU, and both together");
  cmd->add_option("--workers", a.workers, "With --pipeline: loader threads to time besides 1 (0: the default)")
      ->transform(whole_number(0, 256));
  cmd->add_option("--augment", a.augment, "With --pipeline: the augmentations (as train's --augment; none: none)")
      ->capture_default_str();
  cmd->add_option("--image-size", a.image_size, "With --pipeline: as train's --image-size")
      ->transform(whole_number(1, 8192));
  cmd->add_option("--batches", a.batches, "With --pipeline: batches timed through the pipeline alone")
      ->transform(whole_number(1, 100000))
      ->capture_default_str();
  cmd->add_option("--steps", a.steps, "With --pipeline: train steps timed, alone and fed by the pipeline")
      ->transform(whole_number(1, 100000))
      ->capture_default_str();
}

void run_pipeline_bench(const PipelineBenchArgs& a, const std::string& model_name, std::int64_t batch_size) {
  const int size = folder_image_size(model_name, a.image_size);
  const DataSplits data = list_image_folder(a.dir, size);
  const Augment augment = parse_augment(a.augment == "none" ? "" : a.augment, 0.4f);
  Context ctx(Device::cpu());
  const int workers = a.workers > 0 ? a.workers : default_loader_workers();
  fmt::print("pipeline bench: {} ({} train images, {}x{}), model {}, batch {}, augment {}, on {} hardware threads\n",
             a.dir, data.train.size(), size, size, model_name, batch_size, a.augment,
             std::thread::hardware_concurrency());
  fmt::print("load average before: {}\n", load_average());
  LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = true;
  lo.seed = 1;
  lo.augment = augment;

  std::vector<int> counts{1};
  if (workers != 1) counts.push_back(workers);
  std::vector<std::pair<int, double>> pipeline;
  for (int w : counts) {
    lo.workers = w;
    const Rate r = run_loader(ctx, data.train, lo, a.batches, [](const Batch&) {});
    pipeline.emplace_back(w, r.images_per_second);
    fmt::print("pipeline alone, {} worker(s): {:>9.1f} img/s ({} images)\n", w, r.images_per_second, r.images);
  }

  Sequential model = make_model(model_name);
  model.build(ctx, 1);
  Optimizer optimizer(ctx, model, OptimizerConfig{});
  const ModelSpec spec = model_spec(model_name);
  const Shape input{batch_size, 3, size, size};
  Tensor x = Tensor::full(input, 0.5f, ctx);
  std::vector<std::int32_t> host_labels(static_cast<std::size_t>(batch_size));
  const auto classes = static_cast<std::size_t>(std::max(1, spec.num_classes));
  for (std::size_t i = 0; i < host_labels.size(); ++i) host_labels[i] = static_cast<std::int32_t>(i % classes);
  Tensor labels = Tensor::from_host(std::span<const std::int32_t>(host_labels), {batch_size}, ctx);
  train_step(ctx, model, optimizer, x, labels);  // warm-up
  const std::int64_t steps = a.steps;
  const auto start = Clock::now();
  for (std::int64_t i = 0; i < steps; ++i) train_step(ctx, model, optimizer, x, labels);
  const double step_rate = static_cast<double>(steps * batch_size) / seconds_since(start);
  fmt::print("train step alone (synthetic batch): {:>9.1f} img/s ({} steps)\n", step_rate, steps);

  lo.workers = workers;
  const Rate both = run_loader(ctx, data.train, lo, a.steps,
                               [&](const Batch& b) { train_step(ctx, model, optimizer, b.images, b.labels); });
  fmt::print("pipeline ({} workers) feeding the train step: {:>9.1f} img/s ({} images)\n", workers,
             both.images_per_second, both.images);
  const double best_pipeline = pipeline.back().second;
  fmt::print("limit: the {} ({:.1f} img/s pipeline with {} workers vs {:.1f} img/s train step)\n",
             best_pipeline < step_rate ? "pipeline" : "train step", best_pipeline, workers, step_rate);
  fmt::print("load average after: {}\n", load_average());
}

}  // namespace cudl::cli
