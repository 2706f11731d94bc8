#pragma once
// Images on the host: decoding (PNG via libpng, JPEG via libjpeg-turbo; both hardened by fuzzing,
// which matters for photos from anywhere), encoding, resampling and the crops the datasets and
// style transfer need. Pixels are floats in [0,1], interleaved HWC; tensors are NCHW.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/tensor.hpp"

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

// The pixel limit when neither ImageReadOptions nor CUDL_MAX_PIXELS sets one: 100 megapixels
// (a 12000x8000 photo; 1.2 GB as RGB floats).
constexpr std::uint64_t kDefaultMaxImagePixels = 100'000'000;
// CUDL_MAX_PIXELS from the environment (a positive integer) or kDefaultMaxImagePixels; another
// value is an Error naming the variable.
std::uint64_t image_pixel_limit();

struct ImageReadOptions {
  // The most pixels (width x height) an image may claim; 0: image_pixel_limit(). Checked from the
  // header before anything is decoded: a few hundred bytes can claim 30000x10000 pixels.
  std::uint64_t max_pixels = 0;
  // Sizes the caller will shrink the image to, when it needs no more; 0: no such need. A JPEG
  // larger than needed is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling: a fraction of
  // the time and memory) while its longest side stays >= longest_side and its shorter side
  // >= shorter_side, so the caller's resize still only shrinks. PNGs are always decoded whole.
  int longest_side = 0;
  int shorter_side = 0;
};

// Decodes a PNG (1-16 bit, grey, grey+alpha, RGB, RGBA, palette; palettes and transparency chunks
// are expanded) or a JPEG (grey, YCbCr, CMYK). The format comes from the magic bytes, never from
// the extension. Missing, unreadable, unknown, corrupt or truncated files, and images over the
// pixel limit, throw an Error naming the file (and for the limit, the claimed size and the limit).
Image read_image(const std::string& path, const ImageReadOptions& options = {});
// The same from bytes in memory; `name` is what error messages call them.
Image decode_image(std::span<const std::uint8_t> bytes, const std::string& name, const ImageReadOptions& options = {});

// Writes 8-bit PNG (.png) or JPEG at quality 95 (.jpg/.jpeg), chosen by the extension (case
// insensitive). Values are clamped to [0,1]. The file appears atomically: the image is encoded
// into a temporary file in the same folder which is then renamed over `path`, so a failure never
// leaves a partial file behind. JPEG drops alpha (it has none).
void write_image(const std::string& path, const Image& image);

// Grey -> RGB by replication, grey+alpha and RGBA -> RGB by dropping alpha, RGB -> copy.
Image to_rgb(const Image& image);

// Separable bicubic (Catmull-Rom, a = -0.5) resampling like Pillow's: when shrinking, the filter's
// support grows with the shrink factor so every input pixel contributes (antialiasing). An
// unchanged size returns an exact copy; results are clamped to [0,1] (the cubic overshoots). A
// target over image_pixel_limit() is refused before anything is allocated.
Image resize(const Image& image, int width, int height);
// center_crop(resize(image, width, height), crop_width, crop_height), the same values computed for
// the window alone: resizing a 3000x1 image to a shorter side of 256 would make 768000x256 pixels
// to keep 224x224 of them.
Image resize_center_crop(const Image& image, int width, int height, int crop_width, int crop_height);
// The shorter side resized to `size` (aspect ratio kept), then the centred size x size window,
// computed for the window alone (evaluation's preprocessing of image folders). `name` is what the
// error for an image too elongated to resize calls it.
Image resize_shorter_center_crop(const Image& image, int size, const std::string& name);
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
