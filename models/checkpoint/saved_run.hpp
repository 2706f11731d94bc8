#pragma once
// What a checkpoint says about the run that wrote it, so eval, predict, classify and resume need
// no flags the training run already had: the model (a built-in name, or a model file's path and
// its text embedded as "extra.model_file"), the dataset kind ("extra.dataset"), the class names,
// the preprocessing and a replaced head's class count. A plain weights file (a converted
// torchvision VGG) says none of it; every field is then empty.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cudl/models/zoo/preprocess.hpp"

namespace cudl {

inline constexpr const char* kDatasetKey = "dataset";       // "extra.dataset": mnist, fashion-mnist, cifar10, folder
inline constexpr const char* kTestSplitKey = "test_split";  // "extra.test_split": a flat folder's test fraction
inline constexpr const char* kModelFileKey = "model_file";  // "extra.model_file": the JSON model file's text

struct SavedRun {
  std::string model;       // the --model the run was trained with (a name, or a model file's path)
  std::string model_file;  // a model file's text (empty for built-in models)
  std::string dataset;     // the dataset kind (empty when not recorded)
  std::vector<std::string> classes;
  std::optional<Preprocess> preprocess;
  int num_classes = 0;     // a replaced head's outputs (0: the model's own)
  double test_split = 0;   // a flat folder's held-out test fraction ("extra.test_split"; 0: none)
  std::uint64_t seed = 0;  // the run's seed (it chose the test split)
};

// Reads the header of `path` only; checks what it reads (class names a JSON list, the class count
// a whole number); `path` names the file in errors.
SavedRun read_saved_run(const std::string& path);

// The model to use for `path`: `given` (--model) when not empty, else the checkpoint's. A model
// file whose recorded path no longer exists (the checkpoint was copied to another machine) is
// rebuilt from the embedded text, written to a private temporary file that lives until the process
// ends. Throws, naming `command`, when neither is known, and when `given` is a built-in model
// other than the built-in model the checkpoint was trained as (today's alternative is a shape
// mismatch without a hint).
std::string resolve_model(const std::string& command, const std::string& given, const std::string& path,
                          const SavedRun& saved);

}  // namespace cudl
