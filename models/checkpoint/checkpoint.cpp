#include "cudl/models/checkpoint/checkpoint.hpp"

#include <charconv>
#include <cmath>
#include <deque>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/models/train/data_parallel.hpp"

namespace cudl {

namespace {

constexpr std::string_view kFormat = "cudl-checkpoint-1";
constexpr std::string_view kOptimizerPrefix = "optimizer.";
constexpr std::string_view kDropoutPrefix = "dropout.";
constexpr std::string_view kExtraPrefix = "extra.";
// A mismatch report stays one readable line; the count says how much more is wrong.
constexpr std::size_t kMaxListed = 5;

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

// Host copies of the tensors to write, kept alive until the file is written. A deque, because
// entries point into earlier vectors and a deque never moves its elements when it grows.
struct HostTensors {
  std::deque<std::vector<float>> values;
  std::deque<std::vector<std::uint16_t>> halves;
  std::vector<SafetensorsEntry> entries;

  const float* keep(std::vector<float> v) {
    values.push_back(std::move(v));
    return values.back().data();
  }
  // `dtype` f32 writes the values as they are; bf16 or f16 rounds them (to nearest even).
  void add(Context& ctx, const std::string& name, const Tensor& t, DType dtype = DType::f32) {
    if (dtype == DType::f32) {
      entries.push_back({name, "F32", t.shape(), keep(t.to_vector(ctx))});
      return;
    }
    const std::vector<float> v = t.to_vector(ctx);
    std::vector<std::uint16_t> bits(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) bits[i] = dtype == DType::bf16 ? to_bf16(v[i]).bits : to_f16(v[i]).bits;
    halves.push_back(std::move(bits));
    entries.push_back({name, dtype == DType::bf16 ? "BF16" : "F16", t.shape(), halves.back().data()});
  }
};

void add_model_tensors(Context& ctx, Sequential& model, HostTensors& out, DType dtype = DType::f32) {
  for (const NamedParameter& p : model.parameters()) out.add(ctx, p.name, p.parameter->value, dtype);
  for (const NamedParameter& b : model.buffers()) out.add(ctx, b.name, b.parameter->value, dtype);
}

// A tensor the model expects in the file, and where its values go.
struct Slot {
  std::string name;
  Tensor target;
};

std::vector<Slot> model_slots(Sequential& model) {
  std::vector<Slot> slots;
  for (const NamedParameter& p : model.parameters()) slots.push_back({p.name, p.parameter->value});
  for (const NamedParameter& b : model.buffers()) slots.push_back({b.name, b.parameter->value});
  return slots;
}

// Optimizer state is flat, laid out like the parameter block: each parameter's slice starts at the
// running sum of the element counts of the parameters before it.
template <class Fn>
void for_each_state_view(Sequential& model, Optimizer& optimizer, Fn&& fn) {
  const std::vector<NamedParameter> params = model.parameters();
  for (auto& [state, tensor] : optimizer.state()) {
    std::int64_t offset = 0;
    for (const NamedParameter& p : params) {
      fn(fmt::format("{}{}.{}", kOptimizerPrefix, state, p.name), *tensor, offset, p.parameter->shape);
      offset += p.parameter->shape.numel();
    }
  }
}

std::vector<Dropout*> named_dropouts(Sequential& model, std::vector<std::string>& names) {
  std::vector<Dropout*> out;
  for (const auto& [name, layer] : model.layers())
    if (auto* d = dynamic_cast<Dropout*>(layer.get())) {
      out.push_back(d);
      names.push_back(name);
    }
  return out;
}

bool is_float_dtype(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16" || dtype == "F64";
}

// Epochs and step counts from a file are bounded: a hostile or corrupt INT64_MAX would overflow the
// next ++steps, and a negative one has no meaning. 2^53 steps is more than any run takes, and
// counts up to it convert to double (the schedules' arithmetic) exactly.
constexpr std::int64_t kMaxCount = std::int64_t{1} << 53;

template <class Int>
bool parse_int(const std::string& text, Int& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && !text.empty();
}

// Collects what is wrong in one pass, so the user fixes everything at once rather than one per run.
class Mismatches {
 public:
  void add(std::string problem) { problems_.push_back(std::move(problem)); }
  bool empty() const { return problems_.empty(); }

  // Checks that `slots` are in the file with their shapes and a float dtype.
  void check_slots(const SafetensorsFile& file, const std::vector<Slot>& slots) {
    for (const Slot& s : slots) {
      if (!file.contains(s.name)) {
        add("missing " + s.name);
      } else if (file.shape(s.name) != s.target.shape()) {
        add(fmt::format("{}: checkpoint {}, model {}", s.name, file.shape(s.name), s.target.shape()));
      } else if (!is_float_dtype(file.dtype(s.name))) {
        add(fmt::format("{}: dtype {}, expected F32, F16, BF16 or F64", s.name, file.dtype(s.name)));
      }
    }
  }

  void throw_if_any(const std::string& what, const std::string& path) const {
    if (problems_.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < problems_.size() && i < kMaxListed; ++i) list += (i ? "; " : "") + problems_[i];
    if (problems_.size() > kMaxListed) list += fmt::format("; ... and {} more", problems_.size() - kMaxListed);
    CUDL_THROW("{} '{}' does not match the model ({} mismatch{}): {}", what, path, problems_.size(),
               problems_.size() == 1 ? "" : "es", list);
  }

 private:
  std::vector<std::string> problems_;
};

// The first tensor of `slots` holding NaN or inf, named with the value and its index, so that a diverged
// run's checkpoint is refused instead of producing NaN results. Checked before anything is written
// (one tensor converted at a time, so the extra memory is the largest tensor).
void check_finite(const SafetensorsFile& file, const std::vector<Slot>& slots, const std::string& what,
                  const std::string& path) {
  for (const Slot& s : slots) {
    const std::vector<float> values = file.read_f32(s.name);
    for (std::size_t i = 0; i < values.size(); ++i)
      CUDL_CHECK(std::isfinite(values[i]),
                 "{} '{}' holds non-finite values and cannot be used: tensor '{}' {} has {} at index {} (a run "
                 "that diverged?)",
                 what, path, s.name, s.target.shape(), values[i], i);
  }
}

void copy_into(Context& ctx, const SafetensorsFile& file, const std::string& name, Tensor& target) {
  const std::vector<float> values = file.read_f32(name);
  copy_bytes(ctx, target.raw(), target.device(), values.data(), Device::cpu(), values.size() * sizeof(float));
}

void check_built(const Sequential& model, const char* call, const std::string& path) {
  CUDL_CHECK(model.built(), "{}('{}'): build() the model first", call, path);
}

}  // namespace

std::uint64_t model_fingerprint(const Sequential& model) {
  std::uint64_t h = fingerprint("cudl model");
  for (const auto& [name, layer] : model.layers()) h = fingerprint(name + ": " + layer->describe(), h);
  return h;
}

bool same_model_name(const CheckpointInfo& info, const std::string& model) {
  const auto is_file = [](const std::string& n) { return n.size() > 5 && n.ends_with(".json"); };
  return info.model == model || (is_file(info.model) && is_file(model) && info.extra.count("model_fingerprint") > 0);
}

void save_checkpoint(const std::string& path, Context& ctx, Sequential& model, Optimizer* optimizer,
                     const CheckpointInfo& info) {
  check_built(model, "save_checkpoint", path);
  HostTensors host;
  add_model_tensors(ctx, model, host);

  std::map<std::string, std::string> meta;
  meta["format"] = kFormat;
  meta["model"] = info.model;
  meta["epoch"] = std::to_string(info.epoch);
  meta["step"] = std::to_string(info.step);
  meta["seed"] = std::to_string(info.seed);
  for (const auto& [key, value] : info.extra) meta[std::string(kExtraPrefix) + key] = value;

  if (optimizer) {
    // One host copy per state tensor; each parameter's entry points at its slice of it.
    std::map<const Tensor*, const float*> flat;
    for (auto& [state, tensor] : optimizer->state()) flat[tensor] = host.keep(tensor->to_vector(ctx));
    for_each_state_view(model, *optimizer,
                        [&](std::string name, const Tensor& state, std::int64_t offset, const Shape& shape) {
                          host.entries.push_back({std::move(name), "F32", shape, flat.at(&state) + offset});
                        });
    const OptimizerConfig& c = optimizer->config();
    meta["optimizer"] = optimizer_name(c.kind);
    meta["optimizer.steps"] = std::to_string(optimizer->steps());
    // Settings are informational (the resuming run supplies its own); "{}" prints floats exactly.
    meta["optimizer.lr"] = fmt::format("{}", c.lr);
    meta["optimizer.momentum"] = fmt::format("{}", c.momentum);
    meta["optimizer.nesterov"] = c.nesterov ? "true" : "false";
    meta["optimizer.weight_decay"] = fmt::format("{}", c.weight_decay);
    meta["optimizer.beta1"] = fmt::format("{}", c.beta1);
    meta["optimizer.beta2"] = fmt::format("{}", c.beta2);
    meta["optimizer.eps"] = fmt::format("{}", c.eps);
  }

  std::vector<std::string> dropout_names;
  const std::vector<Dropout*> dropouts = named_dropouts(model, dropout_names);
  for (std::size_t i = 0; i < dropouts.size(); ++i)
    meta[std::string(kDropoutPrefix) + dropout_names[i]] = std::to_string(dropouts[i]->counter());

  write_safetensors(path, host.entries, meta);
}

namespace {

// Reads a checkpoint's metadata: the format, the CheckpointInfo fields and (reader.count) bounded
// step counts; every problem goes to `bad`.
class MetadataReader {
 public:
  MetadataReader(const std::map<std::string, std::string>& meta, Mismatches& bad) : meta_(meta), bad_(bad) {}

  const std::string* value(const std::string& key) const {
    auto it = meta_.find(key);
    return it == meta_.end() ? nullptr : &it->second;
  }
  template <class Int>
  void number(const std::string& key, Int& out) {
    const std::string* text = value(key);
    if (!text) {
      bad_.add("missing metadata " + key);
    } else if (!parse_int(*text, out)) {
      bad_.add(fmt::format("metadata {} = '{}', expected an integer", key, *text));
    }
  }
  void count(const std::string& key, std::int64_t& out) {
    number(key, out);
    if (out < 0 || out > kMaxCount) {
      bad_.add(fmt::format("metadata {} = {} is outside [0, {}]", key, out, kMaxCount));
      out = 0;
    }
  }
  // The optimizer's settings: informational (the resuming run supplies its own), but a checkpoint
  // is checked as the CLI checks its values, so "abc" or nan there is a damaged file, not a value.
  void optimizer_settings() {
    for (const char* key : {"optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "optimizer.beta1",
                            "optimizer.beta2", "optimizer.eps"}) {
      const std::string* text = value(key);
      if (!text) continue;
      double v = 0;
      const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
      if (ec != std::errc() || end != text->data() + text->size() || !std::isfinite(v) || v < 0)
        bad_.add(fmt::format("metadata {} = '{}', expected a finite number >= 0", key, *text));
    }
    if (const std::string* n = value("optimizer.nesterov"); n && *n != "true" && *n != "false")
      bad_.add(fmt::format("metadata optimizer.nesterov = '{}', expected true or false", *n));
  }
  CheckpointInfo info() {
    const std::string* format = value("format");
    if (!format) {
      bad_.add(fmt::format("missing metadata format '{}' (a plain weights file loads with load_weights)", kFormat));
    } else if (*format != kFormat) {
      bad_.add(fmt::format("metadata format '{}', expected '{}'", *format, kFormat));
    }
    CheckpointInfo info;
    if (const std::string* m = value("model")) info.model = *m;
    count("epoch", info.epoch);
    count("step", info.step);
    number("seed", info.seed);
    for (const auto& [key, text] : meta_)
      if (starts_with(key, kExtraPrefix)) info.extra[key.substr(kExtraPrefix.size())] = text;
    return info;
  }

 private:
  const std::map<std::string, std::string>& meta_;
  Mismatches& bad_;
};

}  // namespace

CheckpointInfo read_checkpoint_info(const std::string& path) {
  const std::map<std::string, std::string> meta = read_safetensors_metadata(path);
  Mismatches bad;
  MetadataReader reader(meta, bad);
  CheckpointInfo info = reader.info();
  if (reader.value("optimizer")) {
    std::int64_t steps = 0;
    reader.count("optimizer.steps", steps);
    reader.optimizer_settings();
  }
  bad.throw_if_any("checkpoint", path);
  return info;
}

CheckpointInfo load_checkpoint(const std::string& path, Context& ctx, Sequential& model, Optimizer* optimizer) {
  check_built(model, "load_checkpoint", path);
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto& meta = file.metadata();
  Mismatches bad;
  MetadataReader reader(meta, bad);
  auto meta_value = [&](const std::string& key) { return reader.value(key); };
  CheckpointInfo info = reader.info();

  // Parameters and buffers, then the optimizer's state views.
  std::vector<Slot> slots = model_slots(model);
  std::int64_t optimizer_steps = 0;
  if (optimizer) {
    const std::string expected = optimizer_name(optimizer->config().kind);
    const std::string* kind = meta_value("optimizer");
    if (!kind) {
      bad.add("missing optimizer state (the checkpoint was saved without an optimizer)");
    } else if (*kind != expected) {
      bad.add(fmt::format("optimizer: checkpoint {}, model {}", *kind, expected));
    }
    reader.count("optimizer.steps", optimizer_steps);
    reader.optimizer_settings();
    for_each_state_view(model, *optimizer,
                        [&](std::string name, Tensor& state, std::int64_t offset, const Shape& shape) {
                          slots.push_back({std::move(name), state.view(offset, shape)});
                        });
  }
  bad.check_slots(file, slots);

  std::set<std::string> expected_names;
  for (const Slot& s : slots) expected_names.insert(s.name);
  for (const std::string& name : file.names())
    if (!expected_names.count(name) && !(optimizer == nullptr && starts_with(name, kOptimizerPrefix)))
      bad.add("unexpected " + name);

  std::vector<std::string> dropout_names;
  const std::vector<Dropout*> dropouts = named_dropouts(model, dropout_names);
  std::vector<std::uint64_t> counters(dropouts.size());
  for (std::size_t i = 0; i < dropouts.size(); ++i)
    reader.number(std::string(kDropoutPrefix) + dropout_names[i], counters[i]);
  const std::set<std::string> dropout_set(dropout_names.begin(), dropout_names.end());
  for (const auto& [key, value] : meta)
    if (starts_with(key, kDropoutPrefix) && !dropout_set.count(key.substr(kDropoutPrefix.size())))
      bad.add("unexpected metadata " + key);

  bad.throw_if_any("checkpoint", path);
  check_finite(file, slots, "checkpoint", path);

  // Everything matched: only now is anything written.
  for (Slot& s : slots) copy_into(ctx, file, s.name, s.target);
  model.parameters_changed();
  if (optimizer) optimizer->set_steps(optimizer_steps);
  for (std::size_t i = 0; i < dropouts.size(); ++i) dropouts[i]->set_counter(counters[i]);
  // The host vectors the copies read from are gone when this returns; finishing the copies here
  // keeps that safe whatever kind of host memory they came from.
  ctx.synchronize();
  return info;
}

void save_weights(const std::string& path, Context& ctx, Sequential& model,
                  const std::map<std::string, std::string>& metadata, DType dtype) {
  check_built(model, "save_weights", path);
  CUDL_CHECK(is_floating(dtype), "save_weights '{}': weights are saved as f32, bf16 or f16, not {}", path,
             dtype_name(dtype));
  HostTensors host;
  add_model_tensors(ctx, model, host, dtype);
  write_safetensors(path, host.entries, metadata);
}

std::vector<std::string> load_weights(const std::string& path, Context& ctx, Sequential& model, bool allow_unused) {
  check_built(model, "load_weights", path);
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::vector<Slot> slots = model_slots(model);
  Mismatches bad;
  bad.check_slots(file, slots);
  std::set<std::string> expected_names;
  for (const Slot& s : slots) expected_names.insert(s.name);
  std::vector<std::string> unused;
  for (const std::string& name : file.names())
    if (!expected_names.count(name) && !starts_with(name, kOptimizerPrefix)) unused.push_back(name);
  if (!allow_unused)
    for (const std::string& name : unused) bad.add("unexpected " + name);
  bad.throw_if_any("weights", path);
  check_finite(file, slots, "weights", path);
  for (Slot& s : slots) copy_into(ctx, file, s.name, s.target);
  model.parameters_changed();
  ctx.synchronize();
  return unused;
}

}  // namespace cudl
