#include "cudl/engine/device.hpp"

#include <charconv>

#include "cudl/engine/error.hpp"

namespace cudl {

Device Device::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "auto") return cuda_device_count() > 0 ? cuda(0) : cpu();
  if (text == "cuda") return cuda(0);
  if (text.starts_with("cuda:")) {
    int index = -1;
    auto digits = text.substr(5);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec == std::errc() && end == digits.data() + digits.size() && index >= 0) return cuda(index);
  }
  CUDL_THROW("device: cannot parse '{}': expected cpu, cuda, cuda:N or auto", text);
}

std::string Device::str() const { return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index); }

}  // namespace cudl
