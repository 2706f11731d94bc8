// libFuzzer target: the PNG (libpng) and JPEG (libjpeg-turbo) readers of engine/io/image.cpp over
// arbitrary bytes: whole, then (for a small image that decodes) at a reduced JPEG scale and through
// the resampling the loaders use. A pixel limit of 4 MP keeps each input fast; the limit itself
// is tested in tests/test_image.cpp. Every flaw must be a cudl::Error.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/image.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> bytes(data, size);
  cudl::ImageReadOptions options;
  options.max_pixels = std::uint64_t{1} << 22;
  try {
    const cudl::Image image = cudl::decode_image(bytes, "fuzz", options);
    if (static_cast<std::uint64_t>(image.width) * static_cast<std::uint64_t>(image.height) <= 1u << 16) {
      options.shorter_side = 3;
      (void)cudl::decode_image(bytes, "fuzz", options);
      const cudl::Image rgb = cudl::to_rgb(image);
      (void)cudl::resize_center_crop(rgb, 2 * rgb.width + 1, rgb.height + 2, 2, 2);
      (void)cudl::resize(rgb, 5, 3);
    }
  } catch (const cudl::Error&) {
  }
  return 0;
}
