#include "cudl/models/train/data_parallel.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/train/trainer.hpp"

namespace cudl {

void check_data_parallel_batches(const Communicator* comm, std::int64_t dataset_size, std::int64_t batch_size) {
  if (!comm || comm->size() == 1) return;
  const int n = comm->size();
  CUDL_CHECK(batch_size % n == 0,
             "--batch-size {} is the global batch and must divide by the {} ranks (each takes {} or {} images); "
             "pick a multiple of {}",
             batch_size, n, batch_size / n, batch_size / n + 1, n);
  const std::int64_t last = dataset_size % batch_size;
  CUDL_CHECK(last == 0 || last >= n,
             "the last batch of each epoch holds {} image(s) ({} training images, --batch-size {}), fewer than the {} "
             "ranks: change --batch-size or --subset so every rank gets at least one",
             last, dataset_size, batch_size, n);
}

bool shards_update(const FitOptions& o, const Communicator& comm, Precision precision) {
  return o.shard_update && comm.size() > 1 && comm.can_shard_update() && o.clip_grad_norm <= 0 &&
         precision != Precision::fp16;
}

Batch local_shard(Sequential& model, const Batch& batch, const Communicator* comm) {
  if (!comm || comm->size() == 1) return batch;
  Batch local = batch;
  std::int64_t begin = batch.row_offset, global = batch.global_rows;
  if (batch.labels.dim(0) >= batch.global_rows) {
    // A whole global batch (a loader without shard options): this rank's rows are sliced from it.
    global = batch.labels.dim(0);
    const Shard s = shard_of(global, comm->rank(), comm->size());
    begin = s.begin;
    local.images = batch.images.slice(s.begin, s.end);
    local.labels = batch.labels.slice(s.begin, s.end);
    local.global_rows = global;
    local.row_offset = begin;
  }
  for (const auto& [name, layer] : model.layers())
    if (auto* dropout = dynamic_cast<Dropout*>(layer.get())) dropout->set_global_rows({begin, global});
  return local;
}

float shard_loss_scale(const Communicator* comm, std::int64_t shard_rows, std::int64_t global_rows) {
  if (!comm || comm->size() == 1 || global_rows == 0) return 1.0f;
  return static_cast<float>(static_cast<double>(comm->size()) * static_cast<double>(shard_rows) /
                            static_cast<double>(global_rows));
}

Dataset local_part(const Dataset& data, const Communicator* comm) {
  if (!comm || comm->size() == 1 || data.size() == 0) return data;
  const Shard s = shard_of(data.size(), comm->rank(), comm->size());
  // select_samples takes the rows of a decoded dataset and the paths of a listed folder alike.
  std::vector<std::int64_t> rows(static_cast<std::size_t>(s.end - s.begin));
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = s.begin + static_cast<std::int64_t>(i);
  return select_samples(data, rows);
}

Sums combine_sums(Communicator* comm, Sums local) {
  if (!comm || comm->size() == 1) return local;
  std::vector<double> v = {local.loss, local.correct, local.samples};
  comm->allreduce_sum(v);
  return {v[0], v[1], v[2]};
}

std::uint64_t fingerprint(const void* data, std::size_t bytes, std::uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::uint64_t fingerprint(const std::string& text, std::uint64_t h) {
  h = fingerprint(text.data(), text.size(), h);
  return fingerprint("\0", 1, h);  // "ab","c" and "a","bc" differ
}

namespace {

std::uint64_t bits(double v) {
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

// The labels in full, and the images sampled (at most ~1M values, evenly spread): different data of
// the same size differs there, at a cost of milliseconds.
std::uint64_t data_fingerprint(const Dataset& d) {
  std::uint64_t h = fingerprint(fmt::format("{}", d.image_shape()));
  if (d.labels.defined()) h = fingerprint(d.labels.data<std::int32_t>(), sizeof(std::int32_t) * d.labels.numel(), h);
  for (const auto& name : d.class_names) h = fingerprint(name, h);
  if (!d.listed() && d.images.defined()) {
    const float* x = d.images.data<float>();
    const std::int64_t total = d.images.numel();
    const std::int64_t stride = std::max<std::int64_t>(1, total / (1 << 20));
    for (std::int64_t i = 0; i < total; i += stride) h = fingerprint(&x[i], sizeof(float), h);
  }
  return h;
}

}  // namespace

std::vector<AgreedValue> fit_agreement(const Sequential& model, const FitOptions& o, const Dataset& train,
                                       const Dataset& validation, const Dataset& test, std::int64_t first_epoch,
                                       std::int64_t first_step) {
  std::uint64_t layers = fingerprint(o.model_name);
  for (const auto& [name, layer] : model.layers()) {
    layers = fingerprint(name + ":" + layer->type(), layers);
    for (const Parameter* p : layer->parameters()) layers = fingerprint(fmt::format("{}", p->shape), layers);
  }
  const OptimizerConfig& opt = o.optimizer;
  const Augment& a = o.augment;
  const std::uint64_t optimizer = fingerprint(fmt::format(
      "{} {} {} {} {} {} {} {} {}", static_cast<int>(opt.kind), bits(opt.lr), bits(opt.momentum), opt.nesterov,
      bits(opt.weight_decay), bits(opt.beta1), bits(opt.beta2), bits(opt.eps), static_cast<int>(o.schedule)));
  const std::uint64_t augment =
      fingerprint(fmt::format("{} {} {} {} {} {} {} {} {} {} {}", a.random_crop, a.crop_padding, a.hflip,
                              a.random_resized_crop, bits(a.scale_min), bits(a.scale_max), bits(a.ratio_min),
                              bits(a.ratio_max), bits(a.brightness), bits(a.contrast), bits(a.saturation)));
  const std::uint64_t stopping =
      fingerprint(fmt::format("{} {} {} {} {}", o.early_stopping_patience, o.plateau_patience, bits(o.plateau_factor),
                              bits(o.clip_grad_norm), o.finite_check_every));
  const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  return {{"the model (its layers and parameter shapes)", layers, true},
          {"the parameter count", u(model.parameter_count())},
          {"--batch-size", u(o.batch_size)},
          {"--epochs", u(o.epochs)},
          {"--max-steps", u(o.max_steps)},
          {"--accumulate-steps", u(o.accumulate_steps)},
          {"--bucket-mb (the all-reduces' sizes)", bits(o.bucket_mb), true},
          {"--seed", o.seed},
          {"the optimizer and schedule (--optimizer, --lr, --momentum, --weight-decay, --schedule)", optimizer, true},
          {"--augment", augment, true},
          {"the stopping and clipping options", stopping, true},
          {"the training images", u(train.size())},
          {"the validation images", u(validation.size())},
          {"the test images", u(test.size())},
          {"the training data", data_fingerprint(train), true},
          {"the validation data", data_fingerprint(validation), true},
          {"the test data", data_fingerprint(test), true},
          {"the epoch the run starts at (--resume)", u(first_epoch)},
          {"the step the run starts at (--resume)", u(first_step)}};
}

void check_ranks_agree(Communicator* comm, const std::vector<AgreedValue>& values) {
  if (!comm || comm->size() == 1) return;
  const auto n = values.size();
  const auto ranks = static_cast<std::size_t>(comm->size());
  const auto me = static_cast<std::size_t>(comm->rank());
  // Slot (rank, value) holds the value in two 32-bit halves (exact in a double); every other rank
  // adds zeros there, so the sum is everyone's values: an all-gather over the one host collective.
  // Its length, 2 * values * ranks, is the same on every rank whatever the values are.
  std::vector<double> all(2 * n * ranks, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    all[2 * (me * n + i)] = static_cast<double>(values[i].value >> 32);
    all[2 * (me * n + i) + 1] = static_cast<double>(values[i].value & 0xffffffffu);
  }
  comm->allreduce_sum(all);
  const auto value_of = [&](std::size_t rank, std::size_t i) {
    return (static_cast<std::uint64_t>(all[2 * (rank * n + i)]) << 32) |
           static_cast<std::uint64_t>(all[2 * (rank * n + i) + 1]);
  };
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t first = value_of(0, i);
    for (std::size_t r = 1; r < ranks; ++r) {
      const std::uint64_t other = value_of(r, i);
      if (other == first) continue;
      const auto show = [&](std::uint64_t v) {
        return values[i].hashed ? fmt::format("fingerprint {:016x}", v) : fmt::format("{}", v);
      };
      CUDL_THROW(
          "ranks disagree on {}: rank 0 has {}, rank {} has {}; every rank must run the same model, options, data "
          "and seed",
          values[i].name, show(first), r, show(other));
    }
  }
}

}  // namespace cudl
