#include "cudl/engine/error.hpp"

namespace cudl::detail {

std::string_view short_file(const char* file) {
  // Paths arrive absolute from the compiler; keep them relative to the source tree's top folders.
  std::string_view path(file);
  for (std::string_view top : {"engine/", "kernels/", "layers/", "models/", "tools/", "tests/"}) {
    auto pos = path.rfind(top);
    if (pos != std::string_view::npos) return path.substr(pos);
  }
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string with_location(std::string message, const char* file, int line) {
  return fmt::format("{} [{}:{}]", message, short_file(file), line);
}

}  // namespace cudl::detail
