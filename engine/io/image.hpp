#pragma once
// Images on the host: decoding (PNG via libpng, JPEG via libjpeg-turbo; both hardened by fuzzing,
// which matters for photos from anywhere), encoding, resampling and the crops the datasets and
// style transfer need. Pixels are floats in [0,1], interleaved HWC; tensors are NCHW.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/tensor.hpp"

namespace cudl {

class Context;

struct Image {
  int width = 0, height = 0, channels = 0;  // channels: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
  std::vector<float> pixels;                // height * width * channels values, row-major HWC

  Image() = default;
  // A zero-filled image.
  Image(int width, int height, int channels);

  float& at(int y, int x, int c) { return pixels[index(y, x, c)]; }
  float at(int y, int x, int c) const { return pixels[index(y, x, c)]; }

 private:
  std::size_t index(int y, int x, int c) const {
    return (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) *
               static_cast<std::size_t>(channels) +
           static_cast<std::size_t>(c);
  }
};

// Decodes a PNG (1-16 bit, grey, grey+alpha, RGB, RGBA, palette; palettes and transparency chunks
// are expanded) or a JPEG (grey, YCbCr, CMYK). The format comes from the magic bytes, never from
// the extension. Missing, unreadable, unknown, corrupt or truncated files throw an Error naming
// the file.
Image read_image(const std::string& path);
// The same from bytes in memory; `name` is what error messages call them.
Image decode_image(std::span<const std::uint8_t> bytes, const std::string& name);

// Writes 8-bit PNG (.png) or JPEG at quality 95 (.jpg/.jpeg), chosen by the extension (case
// insensitive). Values are clamped to [0,1]. The file appears atomically: the image is encoded
// into a temporary file in the same folder which is then renamed over `path`, so a failure never
// leaves a partial file behind. JPEG drops alpha (it has none).
void write_image(const std::string& path, const Image& image);

// Grey -> RGB by replication, grey+alpha and RGBA -> RGB by dropping alpha, RGB -> copy.
Image to_rgb(const Image& image);

// Separable bicubic (Catmull-Rom, a = -0.5) resampling like Pillow's: when shrinking, the filter's
// support grows with the shrink factor so every input pixel contributes (antialiasing). An
// unchanged size returns an exact copy; results are clamped to [0,1] (the cubic overshoots).
Image resize(const Image& image, int width, int height);
// The width x height window at (x, y); it must lie inside the image.
Image crop(const Image& image, int x, int y, int width, int height);
// The centred width x height window (offsets rounded like torchvision's center_crop).
Image center_crop(const Image& image, int width, int height);
Image hflip(const Image& image);

// [1,C,H,W] f32 on ctx's device.
Tensor image_to_tensor(const Image& image, Context& ctx);
// From [1,C,H,W] or [C,H,W] f32 (C in 1..4) on any device. Values are copied as they are (write_image
// clamps), so a style-transfer result slightly outside [0,1] survives the round trip.
Image tensor_to_image(const Tensor& tensor, Context& ctx);

}  // namespace cudl
