#include "cudl/models/zoo/imagenet_classes.hpp"

#include <sstream>

#include "cudl/engine/error.hpp"

namespace cudl {

// The text of models/zoo/imagenet_classes.txt, in a source file CMake generates at configure time.
extern const char* const kImagenetClassesText;

const std::vector<std::string>& imagenet_class_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    std::istringstream in(kImagenetClassesText);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.push_back(line);
    CUDL_CHECK(out.size() == 1000, "imagenet_class_names: the bundled list has {} names, expected 1000", out.size());
    return out;
  }();
  return names;
}

std::vector<std::string> default_class_names(int classes) {
  if (classes == 1000) return imagenet_class_names();
  return {};
}

}  // namespace cudl
