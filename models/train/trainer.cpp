#include "cudl/models/train/trainer.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/json.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/onnx/onnx.hpp"
#include "cudl/models/train/batch_means.hpp"
#include "cudl/models/train/data_parallel.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"

namespace cudl {

EvalResult evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size) {
  check_labels(model, data, "eval");
  const SplitScores s = ClassificationTask().evaluate(ctx, model, data, batch_size, nullptr);
  EvalResult r;
  r.samples = s.samples;
  r.loss = s.loss;
  r.accuracy = s.accuracy;
  return r;
}

TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& test, const FitOptions& options) {
  return fit(ctx, model, train, Dataset{}, test, options);
}

TrainResult fit(Context& ctx, Sequential& model, const Dataset& train, const Dataset& validation, const Dataset& test,
                const FitOptions& options) {
  ClassificationTask task;
  return cudl::train(ctx, model, task, TrainData{train, validation, test}, options);
}

namespace {

// splitmix64: a small, well-mixed generator whose sequence is the same on every platform (the
// standard library's distributions and std::shuffle are not), so a split depends only on the seed.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Each class's sample indices, in order, shuffled with `seed` (Fisher-Yates).
std::vector<std::vector<std::int64_t>> shuffled_by_class(const Dataset& data, std::uint64_t seed) {
  CUDL_CHECK(data.labels.defined() && data.labels.dtype() == DType::i32 && data.labels.device().is_cpu(),
             "split: the dataset's labels must be i32 on the CPU");
  const std::int32_t* labels = data.labels.data<std::int32_t>();
  std::int32_t top = 0;
  for (std::int64_t i = 0; i < data.size(); ++i) {
    CUDL_CHECK(labels[i] >= 0, "split: label {} at index {} is negative", labels[i], i);
    top = std::max(top, labels[i]);
  }
  std::vector<std::vector<std::int64_t>> by_class(static_cast<std::size_t>(data.size() > 0 ? top + 1 : 0));
  for (std::int64_t i = 0; i < data.size(); ++i) by_class[static_cast<std::size_t>(labels[i])].push_back(i);
  SplitMix rng{seed ^ 0x5EED5EED5EED5EEDull};
  for (auto& idx : by_class)
    for (std::size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.next() % i]);
  return by_class;
}

// The samples at `indices` (sorted here, so a subset keeps the dataset's order) as a new dataset;
// a listed folder stays listed.
Dataset gather(const Dataset& data, std::vector<std::int64_t> indices) {
  std::sort(indices.begin(), indices.end());
  return select_samples(data, indices);
}

}  // namespace

std::pair<Dataset, Dataset> split_validation(const Dataset& data, double fraction, std::uint64_t seed) {
  CUDL_CHECK(std::isfinite(fraction) && fraction >= 0 && fraction < 1,
             "validation split: the fraction must be in [0, 1), got {}", fraction);
  if (fraction == 0) return {data, Dataset{}};
  std::vector<std::int64_t> keep, held_out;
  for (const auto& idx : shuffled_by_class(data, seed)) {
    // Every class keeps at least one training image: a class of one would otherwise move wholly
    // into validation, and the model would be scored on a class it never saw.
    const auto n_val = std::min(static_cast<std::size_t>(std::llround(fraction * static_cast<double>(idx.size()))),
                                idx.empty() ? std::size_t{0} : idx.size() - 1);
    held_out.insert(held_out.end(), idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n_val));
    keep.insert(keep.end(), idx.begin() + static_cast<std::ptrdiff_t>(n_val), idx.end());
  }
  CUDL_CHECK(!keep.empty(), "validation split: {} of {} images would leave none to train on", fraction, data.size());
  return {gather(data, std::move(keep)), gather(data, std::move(held_out))};
}

Dataset stratified_subset(const Dataset& data, std::int64_t count, std::uint64_t seed) {
  CUDL_CHECK(count > 0, "subset: the count must be positive, got {}", count);
  if (count >= data.size()) return data;
  const auto by_class = shuffled_by_class(data, seed);
  // Each class's share rounded down, then the remainder one each to the largest remainders
  // (ties to the lower class): largest-remainder apportionment, so the shares sum to `count`.
  std::vector<std::int64_t> share(by_class.size());
  std::vector<std::pair<double, std::size_t>> remainder;
  std::int64_t given = 0;
  for (std::size_t c = 0; c < by_class.size(); ++c) {
    const double exact =
        static_cast<double>(count) * static_cast<double>(by_class[c].size()) / static_cast<double>(data.size());
    share[c] = static_cast<std::int64_t>(exact);
    given += share[c];
    remainder.emplace_back(-(exact - static_cast<double>(share[c])), c);
  }
  std::sort(remainder.begin(), remainder.end());
  for (std::size_t i = 0; given < count && i < remainder.size(); ++i, ++given) ++share[remainder[i].second];
  std::vector<std::int64_t> picked;
  for (std::size_t c = 0; c < by_class.size(); ++c)
    picked.insert(picked.end(), by_class[c].begin(), by_class[c].begin() + share[c]);
  return gather(data, std::move(picked));
}

EvalReport evaluate_report(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size, int k) {
  check_labels(model, data, "eval");
  CUDL_CHECK(k >= 1, "eval: top-k needs k >= 1, got {}", k);
  Backend& be = ctx.backend();
  const auto classes = static_cast<int>(output_classes(model, data));
  CUDL_CHECK(classes > 0, "eval: the model does not end in [N, K] logits for {} images", data.image_shape());
  EvalReport r;
  r.k = std::min(k, classes);
  r.classes = classes;
  r.confusion.assign(static_cast<std::size_t>(classes),
                     std::vector<std::int64_t>(static_cast<std::size_t>(classes), 0));
  const ConstantHold weights = model.hold_parameters_constant(ctx);  // nothing trains while it runs
  DataLoader loader(data, ctx, batch_size, /*shuffle=*/false, /*seed=*/0);
  loader.start_epoch(0);
  Tensor loss_sum = Tensor::zeros({1}, ctx), batch_loss = Tensor::empty({1}, ctx);
  std::int64_t topk_hits = 0, top1_hits = 0;
  Batch batch;
  while (loader.next(batch)) {
    Tensor logits = model.forward(ctx, batch.images, /*train=*/false);
    Tensor probs = Tensor::empty(logits.shape(), ctx);
    be.softmax_cross_entropy_forward(ctx, logits, batch.labels, probs, batch_loss);
    be.axpy(ctx, static_cast<float>(batch.labels.numel()), batch_loss, loss_sum);
    // Ranked on the device (top_k): only B*k column indices come back, not the [B, K] logits. Its
    // order is argmax_rows' first maximum for the prediction, and a label ranks after every class
    // with a higher logit and every earlier class with an equal one (a NaN logit ranks last).
    Tensor ranked = Tensor::empty({logits.dim(0), r.k}, ctx, DType::i32), no_values;
    be.top_k(ctx, logits, ranked, no_values);
    const std::vector<std::int32_t> top = ranked.to_int_vector(ctx);
    const std::vector<std::int32_t> labels = batch.labels.to_int_vector(ctx);
    for (std::size_t n = 0; n < labels.size(); ++n) {
      const auto first = top.begin() + static_cast<std::ptrdiff_t>(n * static_cast<std::size_t>(r.k));
      const auto label = static_cast<std::size_t>(labels[n]);
      const auto pred = static_cast<std::size_t>(*first);
      ++r.confusion[label][pred];
      top1_hits += pred == label;
      topk_hits += std::find(first, first + r.k, labels[n]) != first + r.k;
    }
    r.samples += static_cast<std::int64_t>(labels.size());
  }
  if (r.samples > 0) {
    r.loss = loss_sum.item(ctx) / static_cast<double>(r.samples);
    r.top1 = static_cast<double>(top1_hits) / static_cast<double>(r.samples);
    r.topk = static_cast<double>(topk_hits) / static_cast<double>(r.samples);
  }
  for (std::size_t c = 0; c < r.confusion.size(); ++c) {
    std::int64_t row = 0;
    for (auto v : r.confusion[c]) row += v;
    r.per_class_accuracy.push_back(row > 0 ? static_cast<double>(r.confusion[c][c]) / static_cast<double>(row)
                                           : std::numeric_limits<double>::quiet_NaN());
  }
  return r;
}

void hold_out_test(DataSplits& data, double fraction, std::uint64_t seed, const std::string& dir) {
  if (!data.flat) {
    CUDL_CHECK(fraction == 0,
               "--test-split: '{}' has its own test split (test/, or the dataset's test files); --test-split is for a "
               "flat DIR/<class>/ folder",
               dir);
    return;
  }
  CUDL_CHECK(fraction > 0 && fraction < 1,
             "'{}' is a flat folder (<class>/ folders, no train/ and test/): give --test-split F (e.g. 0.2) to hold "
             "out a test set",
             dir);
  auto [train, test] = split_validation(data.train, fraction, seed);
  CUDL_CHECK(test.size() > 0 && train.size() > 0,
             "--test-split {}: '{}' holds {} images, too few to split into a training and a test set", fraction, dir,
             data.train.size());
  data.train = std::move(train);
  data.test = std::move(test);
  data.flat = false;
}

std::vector<std::string> class_names(const std::string& kind, const Dataset& data) {
  if (kind == "fashion-mnist")
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  if (kind == "cifar10")
    return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  if (!data.class_names.empty()) return data.class_names;
  std::vector<std::string> names;
  for (int c = 0; c < data.num_classes; ++c) names.push_back(std::to_string(c));
  return names;
}

std::string default_dataset(const std::string& model_name) {
  if (is_model_file(model_name) || is_onnx_file(model_name))
    return default_dataset_for_input(model_spec(model_name).input);
  if (model_name == "mlp" || model_name == "mnist_cnn" || model_name.ends_with("_mnist")) return "mnist";
  if (model_name.ends_with("_cifar")) return "cifar10";
  return "folder";
}

int folder_image_size(const std::string& model_name, int requested) {
  const ModelSpec spec = model_spec(model_name);
  CUDL_CHECK(spec.input.rank() == 3 && spec.input[0] == 3 && spec.input[1] == spec.input[2],
             "--dataset folder: image folders give square RGB images, but model {} takes {}", model_name, spec.input);
  const auto own = static_cast<int>(spec.input[1]);
  if (requested == 0 || requested == own) return own;
  CUDL_CHECK(requested > 0, "--image-size {} must be positive", requested);
  // Whether the layers take the other size: a linear layer after flatten fixes it.
  std::string why;
  try {
    const Shape out = make_model(model_name).output_shape(Shape{1, 3, requested, requested});
    if (spec.num_classes == 0 || (out.rank() == 2 && out[1] == spec.num_classes)) return requested;
    why = fmt::format("it would output {} instead of [1, {}]", out, spec.num_classes);
  } catch (const Error& e) {
    why = e.what();
  }
  CUDL_THROW("--image-size {}: model {} fixes its input at {}x{} ({})", requested, model_name, own, own, why);
}

DataSplits load_dataset(const std::string& kind, const std::string& dir, const std::string& model_name, int image_size,
                        int outputs) {
  const ModelSpec& spec = model_spec(model_name);
  const int classes = outputs > 0 ? outputs : spec.num_classes;
  CUDL_CHECK(image_size == 0 || kind == "folder",
             "--image-size applies to image folders; {} images have their own size", kind);
  DataSplits splits;
  Shape input = spec.input;
  if (kind == "mnist" || kind == "fashion-mnist") {
    splits = load_mnist_dir(dir);
  } else if (kind == "cifar10") {
    splits = load_cifar10_dir(dir);
  } else if (kind == "folder") {
    const int size = folder_image_size(model_name, image_size);
    splits = list_image_folder(dir, size);
    input = Shape{3, size, size};  // the model's, or another its layers take
  } else {
    CUDL_THROW("--dataset: unknown '{}': expected mnist, fashion-mnist, cifar10 or folder", kind);
  }
  const Shape got = splits.train.image_shape();
  CUDL_CHECK(got[1] == input[0] && got[2] == input[1] && got[3] == input[2],
             "model {} takes [{}, {}, {}] images but the {} data in '{}' is {}", model_name, input[0], input[1],
             input[2], kind, dir, got);
  // A model whose output is not class scores [N, K] (an autoencoder's image) has no class count:
  // say what it outputs, not "0 outputs".
  CUDL_CHECK(classes > 0,
             "model {} outputs {} per batch, not class scores [N, K]: it cannot classify the {} data in '{}' (for "
             "reconstruction: --target input)",
             model_name, make_model(model_name).output_shape(Shape{1, input[0], input[1], input[2]}), kind, dir);
  CUDL_CHECK(splits.train.num_classes <= classes, "model {} has {} outputs but the {} data in '{}' has {} classes",
             model_name, classes, kind, dir, splits.train.num_classes);
  return splits;
}

}  // namespace cudl
