#pragma once
// Fine-tuning: start from another run's weights (every tensor whose name and shape match), give
// the network a new head for a different number of classes, and freeze layers by name prefix.
#include <string>
#include <vector>

#include "cudl/models/network/sequential.hpp"

namespace cudl {

// Replaces the last Linear layer with a freshly initialised Linear(in_features, num_classes),
// keeping its name (so a checkpoint's other tensors still match by name). Before build().
// Returns the replaced layer's name; throws when the model has no Linear layer.
std::string replace_classifier(Sequential& model, int num_classes);

struct InitFromReport {
  std::vector<std::string> loaded;   // model tensors copied from the file
  std::vector<std::string> skipped;  // model tensors kept at their initialisation, each with why
  std::vector<std::string> unused;   // file tensors the model has no place for (optimizer state excluded)
};

// Copies into the built `model` every parameter and buffer whose name is in the safetensors file
// `path` with the same shape. Values must be finite (a NaN names the tensor); nothing is written
// before every tensor was read and checked. At least one tensor must match (else the file is not
// for this network, which is worth an error rather than a silent run from scratch).
// `fresh_layers`: layers whose tensors are never loaded (a new head from replace_classifier keeps
// its fresh initialisation even when the file's head has the same shape); reported as skipped.
InitFromReport init_from(const std::string& path, Context& ctx, Sequential& model,
                         const std::vector<std::string>& fresh_layers = {});

// Trainable and frozen parameter elements of a built or unbuilt model (frozen layers' parameters
// count as frozen; the optimizer does not change them).
struct ParameterCounts {
  std::int64_t trainable = 0, frozen = 0;
};
ParameterCounts count_parameters(Sequential& model);

// Freezes every layer whose name starts with one of `prefixes` (layer "features.3" matches
// "features" and "features.3"; a prefix ends at a '.' or the name's end, so "features.1" does not
// match "features.10"). Frozen layers compute no weight gradients and the optimizer's update of
// their parameters is exactly zero (zero gradient, zero state) as long as there is no weight
// decay; the gradient still flows through them to earlier layers. Throws for a prefix that
// matches no layer with parameters. Returns the frozen layers' names.
std::vector<std::string> freeze_layers(Sequential& model, const std::vector<std::string>& prefixes);

// A checkpoint saved after --num-classes records the new head's size in its metadata
// ("extra.num_classes"); this gives `model` (unbuilt) that head, so eval and predict can load it.
// Returns whether it did.
bool apply_saved_head(const std::string& weights_path, Sequential& model);

// Splits "features,classifier.0" into its items (no empty item allowed; `option` names the flag).
std::vector<std::string> split_prefixes(const std::string& option, const std::string& csv);

}  // namespace cudl
