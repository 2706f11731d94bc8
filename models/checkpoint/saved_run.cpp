#include "cudl/models/checkpoint/saved_run.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/preprocess.hpp"

namespace cudl {

namespace {

namespace fs = std::filesystem;

std::string get(const std::map<std::string, std::string>& meta, const std::string& key) {
  const auto it = meta.find(key);
  return it == meta.end() ? std::string() : it->second;
}

// Temporary model files written from checkpoints; removed when the process ends.
struct TemporaryFiles {
  std::vector<fs::path> paths;
  ~TemporaryFiles() {
    for (const fs::path& p : paths) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  }
};
TemporaryFiles& temporary_files() {
  static TemporaryFiles files;
  return files;
}

}  // namespace

SavedRun read_saved_run(const std::string& path) {
  const std::map<std::string, std::string> meta = read_safetensors_metadata(path);
  SavedRun s;
  s.model = get(meta, "model");
  s.model_file = get(meta, std::string("extra.") + kModelFileKey);
  s.dataset = get(meta, std::string("extra.") + kDatasetKey);
  CUDL_CHECK(s.dataset.empty() || s.dataset == "mnist" || s.dataset == "fashion-mnist" || s.dataset == "cifar10" ||
                 s.dataset == "folder",
             "'{}': metadata extra.dataset '{}' is not one of mnist, fashion-mnist, cifar10, folder", path, s.dataset);
  if (const std::string c = get(meta, std::string("extra.") + kClassesKey); !c.empty())
    s.classes = classes_from_json(c, path);
  if (const std::string p = get(meta, std::string("extra.") + kPreprocessKey); !p.empty())
    s.preprocess = preprocess_from_json(p, path);
  if (const std::string n = get(meta, "extra.num_classes"); !n.empty()) {
    CUDL_CHECK(n.size() <= 7 && n.find_first_not_of("0123456789") == std::string::npos && std::stoi(n) >= 1,
               "'{}': metadata extra.num_classes '{}' is not a whole number >= 1", path, n);
    s.num_classes = std::stoi(n);
  }
  if (const std::string t = get(meta, std::string("extra.") + kTestSplitKey); !t.empty()) {
    char* end = nullptr;
    s.test_split = std::strtod(t.c_str(), &end);
    CUDL_CHECK(end && *end == '\0' && s.test_split > 0 && s.test_split < 1,
               "'{}': metadata extra.test_split '{}' is not a fraction in (0, 1)", path, t);
  }
  if (const std::string seed = get(meta, "seed");
      !seed.empty() && seed.find_first_not_of("0123456789") == std::string::npos && seed.size() <= 20) {
    try {
      s.seed = std::stoull(seed);
    } catch (const std::exception&) {
      s.seed = 0;
    }
  }
  return s;
}

std::string resolve_model(const std::string& command, const std::string& given, const std::string& path,
                          const SavedRun& saved) {
  if (!given.empty()) {
    const bool both_builtin = !is_model_file(given) && !saved.model.empty() && !is_model_file(saved.model);
    CUDL_CHECK(!both_builtin || given == saved.model,
               "{}: '{}' holds a {} checkpoint, but --model is {} (leave --model out to use the checkpoint's)", command,
               path, saved.model, given);
    return given;
  }
  CUDL_CHECK(!saved.model.empty(), "{}: '{}' does not say which model it holds (a plain weights file): give --model",
             command, path);
  if (!is_model_file(saved.model)) return saved.model;
  std::error_code ec;
  if (fs::is_regular_file(saved.model, ec)) return saved.model;
  CUDL_CHECK(!saved.model_file.empty(),
             "{}: '{}' was trained with the model file '{}', which is not there, and holds no copy of it: give --model",
             command, path, saved.model);
  // The embedded copy, under the recorded file's name (model_spec names a nameless model by stem).
  std::string dir_template = (fs::temp_directory_path() / "cudl-model-XXXXXX").string();
  CUDL_CHECK(::mkdtemp(dir_template.data()) != nullptr, "{}: cannot create a temporary folder for '{}'s model file",
             command, path);
  temporary_files().paths.emplace_back(dir_template);
  const fs::path file = fs::path(dir_template) / fs::path(saved.model).filename();
  std::ofstream out(file, std::ios::binary);
  out << saved.model_file;
  out.close();
  CUDL_CHECK(out.good(), "{}: cannot write '{}'", command, file.string());
  return file.string();
}

}  // namespace cudl
