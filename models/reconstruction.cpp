#include "cudl/models/reconstruction.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/models/batch_means.hpp"
#include "cudl/models/checkpoint.hpp"
#include "cudl/models/zoo.hpp"

namespace cudl {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void loss_forward(Context& ctx, LossKind kind, const Tensor& y, const Tensor& x, Tensor& loss) {
  if (kind == LossKind::l1)
    ctx.backend().l1_loss_forward(ctx, y, x, loss);
  else
    ctx.backend().mse_loss_forward(ctx, y, x, loss);
}

nlohmann::json to_json(const ReconstructionMetrics& m) {
  nlohmann::json j = {{"epoch", m.epoch},
                      {"train_loss", m.train_loss},
                      {"test_loss", m.test_loss},
                      {"test_mse", m.test_mse},
                      {"test_l1", m.test_l1},
                      {"test_psnr", m.test_psnr},
                      {"mean_image_mse", m.mean_image_mse},
                      {"mean_image_l1", m.mean_image_l1},
                      {"mean_image_psnr", m.mean_image_psnr},
                      {"seconds", m.seconds},
                      {"images_per_second", m.images_per_second}};
  if (m.has_val) {
    j["val_loss"] = m.val_loss;
    j["val_psnr"] = m.val_psnr;
  }
  return j;
}

}  // namespace

LossKind parse_loss(const std::string& name) {
  if (name == "cross_entropy") return LossKind::cross_entropy;
  if (name == "mse") return LossKind::mse;
  if (name == "l1") return LossKind::l1;
  CUDL_THROW("--loss: unknown '{}': expected cross_entropy, mse or l1", name);
}

std::string loss_name(LossKind kind) {
  switch (kind) {
    case LossKind::cross_entropy:
      return "cross_entropy";
    case LossKind::mse:
      return "mse";
    case LossKind::l1:
      return "l1";
  }
  return "?";
}

double psnr(double mse) { return mse > 0 ? 10.0 * std::log10(1.0 / mse) : INFINITY; }

DataSplits load_images_for_model(const std::string& kind, const std::string& dir, const std::string& model_name) {
  const ModelSpec spec = model_spec(model_name);
  DataSplits splits;
  if (kind == "mnist" || kind == "fashion-mnist") {
    splits = load_mnist_dir(dir);
  } else if (kind == "cifar10") {
    splits = load_cifar10_dir(dir);
  } else if (kind == "folder") {
    CUDL_CHECK(spec.input[1] == spec.input[2] && spec.input[0] == 3,
               "--dataset folder: image folders are loaded as square RGB images, but model {} takes {}", model_name,
               spec.input);
    // Listed; reconstruction decodes it whole (fit_reconstruction), fine-tuning streams it.
    splits = list_image_folder(dir, static_cast<int>(spec.input[1]));
  } else {
    CUDL_THROW("--dataset: unknown '{}': expected mnist, fashion-mnist, cifar10 or folder", kind);
  }
  const Shape got = splits.train.image_shape();
  CUDL_CHECK(got[1] == spec.input[0] && got[2] == spec.input[1] && got[3] == spec.input[2],
             "model {} takes [{}, {}, {}] images but the {} data in '{}' is {}", model_name, spec.input[0],
             spec.input[1], spec.input[2], kind, dir, got);
  return splits;
}

std::vector<float> mean_image(const Dataset& data) {
  const Shape& s = data.images.shape();
  const std::int64_t n = s[0], per = s[1] * s[2] * s[3];
  std::vector<double> sum(static_cast<std::size_t>(per), 0.0);
  const float* x = data.images.data<float>();
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < per; ++j) sum[static_cast<std::size_t>(j)] += x[i * per + j];
  std::vector<float> out(static_cast<std::size_t>(per));
  for (std::size_t j = 0; j < out.size(); ++j)
    out[j] = static_cast<float>(sum[j] / static_cast<double>(std::max<std::int64_t>(n, 1)));
  return out;
}

namespace {

// The model's mean squared and absolute pixel errors on `data` (first: MSE, second: L1).
BatchMeans pixel_errors(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size) {
  return batch_means(ctx, model, data, batch_size, [&](const Tensor& y, const Batch& batch, Tensor& mse, Tensor& l1) {
    ctx.backend().mse_loss_forward(ctx, y, batch.images, mse);
    ctx.backend().l1_loss_forward(ctx, y, batch.images, l1);
  });
}

}  // namespace

ReconstructionMetrics evaluate_reconstruction(Context& ctx, Sequential& model, const Dataset& data,
                                              std::int64_t batch_size, LossKind loss, const std::vector<float>& mean) {
  const BatchMeans means = pixel_errors(ctx, model, data, batch_size);
  ReconstructionMetrics m;
  m.test_mse = means.first;
  m.test_l1 = means.second;
  m.test_loss = loss == LossKind::l1 ? m.test_l1 : m.test_mse;
  m.test_psnr = psnr(m.test_mse);
  // The mean training image as every prediction, on the host (the data is there).
  const std::int64_t per = static_cast<std::int64_t>(mean.size());
  const float* x = data.images.data<float>();
  double se = 0, ae = 0;
  for (std::int64_t i = 0; i < data.images.dim(0); ++i)
    for (std::int64_t j = 0; j < per; ++j) {
      const double d = x[i * per + j] - mean[static_cast<std::size_t>(j)];
      se += d * d;
      ae += std::abs(d);
    }
  const double total = static_cast<double>(std::max<std::int64_t>(data.images.dim(0) * per, 1));
  m.mean_image_mse = se / total;
  m.mean_image_l1 = ae / total;
  m.mean_image_psnr = psnr(m.mean_image_mse);
  return m;
}

void write_reconstruction_samples(const std::string& path, Context& ctx, Sequential& model, const Dataset& data,
                                  int count) {
  const Shape& s = data.images.shape();
  const int n = static_cast<int>(std::min<std::int64_t>(count, s[0]));
  const int c = static_cast<int>(s[1]), h = static_cast<int>(s[2]), w = static_cast<int>(s[3]);
  CUDL_CHECK(n > 0 && (c == 1 || c == 3), "--samples: need 1- or 3-channel images, got {}", s);
  Tensor x = Tensor::from_host(
      std::span<const float>(data.images.data<float>(), static_cast<std::size_t>(n) * c * h * w), {n, c, h, w}, ctx);
  const std::vector<float> in = x.to_vector(ctx);
  const std::vector<float> out = model.forward(ctx, x, /*train=*/false).to_vector(ctx);
  const int zoom = std::max(1, 64 / h);
  constexpr int kGap = 2;  // white lines between cells
  const int cell_w = w * zoom, cell_h = h * zoom;
  Image grid(n * (cell_w + kGap) - kGap, 2 * cell_h + kGap, c);
  std::fill(grid.pixels.begin(), grid.pixels.end(), 1.0f);
  for (int row = 0; row < 2; ++row) {
    const std::vector<float>& src = row == 0 ? in : out;
    for (int i = 0; i < n; ++i)
      for (int y = 0; y < cell_h; ++y)
        for (int xx = 0; xx < cell_w; ++xx)
          for (int ch = 0; ch < c; ++ch) {
            const std::size_t at = ((static_cast<std::size_t>(i) * c + ch) * h + y / zoom) * w + xx / zoom;
            grid.at(row * (cell_h + kGap) + y, i * (cell_w + kGap) + xx, ch) = std::clamp(src[at], 0.0f, 1.0f);
          }
  }
  write_image(path, grid);
}

std::vector<ReconstructionMetrics> fit_reconstruction(Context& ctx, Sequential& model, const Dataset& train,
                                                      const Dataset& test, const ReconstructionOptions& options) {
  return fit_reconstruction(ctx, model, train, Dataset{}, test, options);
}

std::vector<ReconstructionMetrics> fit_reconstruction(Context& ctx, Sequential& model, const Dataset& train_data,
                                                      const Dataset& validation, const Dataset& test_data,
                                                      const ReconstructionOptions& options) {
  // The mean-image baseline and the sample grid read every pixel on the host: a listed folder is
  // decoded whole here (reconstruction does not stream yet).
  const Dataset train = decode_all(train_data), test = decode_all(test_data);
  const FitOptions& fo = options.fit;
  CUDL_CHECK(model.built(), "fit_reconstruction: build() the model first");
  CUDL_CHECK(options.loss != LossKind::cross_entropy,
             "--target input: reconstruction needs a pixel loss, --loss mse or --loss l1 (not cross_entropy)");
  CUDL_CHECK(fo.epochs > 0 && fo.batch_size > 0, "fit_reconstruction: epochs ({}) and batch size ({}) must be positive",
             fo.epochs, fo.batch_size);
  const Shape& s = train.images.shape();
  const Shape in{1, s[1], s[2], s[3]};
  const Shape out = model.output_shape(in);
  CUDL_CHECK(out == in,
             "--target input: the model must output its input's shape to reconstruct it, but {} maps [N,{},{},{}] to "
             "{}",
             fo.model_name, s[1], s[2], s[3], out);
  Backend& be = ctx.backend();
  Optimizer optimizer(ctx, model, fo.optimizer);
  std::vector<ReconstructionMetrics> history;
  std::int64_t first_epoch = 0;
  if (!fo.resume_path.empty()) {
    CheckpointInfo info = load_checkpoint(fo.resume_path, ctx, model, &optimizer);
    CUDL_CHECK(info.model == fo.model_name, "--resume: '{}' holds a {} checkpoint, but the model is {}", fo.resume_path,
               info.model, fo.model_name);
    optimizer.clear_frozen_state(ctx);  // as fit: restored moments must not move frozen weights
    first_epoch = info.epoch;
  }
  const std::vector<float> mean = mean_image(train);
  DataLoader loader(train, ctx, training_loader_options(fo));
  const std::int64_t batches = loader.batches_per_epoch();
  const std::int64_t total_steps = fo.epochs * batches;
  Tensor loss_sum = Tensor::zeros({1}, ctx), batch_loss = Tensor::empty({1}, ctx);
  constexpr std::int64_t kProgressEvery = 20;
  std::optional<LossScaler> scaler;  // fp16: as in fit (layers/loss_scaler.hpp)
  if (ctx.precision() == Precision::fp16) scaler.emplace(ctx, fo.loss_scaling);
  for (std::int64_t epoch = first_epoch; epoch < fo.epochs; ++epoch) {
    loader.start_epoch(epoch);
    be.fill(ctx, loss_sum, 0.0f);
    std::int64_t samples = 0, done = 0;
    const auto start = Clock::now();
    Batch batch;
    while (loader.next(batch)) {
      model.zero_grad(ctx);
      Tensor y = model.forward(ctx, batch.images, /*train=*/true);
      loss_forward(ctx, options.loss, y, batch.images, batch_loss);
      const auto n = static_cast<float>(batch.images.dim(0));
      be.axpy(ctx, n, batch_loss, loss_sum);
      Tensor dy = Tensor::empty(y.shape(), ctx);
      const float dloss = scaler ? scaler->scale() : 1.0f;
      if (options.loss == LossKind::l1)
        be.l1_loss_backward(ctx, y, batch.images, dloss, dy);
      else
        be.mse_loss_backward(ctx, y, batch.images, dloss, dy);
      model.backward(ctx, dy);
      if (!scaler || scaler->unscale(ctx, model.gradient_block()))
        optimizer.step(ctx, learning_rate(fo.schedule, fo.optimizer.lr, optimizer.steps(), total_steps));
      samples += batch.images.dim(0);
      ++done;
      if (fo.on_progress && (done % kProgressEvery == 0 || done == batches)) {
        TrainProgress p;
        p.epoch = epoch + 1;
        p.epochs = fo.epochs;
        p.batch = done;
        p.batches = batches;
        p.loss = loss_sum.item(ctx) / static_cast<double>(samples);
        p.elapsed_seconds = seconds_since(start);
        p.images_per_second = static_cast<double>(samples) / std::max(p.elapsed_seconds, 1e-9);
        fo.on_progress(p);
      }
    }
    ctx.synchronize();
    const double seconds = seconds_since(start);
    ReconstructionMetrics m = evaluate_reconstruction(ctx, model, test, fo.batch_size, options.loss, mean);
    m.epoch = epoch + 1;
    m.seconds = seconds;
    m.images_per_second = static_cast<double>(samples) / std::max(seconds, 1e-9);
    m.train_loss = loss_sum.item(ctx) / static_cast<double>(std::max<std::int64_t>(samples, 1));
    if (validation.size() > 0) {
      const BatchMeans v = pixel_errors(ctx, model, validation, fo.batch_size);
      m.has_val = true;
      m.val_loss = options.loss == LossKind::l1 ? v.second : v.first;
      m.val_psnr = psnr(v.first);
    }
    CUDL_CHECK(
        std::isfinite(m.train_loss) && std::isfinite(m.test_loss),
        "fit: epoch {} ended with train loss {:.4g} and test loss {:.4g}: training diverged (a learning rate too "
        "high?); {}",
        m.epoch, m.train_loss, m.test_loss,
        fo.save_path.empty() ? std::string("stopped") : fmt::format("stopped before saving it to '{}'", fo.save_path));
    history.push_back(m);
    if (fo.on_progress) {
      TrainProgress p;
      p.epoch = epoch + 1;
      p.epochs = fo.epochs;
      p.batch = p.batches = batches;
      p.loss = m.train_loss;
      p.elapsed_seconds = m.seconds;
      p.images_per_second = m.images_per_second;
      p.epoch_done = true;
      fo.on_progress(p);
    }
    if (options.on_epoch) options.on_epoch(m);
    if (!options.samples_path.empty())
      write_reconstruction_samples(options.samples_path, ctx, model, test, options.samples);
    if (!fo.save_path.empty()) {
      CheckpointInfo info;
      info.model = fo.model_name;
      info.epoch = epoch + 1;
      info.step = optimizer.steps();
      info.seed = fo.seed;
      info.extra = fo.metadata;
      info.extra["target"] = "input";
      info.extra["loss"] = loss_name(options.loss);
      save_checkpoint(fo.save_path, ctx, model, &optimizer, info);
    }
    if (!fo.metrics_path.empty()) {
      nlohmann::json epochs = nlohmann::json::array();
      for (const auto& e : history) epochs.push_back(to_json(e));
      nlohmann::json j = {
          {"model", fo.model_name}, {"device", ctx.device().str()},    {"params", model.parameter_count()},
          {"target", "input"},      {"loss", loss_name(options.loss)}, {"epochs", epochs}};
      write_file_atomically(fo.metrics_path, j.dump(2) + "\n");
    }
  }
  return history;
}

}  // namespace cudl
