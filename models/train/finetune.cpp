#include "cudl/models/train/finetune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "cudl/engine/io/safetensors.hpp"
#include "cudl/engine/text.hpp"
#include "cudl/layers/linear.hpp"

namespace cudl {

std::string replace_classifier(Sequential& model, int num_classes) {
  CUDL_CHECK(num_classes >= 1, "--num-classes: {} must be at least 1", num_classes);
  const auto& layers = model.layers();
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    const auto* linear = dynamic_cast<const Linear*>(it->second.get());
    if (!linear) continue;
    const std::string name = it->first;
    model.replace(name,
                  std::make_unique<Linear>(linear->in_features(), num_classes, linear->has_bias(), linear->init()));
    return name;
  }
  CUDL_THROW("--num-classes: the model has no linear layer to replace");
}

InitFromReport init_from(const std::string& path, Context& ctx, Sequential& model,
                         const std::vector<std::string>& fresh_layers) {
  CUDL_CHECK(model.built(), "init_from('{}'): build() the model first", path);
  const SafetensorsFile file = SafetensorsFile::open(path);
  struct Match {
    Tensor target;
    std::vector<float> values;
  };
  std::vector<Match> matches;
  InitFromReport report;
  std::vector<NamedParameter> slots = model.parameters();
  for (const NamedParameter& b : model.buffers()) slots.push_back(b);
  std::set<std::string> model_names;
  for (const NamedParameter& p : slots) {
    model_names.insert(p.name);
    const Shape& want = p.parameter->shape;
    const bool fresh = std::any_of(fresh_layers.begin(), fresh_layers.end(),
                                   [&](const std::string& layer) { return p.name.starts_with(layer + "."); });
    if (fresh) {
      report.skipped.push_back(p.name + " (new head)");
      continue;
    }
    if (!file.contains(p.name)) {
      report.skipped.push_back(p.name + " (not in the file)");
      continue;
    }
    if (file.shape(p.name) != want) {
      report.skipped.push_back(fmt::format("{} (file {}, model {})", p.name, file.shape(p.name), want));
      continue;
    }
    std::vector<float> values = file.read_f32(p.name);
    for (std::size_t i = 0; i < values.size(); ++i)
      CUDL_CHECK(std::isfinite(values[i]),
                 "--init-from '{}': tensor '{}' {} has {} at index {}: the file cannot be used (a run that diverged?)",
                 path, p.name, want, values[i], i);
    matches.push_back({p.parameter->value, std::move(values)});
    report.loaded.push_back(p.name);
  }
  for (const std::string& name : file.names())
    if (!model_names.count(name) && !name.starts_with("optimizer.")) report.unused.push_back(name);
  // The new head's tensors are in the model and (perhaps) in the file, yet deliberately not loaded.
  for (const std::string& layer : fresh_layers)
    for (const std::string& name : file.names())
      if (name.starts_with(layer + ".")) report.unused.push_back(name + " (the old head)");
  CUDL_CHECK(!matches.empty(),
             "--init-from '{}': no tensor matches the model by name and shape (the model has {} tensors, the file {}; "
             "first model tensor: {})",
             path, slots.size(), file.names().size(), slots.empty() ? std::string("none") : report.skipped.front());
  // Every tensor was read and checked: only now is anything written.
  for (Match& m : matches) {
    Tensor src = Tensor::from_host(m.values, m.target.shape(), ctx);
    ctx.backend().copy(ctx, src, m.target);
  }
  model.parameters_changed();
  ctx.synchronize();
  return report;
}

ParameterCounts count_parameters(Sequential& model) {
  ParameterCounts counts;
  for (const auto& [name, layer] : model.layers())
    for (const Parameter* p : layer->parameters())
      if (p->trainable) (layer->frozen() ? counts.frozen : counts.trainable) += p->shape.numel();
  return counts;
}

std::vector<std::string> freeze_layers(Sequential& model, const std::vector<std::string>& prefixes) {
  std::vector<std::string> frozen;
  for (const std::string& prefix : prefixes) {
    bool matched = false;
    for (const auto& [name, layer] : model.layers()) {
      const bool match =
          name == prefix || (name.starts_with(prefix) && (prefix.ends_with('.') || name[prefix.size()] == '.'));
      if (!match || layer->parameters().empty()) continue;
      matched = true;
      if (!layer->frozen()) {
        layer->set_frozen(true);
        frozen.push_back(name);
      }
    }
    std::string names;
    for (const auto& [name, layer] : model.layers())
      if (!layer->parameters().empty()) names += (names.empty() ? "" : ", ") + name;
    CUDL_CHECK(matched, "--freeze: '{}' matches no layer with parameters (they are: {})", prefix, names);
  }
  return frozen;
}

bool apply_saved_head(const std::string& weights_path, Sequential& model) {
  const auto meta = read_safetensors_metadata(weights_path);
  const auto it = meta.find("extra.num_classes");
  if (it == meta.end()) return false;
  const std::string& text = it->second;
  CUDL_CHECK(!text.empty() && text.size() <= 7 && text.find_first_not_of("0123456789") == std::string::npos,
             "'{}': metadata extra.num_classes '{}' is not a whole number", weights_path, text);
  const int n = std::stoi(text);
  CUDL_CHECK(n >= 1, "'{}': metadata extra.num_classes is {}; expected at least 1", weights_path, n);
  // The head is sized from the file's own tensor before anything is allocated: a forged count
  // (9999999 classes: a head of gigabytes) is refused by comparing it with what the file holds.
  const std::string head = replace_classifier(model, n);
  const SafetensorsFile file = SafetensorsFile::open(weights_path);
  const std::string weight = head + ".weight";
  const auto names = file.names();
  CUDL_CHECK(std::find(names.begin(), names.end(), weight) != names.end(),
             "'{}': metadata extra.num_classes is {}, but the file holds no '{}' for that head", weights_path, n,
             weight);
  const Shape shape = file.shape(weight);
  CUDL_CHECK(shape.rank() == 2 && shape[0] == n,
             "'{}': metadata extra.num_classes is {}, but the file's '{}' is {}: the metadata does not match the "
             "weights",
             weights_path, n, weight, shape);
  return true;
}

std::vector<std::string> split_prefixes(const std::string& option, const std::string& csv) {
  // An empty text is one empty item here: the option was given, with nothing in it.
  std::vector<std::string> out = csv.empty() ? std::vector<std::string>{""} : split_list(csv);
  for (const std::string& item : out)
    CUDL_CHECK(!item.empty(), "{}: '{}' has an empty item (expected PREFIX[,PREFIX...])", option, csv);
  return out;
}

}  // namespace cudl
