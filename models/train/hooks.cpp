#include "cudl/models/train/hooks.hpp"

#include <charconv>
#include <cmath>
#include <optional>

#include "cudl/engine/io/json.hpp"

namespace cudl::train_hooks {

namespace {

nlohmann::json to_json(const EpochMetrics& m) {
  nlohmann::json j = {{"epoch", m.epoch}, {"train_loss", m.train_loss}};
  if (m.has_accuracy) j["train_accuracy"] = m.train_accuracy;
  if (m.has_val) {
    j["val_loss"] = m.val_loss;
    if (m.has_accuracy) j["val_accuracy"] = m.val_accuracy;
  }
  if (m.has_test) {
    j["test_loss"] = m.test_loss;
    if (m.has_accuracy) j["test_accuracy"] = m.test_accuracy;
  }
  for (const auto& [key, value] : m.extra) j[key] = value;
  j["lr"] = m.lr;
  j["steps"] = m.steps;
  j["seconds"] = m.seconds;
  j["images_per_second"] = m.images_per_second;
  if (m.loss_scale > 0) {
    j["loss_scale"] = m.loss_scale;
    j["skipped_steps"] = m.skipped_steps;
  }
  return j;
}

// The fields to_json writes itself; any other number is a task's metric (EpochMetrics::extra).
bool is_common_field(const std::string& key) {
  for (const char* k : {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                        "test_accuracy", "lr", "steps", "seconds", "images_per_second", "loss_scale", "skipped_steps"})
    if (key == k) return true;
  return false;
}

EpochMetrics metrics_from_json(const nlohmann::json& j, std::size_t index, const std::string& what) {
  CUDL_CHECK(j.is_object(), "{}: metrics[{}] is not an object", what, index);
  const auto number = [&](const char* key, double lo, double hi, bool required) {
    const auto it = j.find(key);
    if (it == j.end()) {
      CUDL_CHECK(!required, "{}: metrics[{}].{} is missing", what, index, key);
      return 0.0;
    }
    const double v = it->is_number() ? it->get<double>() : std::nan("");
    CUDL_CHECK(std::isfinite(v) && v >= lo && v <= hi, "{}: metrics[{}].{} must be a finite number in [{}, {}], got {}",
               what, index, key, lo, hi, io::json_excerpt(*it));
    return v;
  };
  const auto whole = [&](const char* key, bool required) {
    const auto it = j.find(key);
    CUDL_CHECK(it != j.end() || !required, "{}: metrics[{}].{} is missing", what, index, key);
    if (it == j.end()) return std::int64_t{0};
    CUDL_CHECK(it->is_number_integer() && it->get<double>() >= 0 && it->get<double>() <= 9007199254740992.0,
               "{}: metrics[{}].{} must be a whole number in [0, 2^53], got {}", what, index, key,
               io::json_excerpt(*it));
    return it->get<std::int64_t>();
  };
  constexpr double kBig = std::numeric_limits<double>::max();
  EpochMetrics m;
  m.epoch = whole("epoch", true);
  m.train_loss = number("train_loss", 0, kBig, true);
  // Checkpoints written before reconstruction shared this loop have every split's accuracy.
  m.has_accuracy = j.contains("train_accuracy");
  m.train_accuracy = number("train_accuracy", 0, 1, false);
  m.has_val = j.contains("val_loss");
  if (m.has_val) {
    m.val_loss = number("val_loss", 0, kBig, true);
    m.val_accuracy = number("val_accuracy", 0, 1, m.has_accuracy);
  }
  m.has_test = j.contains("test_loss");
  if (m.has_test) {
    m.test_loss = number("test_loss", 0, kBig, true);
    m.test_accuracy = number("test_accuracy", 0, 1, m.has_accuracy);
  }
  m.lr = number("lr", 0, kBig, false);
  m.steps = whole("steps", false);
  m.seconds = number("seconds", 0, kBig, true);
  m.images_per_second = number("images_per_second", 0, kBig, true);
  m.loss_scale = number("loss_scale", 0, kBig, false);
  m.skipped_steps = whole("skipped_steps", false);
  for (const auto& [key, value] : j.items())
    if (!is_common_field(key)) m.extra[key] = number(key.c_str(), -kBig, kBig, true);
  return m;
}

}  // namespace

nlohmann::json history_json(const std::vector<EpochMetrics>& history) {
  nlohmann::json epochs = nlohmann::json::array();
  for (const auto& m : history) epochs.push_back(to_json(m));
  return epochs;
}

std::vector<EpochMetrics> history_from_json(const std::string& text, const std::string& what) {
  const nlohmann::json list = io::parse_json(text, what);
  CUDL_CHECK(list.is_array(), "{}: not a list", what);
  std::vector<EpochMetrics> history;
  for (std::size_t i = 0; i < list.size(); ++i) history.push_back(metrics_from_json(list[i], i, what));
  return history;
}

void check_resume(const CheckpointInfo& info, const TrainConfig& o, std::int64_t train_size,
                  const std::vector<EpochMetrics>& history, std::int64_t steps) {
  const std::string& path = o.resume_path;
  CUDL_CHECK(history.size() <= static_cast<std::size_t>(info.epoch),
             "--resume: '{}': metadata extra.metrics lists {} epochs, but the checkpoint is at epoch {}", path,
             history.size(), info.epoch);
  for (std::size_t i = 0; i < history.size(); ++i)
    CUDL_CHECK(history[i].epoch == info.epoch - static_cast<std::int64_t>(history.size() - i) + 1,
               "--resume: '{}': metadata extra.metrics lists epoch {} at position {}; expected epochs up to {} in "
               "order",
               path, history[i].epoch, i, info.epoch);
  // The schedule and the data order count steps per epoch: another batch size or training set
  // would continue a different run (or none: the step count already past the new end).
  const auto saved = [&](const char* key) -> std::optional<std::int64_t> {
    const auto it = info.extra.find(key);
    if (it == info.extra.end()) return std::nullopt;
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
    CUDL_CHECK(ec == std::errc() && end == it->second.data() + it->second.size() && v >= 1,
               "--resume: '{}': metadata extra.{} = '{}', expected a whole number >= 1", path, key, it->second);
    return v;
  };
  if (const auto b = saved("batch_size"))
    CUDL_CHECK(*b == o.batch_size,
               "--resume: '{}' was trained with --batch-size {}, this run asks {}: resume with the same --batch-size "
               "(or start a new run from its weights with --init-from)",
               path, *b, o.batch_size);
  // Checkpoints from before accumulation existed took one step per batch.
  const std::int64_t accumulated = saved("accumulate_steps").value_or(1);
  CUDL_CHECK(accumulated == o.accumulate_steps,
             "--resume: '{}' was trained with --accumulate-steps {}, this run asks {}: resume with the same "
             "--accumulate-steps (its steps count groups of that many batches)",
             path, accumulated, o.accumulate_steps);
  if (const auto n = saved("train_images"))
    CUDL_CHECK(*n == train_size,
               "--resume: '{}' was trained on {} training images, this run has {} (another --subset, --val-split or "
               "data): resume with the same ones (or start a new run from its weights with --init-from)",
               path, *n, train_size);
  CUDL_CHECK(info.epoch < o.epochs,
             "--resume: '{}' is at epoch {} already; --epochs {} asks for no more: give --epochs above {} to train on",
             path, info.epoch, o.epochs, info.epoch);
  CUDL_CHECK(o.max_steps == 0 || steps < o.max_steps,
             "--resume: '{}' is at step {} already; --max-steps {} asks for no more", path, steps, o.max_steps);
}

double Monitor::value(const EpochMetrics& m) const {
  if (name_ == "val_accuracy") return m.val_accuracy;
  if (name_ == "val_loss") return m.val_loss;
  return m.train_loss;
}

bool Monitor::observe(const EpochMetrics& m, const TrainConfig& o) {
  const double v = value(m);
  if (best_epoch_ == 0 || (higher_ ? v > best_ : v < best_)) {
    best_ = v;
    best_epoch_ = m.epoch;
    since_best_ = plateau_wait_ = 0;
    return true;
  }
  ++since_best_;
  if (o.plateau_patience > 0 && ++plateau_wait_ >= o.plateau_patience) {
    lr_scale_ *= o.plateau_factor;
    plateau_wait_ = 0;
  }
  return false;
}

GradClipper::GradClipper(Context& ctx, double max_norm)
    : sum_sq_(Tensor::empty({1}, ctx)),
      max_norm_(Tensor::full({1}, static_cast<float>(max_norm), ctx)),
      delta_(Tensor::empty({1}, ctx)) {}

void GradClipper::clip(Context& ctx, Tensor& grads) {
  Backend& be = ctx.backend();
  be.dot(ctx, grads, grads, sum_sq_);
  be.scalar_op(ctx, ScalarOp::clip_delta, sum_sq_, max_norm_, delta_);
  be.axpy_scalar(ctx, 1.0f, delta_, grads, grads);
}

void FiniteGuard::record(Context& ctx, std::int64_t done, const Tensor& batch_loss, const Tensor& params) {
  const std::int64_t slot = (done - 1) % every_;
  Tensor loss_slot = ring_.view(2 * slot, Shape{1});
  Tensor param_slot = ring_.view(2 * slot + 1, Shape{1});
  ctx.backend().copy(ctx, batch_loss, loss_slot);
  ctx.backend().sum(ctx, params, param_slot);
}

void FiniteGuard::check(Context& ctx, std::int64_t epoch, std::int64_t done, std::int64_t batches,
                        std::int64_t steps_before_epoch, const std::string& last_good) const {
  const std::vector<float> values = ring_.to_vector(ctx);
  const std::int64_t count = (done - 1) % every_ + 1;
  for (std::int64_t i = 0; i < count; ++i) {
    const float loss = values[static_cast<std::size_t>(2 * i)];
    const float params = values[static_cast<std::size_t>(2 * i + 1)];
    const std::int64_t step = done - count + 1 + i;
    const std::string where =
        fmt::format("epoch {}, step {} of {} (step {} in all)", epoch, step, batches, steps_before_epoch + step);
    // NaN's sign bit is noise ("-nan"): name it plainly.
    CUDL_CHECK(std::isfinite(loss),
               "fit: the training loss is {} at {}: training diverged (a learning rate too high?); {}",
               std::isnan(loss) ? std::string("nan") : fmt::format("{}", loss), where, last_good);
    CUDL_CHECK(std::isfinite(params),
               "fit: the parameters hold non-finite values after the update of {}: training diverged (a learning "
               "rate too high?); {}",
               where, last_good);
  }
}

}  // namespace cudl::train_hooks
