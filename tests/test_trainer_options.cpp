// The training options of issue 9 at the library level: the stratified hold-out and subset,
// gradient-norm clipping, the non-finite guard (exact step, last good checkpoint), --max-steps,
// the best epoch, early stopping and reduce-on-plateau, and the evaluation report.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "cudl/engine/device.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/train/trainer.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

std::vector<Device> devices() {
  std::vector<Device> out{Device::cpu()};
  if (cuda_compiled() && cuda_device_count() > 0) out.push_back(Device::cuda(0));
  return out;
}

// [1,2,2] images from explicit pixels and labels, on the host.
Dataset make_dataset(const std::vector<float>& pixels, const std::vector<std::int32_t>& labels, int classes) {
  Context cpu{Device::cpu()};
  const auto n = static_cast<std::int64_t>(labels.size());
  Dataset d;
  d.images = Tensor::from_host(pixels, {n, 1, 2, 2}, cpu);
  d.labels = Tensor::from_host(std::span<const std::int32_t>(labels), {n}, cpu);
  d.num_classes = classes;
  d.name = "tiny";
  return d;
}

// n images whose first pixel is the image's index (to follow them through a split) and whose
// label is given by `label_of`.
Dataset indexed(std::int64_t n, int classes, const std::function<int(std::int64_t)>& label_of) {
  std::vector<float> pixels;
  std::vector<std::int32_t> labels;
  for (std::int64_t i = 0; i < n; ++i) {
    pixels.insert(pixels.end(), {static_cast<float>(i), 0, 0, 0});
    labels.push_back(label_of(i));
  }
  return make_dataset(pixels, labels, classes);
}

// A separable 3-class set: class c lights pixel c (plus a little per-image variation).
Dataset separable(std::int64_t n) {
  std::vector<float> pixels;
  std::vector<std::int32_t> labels;
  for (std::int64_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % 3);
    std::vector<float> x = {0.1f, 0.1f, 0.1f, 0.05f * static_cast<float>(i % 7)};
    x[static_cast<std::size_t>(c)] = 1.0f;
    pixels.insert(pixels.end(), x.begin(), x.end());
    labels.push_back(c);
  }
  return make_dataset(pixels, labels, 3);
}

Sequential linear_model(Context& ctx, std::int64_t classes = 3) {
  Sequential net;
  net.add("flatten", std::make_unique<Flatten>()).add("fc", std::make_unique<Linear>(4, classes));
  net.build(ctx, 7);
  return net;
}

FitOptions sgd(float lr, std::int64_t epochs, std::int64_t batch) {
  FitOptions o;
  o.model_name = "tiny";
  o.epochs = epochs;
  o.batch_size = batch;
  o.optimizer.kind = OptimizerKind::sgd;
  o.optimizer.lr = lr;
  o.optimizer.momentum = 0;
  o.schedule = Schedule::none;
  return o;
}

std::vector<float> ids(const Dataset& d) {
  std::vector<float> out;
  const float* p = d.images.data<float>();
  for (std::int64_t i = 0; i < d.size(); ++i) out.push_back(p[i * 4]);
  return out;
}

std::map<int, std::int64_t> class_counts(const Dataset& d) {
  std::map<int, std::int64_t> out;
  const std::int32_t* l = d.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < d.size(); ++i) ++out[l[i]];
  return out;
}

}  // namespace

// ---------------------------------------------------------------- hold-out and subset

TEST(TrainerSplit, ValidationSplitIsStratifiedSeededDisjointAndOrdered) {
  // Unbalanced classes: 60 of class 0, 30 of class 1, 10 of class 2.
  const Dataset data = indexed(100, 3, [](std::int64_t i) { return i < 60 ? 0 : i < 90 ? 1 : 2; });
  auto [train, val] = split_validation(data, 0.2, 5);
  EXPECT_EQ(train.size(), 80);
  EXPECT_EQ(val.size(), 20);
  EXPECT_EQ(class_counts(val), (std::map<int, std::int64_t>{{0, 12}, {1, 6}, {2, 2}}));
  EXPECT_EQ(class_counts(train), (std::map<int, std::int64_t>{{0, 48}, {1, 24}, {2, 8}}));
  // Every image lands in exactly one part, each part in the original order, labels kept.
  std::vector<float> a = ids(train), b = ids(val);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
  std::vector<float> all = a;
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  std::vector<float> expected(100);
  std::iota(expected.begin(), expected.end(), 0.0f);
  EXPECT_EQ(all, expected);
  for (std::int64_t i = 0; i < val.size(); ++i) {
    const auto id = static_cast<std::int64_t>(b[static_cast<std::size_t>(i)]);
    EXPECT_EQ(val.labels.data<std::int32_t>()[i], id < 60 ? 0 : id < 90 ? 1 : 2);
  }
  // The same seed gives the same split; another seed another one.
  EXPECT_EQ(ids(split_validation(data, 0.2, 5).second), b);
  EXPECT_NE(ids(split_validation(data, 0.2, 6).second), b);
  // Nothing held out at 0; a fraction outside [0, 1) is refused.
  EXPECT_EQ(split_validation(data, 0.0, 5).second.size(), 0);
  expect_error([&] { split_validation(data, 1.0, 5); }, {"validation split", "[0, 1)", "1"});
}

TEST(TrainerSplit, SubsetKeepsEveryClassShareAndTheOrder) {
  const Dataset data = indexed(100, 3, [](std::int64_t i) { return i < 60 ? 0 : i < 90 ? 1 : 2; });
  const Dataset s = stratified_subset(data, 10, 3);
  EXPECT_EQ(s.size(), 10);
  EXPECT_EQ(class_counts(s), (std::map<int, std::int64_t>{{0, 6}, {1, 3}, {2, 1}}));
  const std::vector<float> v = ids(s);
  EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
  // Shares that do not divide evenly still sum to the count (largest remainders first).
  EXPECT_EQ(stratified_subset(data, 7, 3).size(), 7);
  EXPECT_EQ(stratified_subset(data, 1000, 3).size(), 100);
}

// ---------------------------------------------------------------- gradient-norm clipping

class ClipDelta : public BackendTest {};

TEST_P(ClipDelta, IsTheClipFactorMinusOne) {
  auto op = [&](float sum_sq, float limit) {
    Tensor a = make({sum_sq}, Shape{1}), b = make({limit}, Shape{1}), out = make({7}, Shape{1});
    backend().scalar_op(ctx(), ScalarOp::clip_delta, a, b, out);
    return host(out)[0];
  };
  EXPECT_NEAR(op(25.0f, 1.0f), 1.0f / 5.0f - 1.0f, 1e-6);  // norm 5 clipped to 1
  EXPECT_EQ(op(0.25f, 1.0f), 0.0f);                        // norm 0.5 is within the limit: exactly 0
  EXPECT_EQ(op(0.0f, 1.0f), 0.0f);                         // no gradient at all
  // Scaling through axpy_scalar(g, g): g * (1 + delta).
  Tensor g = make({3, 4}, Shape{2}), sq = make({0}, Shape{1}), limit = make({1}, Shape{1}), delta = make({0}, Shape{1});
  backend().dot(ctx(), g, g, sq);
  backend().scalar_op(ctx(), ScalarOp::clip_delta, sq, limit, delta);
  backend().axpy_scalar(ctx(), 1.0f, delta, g, g);
  const std::vector<float> v = host(g);
  EXPECT_NEAR(v[0], 0.6f, 1e-6);
  EXPECT_NEAR(v[1], 0.8f, 1e-6);
}

CUDL_INSTANTIATE_BACKENDS(ClipDelta);

TEST(TrainerClip, EachStepMovesTheParametersByAtMostLrTimesTheLimit) {
  for (Device device : devices()) {
    SCOPED_TRACE(device.str());
    Context ctx{device};
    const Dataset train = separable(24), test = separable(6);
    auto distance = [&](double clip) {
      Sequential net = linear_model(ctx);
      const std::vector<float> before = net.parameter_block().to_vector(ctx);
      FitOptions o = sgd(0.5f, 1, 8);  // 3 steps of plain SGD: Δθ = -lr·g
      o.clip_grad_norm = clip;
      fit(ctx, net, train, test, o);
      const std::vector<float> after = net.parameter_block().to_vector(ctx);
      double d2 = 0;
      for (std::size_t i = 0; i < before.size(); ++i) d2 += std::pow(double(after[i]) - before[i], 2);
      return std::make_pair(std::sqrt(d2), after);
    };
    const auto [clipped, clipped_params] = distance(1e-3);
    EXPECT_GT(clipped, 0.0);
    EXPECT_LE(clipped, 3 * 0.5 * 1e-3 * (1 + 1e-4));
    const auto [free, free_params] = distance(0);
    EXPECT_GT(free, 10 * clipped);
    // A limit far above the gradients' norm leaves the run bit for bit unchanged.
    EXPECT_EQ(distance(1e9).second, free_params);
  }
}

// ---------------------------------------------------------------- the non-finite guard

TEST(TrainerGuard, ANaNImageStopsTheRunAtItsExactStepWhateverTheCheckInterval) {
  for (Device device : devices()) {
    SCOPED_TRACE(device.str());
    Context ctx{device};
    Dataset train = separable(40);
    train.images.data<float>()[4 * 17 + 2] = std::numeric_limits<float>::quiet_NaN();  // image 17
    std::string first;
    for (std::int64_t every : {1, 3, 20}) {
      Sequential net = linear_model(ctx);
      FitOptions o = sgd(0.1f, 1, 4);  // 10 steps
      o.finite_check_every = every;
      int epochs_done = 0;
      o.on_epoch_end = [&](const TrainResult&) { ++epochs_done; };
      const std::string message = error_message([&] { fit(ctx, net, train, separable(6), o); });
      EXPECT_TRUE(contains(message, "fit: the training loss is nan at epoch 1, step ")) << message;
      EXPECT_TRUE(contains(message, "of 10 (step ")) << message;
      EXPECT_TRUE(contains(message, "no checkpoint is kept (no --save)")) << message;
      EXPECT_EQ(epochs_done, 0);
      // The step named is the same whether the guard reads every step or every 3 or 20.
      const std::string step = message.substr(message.find("step "), 10);
      if (first.empty()) first = step;
      EXPECT_EQ(step, first) << "check every " << every;
    }
  }
}

TEST(TrainerGuard, ParametersThatOverflowAreCaughtAfterTheUpdate) {
  Context ctx{Device::cpu()};
  // Pixels of 100 make gradients of tens; a finite learning rate of 3e38 overflows the update.
  std::vector<float> pixels(4 * 8, 100.0f);
  const Dataset train = make_dataset(pixels, {0, 1, 2, 0, 1, 2, 0, 1}, 3);
  Sequential net = linear_model(ctx);
  FitOptions o = sgd(3e38f, 1, 4);
  const std::string message = error_message([&] { fit(ctx, net, train, train, o); });
  EXPECT_TRUE(contains(message, "the parameters hold non-finite values after the update of epoch 1, step 1 of 2"))
      << message;
}

TEST(TrainerGuard, ADivergingResumedRunKeepsTheLastFiniteCheckpoint) {
  Context ctx{Device::cpu()};
  TempDir dir;
  const std::string save = dir.file("run.st"), best = dir.file("best.st");
  const Dataset train = separable(24), test = separable(6);
  {
    Sequential net = linear_model(ctx);
    FitOptions o = sgd(0.1f, 1, 8);
    o.save_path = save;
    o.save_best_path = best;
    fit(ctx, net, train, test, o);
  }
  const std::vector<std::uint8_t> saved = read_bytes(save), saved_best = read_bytes(best);
  Sequential net = linear_model(ctx);
  Dataset poisoned = train;
  poisoned.images = train.images.clone(ctx);
  poisoned.images.data<float>()[5] = std::numeric_limits<float>::infinity();
  FitOptions o = sgd(0.1f, 3, 8);
  o.save_path = save;
  o.save_best_path = best;
  o.resume_path = save;
  const std::string message = error_message([&] { fit(ctx, net, poisoned, test, o); });
  EXPECT_TRUE(contains(message, "at epoch 2, step ")) << message;
  EXPECT_TRUE(contains(message, fmt::format("the last good checkpoint is '{}' (epoch 1)", save))) << message;
  EXPECT_EQ(read_bytes(save), saved);
  EXPECT_EQ(read_bytes(best), saved_best);
}

// ---------------------------------------------------------------- max steps, metrics document

TEST(TrainerOptions, MaxStepsEndsTheRunInsideAnEpoch) {
  Context ctx{Device::cpu()};
  Sequential net = linear_model(ctx);
  FitOptions o = sgd(0.1f, 3, 4);  // 6 steps per epoch
  o.max_steps = 8;
  TrainResult r = fit(ctx, net, separable(24), separable(6), o);
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_EQ(r.epochs[0].steps, 6);
  EXPECT_EQ(r.epochs[1].steps, 8);
  EXPECT_EQ(r.stopped, "max_steps");
  const nlohmann::json doc = metrics_document(r);
  EXPECT_EQ(doc["stopped"], "max_steps");
  EXPECT_EQ(doc["train_size"], 24);
  EXPECT_EQ(doc["val_size"], 0);
  EXPECT_EQ(doc["test_size"], 6);
  // Without a validation split, model selection watches the training loss, never the test set.
  EXPECT_EQ(doc["monitor"], "train_loss");
  EXPECT_FALSE(doc["epochs"][0].contains("val_accuracy"));
  EXPECT_FLOAT_EQ(doc["epochs"][0]["lr"].get<float>(), 0.1f);
}

// ---------------------------------------------------------------- best epoch, early stopping, plateau

namespace {

// Accuracy that rises, then falls late, by construction. Class 0 is the majority (24 of 40) with
// a bright pixel 0; class 2 (8 images) has a dimmer pixel 2, learned after a few steps; class 1 (8)
// has a faint pixel 1, learned only after several epochs. The validation set holds the same images
// with class 1 labelled 0: its accuracy rises while class 2 is learned and falls when class 1 is.
struct LateFall {
  Dataset train, val, test;
  LateFall() {
    std::vector<float> pixels;
    std::vector<std::int32_t> labels, flipped;
    for (int i = 0; i < 40; ++i) {
      const int c = i % 5 == 3 ? 2 : i % 5 == 4 ? 1 : 0;
      std::vector<float> x = {0, 0, 0, 0};
      x[static_cast<std::size_t>(c)] = c == 0 ? 1.0f : c == 2 ? 0.3f : 0.05f;
      pixels.insert(pixels.end(), x.begin(), x.end());
      labels.push_back(c);
      flipped.push_back(c == 1 ? 0 : c);
    }
    train = make_dataset(pixels, labels, 3);
    val = make_dataset(pixels, flipped, 3);
    test = train;
  }
};

FitOptions late_fall_options() {
  FitOptions o = sgd(0.3f, 12, 8);  // validation accuracy: 80% for epochs 1-4, 100% at 5 and 6, then 80%
  o.seed = 3;
  return o;
}

}  // namespace

TEST(TrainerBest, SaveBestKeepsTheEpochBeforeAccuracyFalls) {
  Context ctx{Device::cpu()};
  TempDir dir;
  LateFall data;
  Sequential net = linear_model(ctx, 3);
  FitOptions o = late_fall_options();
  o.save_best_path = dir.file("best.st");
  std::vector<std::vector<float>> params_by_epoch;
  o.on_epoch_end = [&](const TrainResult&) { params_by_epoch.push_back(net.parameter_block().to_vector(ctx)); };
  TrainResult r = fit(ctx, net, data.train, data.val, data.test, o);
  ASSERT_EQ(r.epochs.size(), 12u);
  // The construction works: validation accuracy starts at its best and falls late.
  std::int64_t best = 0;
  double best_acc = -1;
  for (const auto& m : r.epochs) {
    ASSERT_TRUE(m.has_val);
    if (m.val_accuracy > best_acc) best_acc = m.val_accuracy, best = m.epoch;
  }
  ASSERT_LT(r.epochs.back().val_accuracy, best_acc) << "validation accuracy did not fall";
  ASSERT_GT(r.epochs.back().train_accuracy, r.epochs.front().train_accuracy) << "the model did not learn class 1";
  ASSERT_GT(best, 1) << "accuracy did not rise first";
  EXPECT_EQ(r.best_epoch, best);
  EXPECT_EQ(r.monitor, "val_accuracy");
  // The file holds that epoch's weights and says which epoch it was.
  const CheckpointInfo info = read_checkpoint_info(dir.file("best.st"));
  EXPECT_EQ(info.epoch, best);
  EXPECT_EQ(info.extra.at("best_epoch"), std::to_string(best));
  Sequential loaded = linear_model(ctx, 3);
  load_weights(dir.file("best.st"), ctx, loaded, /*allow_unused=*/true);
  EXPECT_EQ(loaded.parameter_block().to_vector(ctx), params_by_epoch[static_cast<std::size_t>(best - 1)]);
}

TEST(TrainerBest, EarlyStoppingStopsPatienceEpochsAfterTheBest) {
  Context ctx{Device::cpu()};
  LateFall data;
  Sequential net = linear_model(ctx, 3);
  FitOptions o = late_fall_options();
  o.early_stopping_patience = 4;  // waits through epochs 2-4 (no better than 1), then 6-9 after the best, 5
  TrainResult r = fit(ctx, net, data.train, data.val, data.test, o);
  EXPECT_EQ(r.stopped, "early_stopping");
  EXPECT_GT(r.best_epoch, 1);
  EXPECT_EQ(static_cast<std::int64_t>(r.epochs.size()), r.best_epoch + 4);
  EXPECT_LT(r.epochs.size(), 12u);
}

// ---------------------------------------------------------------- model selection as Keras does it

// Without a validation split the training loss picks the best epoch (never the test set), and
// the test set is scored every epoch (for the table and the curves: it picks nothing).
TEST(TrainerSelection, WithoutAValidationSplitTheTrainingLossPicksTheBestEpoch) {
  Context ctx{Device::cpu()};
  TempDir dir;
  LateFall data;
  Sequential net = linear_model(ctx, 3);
  FitOptions o = late_fall_options();
  o.save_best_path = dir.file("best.st");
  const TrainResult r = fit(ctx, net, data.train, data.val, o);  // data.val as the *test* split here
  ASSERT_EQ(r.epochs.size(), 12u);
  EXPECT_EQ(r.monitor, "train_loss");
  std::int64_t by_loss = 0, by_test = 0;
  double lowest = 1e300, highest = -1;
  for (const auto& m : r.epochs) {
    EXPECT_FALSE(m.has_val);
    EXPECT_TRUE(m.has_test) << "epoch " << m.epoch;
    if (m.train_loss < lowest) lowest = m.train_loss, by_loss = m.epoch;
    if (m.test_accuracy > highest) highest = m.test_accuracy, by_test = m.epoch;
  }
  ASSERT_NE(by_loss, by_test) << "the construction must make the two rules disagree, or this proves nothing";
  EXPECT_EQ(r.best_epoch, by_loss);
  EXPECT_EQ(read_checkpoint_info(dir.file("best.st")).epoch, by_loss);
}

// With a validation split the validation metric picks the best epoch and the test set is scored
// once, at the end; eval_test_every adds every Nth epoch. A save-best run's best epoch gets the
// test scores of its weights (what `cudl train` reports), and the model keeps its last weights.
TEST(TrainerSelection, WithAValidationSplitTheTestSetIsScoredAtTheEndAndForTheBestWeights) {
  Context ctx{Device::cpu()};
  TempDir dir;
  LateFall data;
  {
    Sequential net = linear_model(ctx, 3);
    FitOptions o = late_fall_options();
    o.eval_test_every = 5;
    const TrainResult r = fit(ctx, net, data.train, data.val, data.test, o);
    ASSERT_EQ(r.epochs.size(), 12u);
    for (const auto& m : r.epochs) EXPECT_EQ(m.has_test, m.epoch % 5 == 0 || m.epoch == 12) << "epoch " << m.epoch;
    const nlohmann::json doc = metrics_document(r);
    EXPECT_FALSE(doc["epochs"][0].contains("test_loss"));
    EXPECT_TRUE(doc["epochs"][4].contains("test_accuracy"));
  }
  Sequential net = linear_model(ctx, 3);
  FitOptions o = late_fall_options();
  o.save_best_path = dir.file("best.st");
  const TrainResult r = fit(ctx, net, data.train, data.val, data.test, o);
  EXPECT_EQ(r.monitor, "val_accuracy");
  const EpochMetrics* best = r.best();
  ASSERT_NE(best, nullptr);
  ASSERT_LT(best->epoch, 12) << "the late fall makes an early epoch the best";
  ASSERT_TRUE(best->has_test) << "the best checkpoint's test scores";
  for (const auto& m : r.epochs) {
    if (m.epoch != best->epoch) {
      EXPECT_EQ(m.has_test, m.epoch == 12) << "epoch " << m.epoch;
    }
  }
  Sequential loaded = linear_model(ctx, 3);
  load_weights(dir.file("best.st"), ctx, loaded, /*allow_unused=*/true);
  const EvalResult direct = evaluate(ctx, loaded, data.test, 8);
  EXPECT_DOUBLE_EQ(best->test_accuracy, direct.accuracy);
  EXPECT_DOUBLE_EQ(best->test_loss, direct.loss);
  EXPECT_DOUBLE_EQ(evaluate(ctx, net, data.test, 8).accuracy, r.epochs.back().test_accuracy)
      << "the model ends with its last weights, not the best";
}

TEST(TrainerBest, ReduceOnPlateauScalesTheRateAfterPatienceEpochsWithoutImprovement) {
  Context ctx{Device::cpu()};
  LateFall data;
  Sequential net = linear_model(ctx, 3);
  FitOptions o = late_fall_options();
  o.plateau_patience = 2;
  o.plateau_factor = 0.5;
  TrainResult r = fit(ctx, net, data.train, data.val, data.test, o);
  // Replay Keras' rule over the recorded accuracies: the rate of each epoch must match.
  double best = -1, scale = 1;
  std::int64_t wait = 0;
  bool reduced = false;
  for (const auto& m : r.epochs) {
    EXPECT_FLOAT_EQ(static_cast<float>(m.lr), static_cast<float>(0.3 * scale)) << "epoch " << m.epoch;
    if (m.val_accuracy > best) {
      best = m.val_accuracy;
      wait = 0;
    } else if (++wait >= 2) {
      scale *= 0.5;
      wait = 0;
      reduced = true;
    }
  }
  EXPECT_TRUE(reduced) << "the run never plateaued: the test proves nothing";
}

// ---------------------------------------------------------------- evaluation report

TEST(TrainerEval, ReportCountsTopKPerClassAndTheConfusionMatrix) {
  for (Device device : devices()) {
    SCOPED_TRACE(device.str());
    Context ctx{device};
    Sequential net = linear_model(ctx, 3);
    // Logits = the first three pixels (identity weights, no bias), so each image's ranking is set
    // by its pixels.
    std::vector<float> w = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    for (auto& p : net.parameters()) {
      const bool weight = p.name.ends_with("weight");
      Tensor values = Tensor::from_host(weight ? w : std::vector<float>(3, 0.0f), p.parameter->value.shape(), ctx);
      ctx.backend().copy(ctx, values, p.parameter->value);
    }
    // label 0: ranked 1st; label 1: ranked 2nd (pred 0); label 2: ranked 3rd (pred 1); label 2 ranked 1st.
    const Dataset data = make_dataset({3, 1, 0, 0, /**/ 3, 2, 1, 0, /**/ 1, 3, 0, 0, /**/ 0, 0, 5, 0}, {0, 1, 2, 2}, 3);
    const EvalReport r = evaluate_report(ctx, net, data, 3, 2);
    EXPECT_EQ(r.samples, 4);
    EXPECT_EQ(r.k, 2);
    EXPECT_DOUBLE_EQ(r.top1, 0.5);
    EXPECT_DOUBLE_EQ(r.topk, 0.75);
    const std::vector<std::vector<std::int64_t>> confusion = {{1, 0, 0}, {1, 0, 0}, {0, 1, 1}};
    EXPECT_EQ(r.confusion, confusion);
    EXPECT_DOUBLE_EQ(r.per_class_accuracy[0], 1.0);
    EXPECT_DOUBLE_EQ(r.per_class_accuracy[1], 0.0);
    EXPECT_DOUBLE_EQ(r.per_class_accuracy[2], 0.5);
    EXPECT_TRUE(std::isfinite(r.loss));
  }
}

// Ties follow argmax_rows and top_k (ranked on the device now): of equal logits the lower class
// ranks first, so a label tied with an earlier class is a top-1 miss but a top-2 hit.
TEST(TrainerEval, TiedLogitsRankTheLowerClassFirst) {
  for (Device device : devices()) {
    SCOPED_TRACE(device.str());
    Context ctx{device};
    Sequential net = linear_model(ctx, 3);
    std::vector<float> w = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    for (auto& p : net.parameters()) {
      const bool weight = p.name.ends_with("weight");
      Tensor values = Tensor::from_host(weight ? w : std::vector<float>(3, 0.0f), p.parameter->value.shape(), ctx);
      ctx.backend().copy(ctx, values, p.parameter->value);
    }
    // [2, 2, 1] label 1 (tied with class 0: rank 2); [1, 3, 3] label 2 (rank 2); [4, 4, 4] label 0 (rank 1).
    const Dataset data = make_dataset({2, 2, 1, 0, /**/ 1, 3, 3, 0, /**/ 4, 4, 4, 0}, {1, 2, 0}, 3);
    const EvalReport top1 = evaluate_report(ctx, net, data, 2, 1);
    EXPECT_DOUBLE_EQ(top1.top1, 1.0 / 3.0);
    EXPECT_DOUBLE_EQ(top1.topk, 1.0 / 3.0);
    const EvalReport top2 = evaluate_report(ctx, net, data, 2, 2);
    EXPECT_DOUBLE_EQ(top2.top1, 1.0 / 3.0);
    EXPECT_DOUBLE_EQ(top2.topk, 1.0);
    const std::vector<std::vector<std::int64_t>> confusion = {{1, 0, 0}, {1, 0, 0}, {0, 1, 0}};
    EXPECT_EQ(top2.confusion, confusion);
  }
}

TEST(TrainerEval, ClassNamesComeFromTheDataset) {
  Dataset d;
  d.num_classes = 3;
  EXPECT_EQ(class_names("fashion-mnist", d).at(9), "Ankle boot");
  EXPECT_EQ(class_names("fashion-mnist", d).at(0), "T-shirt/top");
  EXPECT_EQ(class_names("cifar10", d).at(1), "automobile");
  EXPECT_EQ(class_names("mnist", d), (std::vector<std::string>{"0", "1", "2"}));
  d.class_names = {"cat", "dog", "eel"};
  EXPECT_EQ(class_names("folder", d), d.class_names);
}
