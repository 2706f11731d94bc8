#include "cudl/models/train/reconstruction.hpp"

#include <algorithm>
#include <cmath>

#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/models/train/batch_means.hpp"
#include "cudl/models/train/data_parallel.hpp"
#include "cudl/models/zoo/zoo.hpp"

namespace cudl {

namespace {

void loss_forward(Context& ctx, LossKind kind, const Tensor& y, const Tensor& x, Tensor& loss) {
  if (kind == LossKind::l1)
    ctx.backend().l1_loss_forward(ctx, y, x, loss);
  else
    ctx.backend().mse_loss_forward(ctx, y, x, loss);
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

ReconstructionTask::ReconstructionTask(LossKind loss, std::string samples_path, int samples)
    : loss_(loss), samples_path_(std::move(samples_path)), samples_(samples) {
  CUDL_CHECK(loss != LossKind::cross_entropy, "reconstruction needs a pixel loss, mse or l1 (not cross_entropy)");
  CUDL_CHECK(samples >= 1, "reconstruction: the sample grid needs at least one column, got {}", samples);
}

void ReconstructionTask::check(const Sequential& model, const Dataset& data, std::string_view split,
                               const std::string& model_name) const {
  const Shape s = data.image_shape();
  CUDL_CHECK(s.rank() == 4, "reconstruction: the {} split holds {} images, expected [N, C, H, W]", split, s);
  const Shape in{1, s[1], s[2], s[3]};
  const Shape out = model.output_shape(in);
  CUDL_CHECK(out == in,
             "reconstruction: the model must output its input's shape to reconstruct it, but {} maps [N,{},{},{}] to "
             "{}",
             model_name, s[1], s[2], s[3], out);
}

// The mean-image baseline reads every pixel on the host: listed folders are decoded whole here
// (reconstruction does not stream its baseline).
void ReconstructionTask::prepare(Context&, const Dataset& train, const Dataset& test) {
  test_ = decode_all(test);
  const std::vector<float> mean = mean_image(decode_all(train));
  const std::int64_t per = static_cast<std::int64_t>(mean.size());
  const float* x = test_.images.data<float>();
  double se = 0, ae = 0;
  for (std::int64_t i = 0; i < test_.images.dim(0); ++i)
    for (std::int64_t j = 0; j < per; ++j) {
      const double d = x[i * per + j] - mean[static_cast<std::size_t>(j)];
      se += d * d;
      ae += std::abs(d);
    }
  const double total = static_cast<double>(std::max<std::int64_t>(test_.images.dim(0) * per, 1));
  baseline_ = {{"mean_image_mse", se / total}, {"mean_image_l1", ae / total}, {"mean_image_psnr", psnr(se / total)}};
}

Tensor ReconstructionTask::loss_and_gradient(Context& ctx, const Tensor& y, const Batch& batch, float dloss,
                                             Tensor& loss, Tensor&) {
  loss_forward(ctx, loss_, y, batch.images, loss);
  Tensor dy = Tensor::empty(y.shape(), ctx);
  if (loss_ == LossKind::l1)
    ctx.backend().l1_loss_backward(ctx, y, batch.images, dloss, dy);
  else
    ctx.backend().mse_loss_backward(ctx, y, batch.images, dloss, dy);
  return dy;
}

// Data-parallel runs evaluate each split once in all: each rank its part, the sums combined.
SplitScores ReconstructionTask::evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
                                         Communicator* comm) {
  const Dataset part = local_part(data, comm);
  const BatchMeans e = part.size() > 0 ? pixel_errors(ctx, model, part, batch_size) : BatchMeans{};
  double mse = e.first, l1 = e.second, n = static_cast<double>(e.samples);
  if (comm) {
    const Sums all = combine_sums(comm, {mse * n, l1 * n, n});
    n = all.samples;
    mse = n > 0 ? all.loss / n : 0;
    l1 = n > 0 ? all.correct / n : 0;
  }
  SplitScores r;
  r.samples = static_cast<std::int64_t>(n);
  r.loss = loss_ == LossKind::l1 ? l1 : mse;
  r.extra = {{"mse", mse}, {"l1", l1}, {"psnr", psnr(mse)}};
  return r;
}

void ReconstructionTask::end_epoch(Context& ctx, Sequential& model, EpochMetrics& m) {
  for (const auto& [key, value] : baseline_) m.extra[key] = value;
  if (!samples_path_.empty()) write_reconstruction_samples(samples_path_, ctx, model, test_, samples_);
}

void ReconstructionTask::add_checkpoint_metadata(std::map<std::string, std::string>& extra) const {
  extra["target"] = "input";
  extra["loss"] = loss_name(loss_);
}

}  // namespace cudl
