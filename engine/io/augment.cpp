#include "cudl/engine/io/augment.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/image.hpp"

namespace cudl {

namespace {

// Separate Philox streams per kind of draw, so adding one augmentation shifts no other's draws
// (the pad-and-crop and flip draws are those of the loader before the others existed).
constexpr std::uint32_t kAugmentStream = 0x4147;      // "AG": pad-and-crop offsets, flip
constexpr std::uint32_t kColorJitterStream = 0x434A;  // "CJ"
constexpr std::uint32_t kResizedCropStream = 0x5243;  // "RC" + try (0..9)
constexpr int kResizedCropTries = 10;                 // torchvision's

// A uniform draw in [lo, hi) from 32 random bits.
double uniform(std::uint32_t bits, double lo, double hi) { return lo + (hi - lo) * (bits * 0x1p-32); }

// out = in padded with zeros by the crop offsets and mirrored when `flip`: the CIFAR recipe.
void pad_crop_flip(const float* src, float* dst, std::int64_t channels, std::int64_t height, std::int64_t width,
                   std::int64_t dx, std::int64_t dy, bool flip) {
  for (std::int64_t c = 0; c < channels; ++c) {
    const float* in = src + c * height * width;
    float* out = dst + c * height * width;
    for (std::int64_t y = 0; y < height; ++y) {
      std::int64_t sy = y + dy;
      for (std::int64_t x = 0; x < width; ++x) {
        std::int64_t sx = (flip ? width - 1 - x : x) + dx;
        bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
        out[y * width + x] = inside ? in[sy * width + sx] : 0.0f;
      }
    }
  }
}

// HWC image pixels into a CHW buffer.
void image_to_chw(const Image& image, float* out) {
  const std::size_t plane = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height);
  const auto channels = static_cast<std::size_t>(image.channels);
  for (std::size_t p = 0; p < plane; ++p)
    for (std::size_t c = 0; c < channels; ++c) out[c * plane + p] = image.pixels[p * channels + c];
}

// A random resized crop of a CHW sample, back at its own size.
void resized_crop_chw(const float* src, float* dst, std::int64_t channels, std::int64_t height, std::int64_t width,
                      const Augment& augment, std::uint64_t seed, std::int64_t epoch, std::int64_t sample) {
  CUDL_CHECK(channels >= 1 && channels <= 4, "augment: random resized crop needs 1 to 4 channels, got {}", channels);
  Image image(static_cast<int>(width), static_cast<int>(height), static_cast<int>(channels));
  const std::size_t plane = static_cast<std::size_t>(width * height);
  const auto c_count = static_cast<std::size_t>(channels);
  for (std::size_t p = 0; p < plane; ++p)
    for (std::size_t c = 0; c < c_count; ++c) image.pixels[p * c_count + c] = src[c * plane + p];
  const CropBox box = random_resized_crop_box(image.width, image.height, augment, seed, epoch, sample);
  image_to_chw(resize(crop(image, box.x, box.y, box.width, box.height), image.width, image.height), dst);
}

// Rec. 601 luma, as torchvision's rgb_to_grayscale.
float luma(float r, float g, float b) { return 0.299f * r + 0.587f * g + 0.114f * b; }

}  // namespace

void check_augment(const Augment& a) {
  CUDL_CHECK(!a.random_crop || a.crop_padding >= 0, "augment: crop padding {} must be >= 0", a.crop_padding);
  CUDL_CHECK(!a.random_resized_crop || (a.scale_min > 0 && a.scale_min <= a.scale_max && a.scale_max <= 1),
             "augment: random resized crop scale ({}, {}) must satisfy 0 < min <= max <= 1", a.scale_min, a.scale_max);
  CUDL_CHECK(!a.random_resized_crop || (a.ratio_min > 0 && a.ratio_min <= a.ratio_max),
             "augment: random resized crop ratio ({}, {}) must satisfy 0 < min <= max", a.ratio_min, a.ratio_max);
  CUDL_CHECK(a.brightness >= 0 && a.contrast >= 0 && a.saturation >= 0 && std::isfinite(a.brightness) &&
                 std::isfinite(a.contrast) && std::isfinite(a.saturation),
             "augment: colour jitter strengths (brightness {}, contrast {}, saturation {}) must be finite and >= 0",
             a.brightness, a.contrast, a.saturation);
}

philox::Uint4 sample_draw(std::uint64_t seed, std::int64_t epoch, std::uint32_t stream, std::int64_t index) {
  auto e = static_cast<std::uint64_t>(epoch);
  auto i = static_cast<std::uint64_t>(index);
  philox::Uint4 counter{static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32),
                        static_cast<std::uint32_t>(e), stream | (static_cast<std::uint32_t>(e >> 32) << 16)};
  return philox::philox4x32_10(counter, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

CropBox random_resized_crop_box(int width, int height, const Augment& augment, std::uint64_t seed, std::int64_t epoch,
                                std::int64_t sample) {
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(augment.ratio_min), log_hi = std::log(augment.ratio_max);
  for (int t = 0; t < kResizedCropTries; ++t) {
    const philox::Uint4 r = sample_draw(seed, epoch, kResizedCropStream + static_cast<std::uint32_t>(t), sample);
    const double target = area * uniform(r.x, augment.scale_min, augment.scale_max);
    const double ratio = std::exp(uniform(r.y, log_lo, log_hi));
    const auto w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const auto h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      CropBox box{0, 0, w, h};
      box.y = static_cast<int>(r.z % static_cast<std::uint32_t>(height - h + 1));
      box.x = static_cast<int>(r.w % static_cast<std::uint32_t>(width - w + 1));
      return box;
    }
  }
  // The centred crop with the whole image's width or height at the nearest allowed ratio.
  const double in_ratio = static_cast<double>(width) / height;
  CropBox box{0, 0, width, height};
  if (in_ratio < augment.ratio_min) {
    box.height = std::clamp(static_cast<int>(std::lround(width / augment.ratio_min)), 1, height);
  } else if (in_ratio > augment.ratio_max) {
    box.width = std::clamp(static_cast<int>(std::lround(height * augment.ratio_max)), 1, width);
  }
  box.x = (width - box.width) / 2;
  box.y = (height - box.height) / 2;
  return box;
}

void color_jitter(float* chw, std::int64_t channels, std::int64_t height, std::int64_t width, const Augment& augment,
                  std::uint64_t seed, std::int64_t epoch, std::int64_t sample) {
  if (!augment.color_jitter()) return;
  const philox::Uint4 r = sample_draw(seed, epoch, kColorJitterStream, sample);
  auto factor = [](std::uint32_t bits, float strength) {
    return static_cast<float>(uniform(bits, std::max(0.0, 1.0 - strength), 1.0 + strength));
  };
  const float brightness = factor(r.x, augment.brightness), contrast = factor(r.y, augment.contrast),
              saturation = factor(r.z, augment.saturation);
  const auto plane = static_cast<std::size_t>(height * width);
  const auto values = plane * static_cast<std::size_t>(channels);
  const bool rgb = channels == 3;
  auto blend = [](float x, float f, float towards) { return std::clamp(f * x + (1.0f - f) * towards, 0.0f, 1.0f); };
  auto gray_at = [&](std::size_t p) { return rgb ? luma(chw[p], chw[plane + p], chw[2 * plane + p]) : chw[p]; };
  // The three adjustments in one of their 6 orders (torchvision draws a permutation too).
  static constexpr int kOrders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  for (int op : kOrders[r.w % 6]) {
    if (op == 0 && augment.brightness > 0) {
      for (std::size_t i = 0; i < values; ++i) chw[i] = std::clamp(chw[i] * brightness, 0.0f, 1.0f);
    } else if (op == 1 && augment.contrast > 0) {
      double sum = 0;
      for (std::size_t p = 0; p < plane; ++p) sum += gray_at(p);
      const auto mean = static_cast<float>(sum / static_cast<double>(plane));
      for (std::size_t i = 0; i < values; ++i) chw[i] = blend(chw[i], contrast, mean);
    } else if (op == 2 && augment.saturation > 0 && rgb) {
      for (std::size_t p = 0; p < plane; ++p) {
        const float gray = gray_at(p);
        for (std::size_t c = 0; c < 3; ++c) chw[c * plane + p] = blend(chw[c * plane + p], saturation, gray);
      }
    }
  }
}

void augment_sample(const float* src, float* dst, std::int64_t channels, std::int64_t height, std::int64_t width,
                    const Augment& augment, std::uint64_t seed, std::int64_t epoch, std::int64_t sample) {
  const auto values = static_cast<std::size_t>(channels * height * width);
  std::vector<float> scratch;
  const float* in = src;
  if (augment.random_resized_crop) {
    scratch.resize(values);
    resized_crop_chw(src, scratch.data(), channels, height, width, augment, seed, epoch, sample);
    in = scratch.data();
  }
  if (augment.random_crop || augment.hflip) {
    if (in == dst) {  // in place: keep the source
      scratch.assign(in, in + values);
      in = scratch.data();
    }
    const philox::Uint4 r = sample_draw(seed, epoch, kAugmentStream, sample);
    std::int64_t dx = 0, dy = 0;
    if (augment.random_crop && augment.crop_padding > 0) {
      std::uint32_t span = 2u * static_cast<std::uint32_t>(augment.crop_padding) + 1u;
      dx = static_cast<std::int64_t>(r.x % span) - augment.crop_padding;
      dy = static_cast<std::int64_t>(r.y % span) - augment.crop_padding;
    }
    pad_crop_flip(in, dst, channels, height, width, dx, dy, augment.hflip && (r.z & 1u) != 0);
  } else if (in != dst) {
    std::memcpy(dst, in, values * sizeof(float));
  }
  color_jitter(dst, channels, height, width, augment, seed, epoch, sample);
}

void load_folder_sample(const std::string& path, int size, const Augment* augment, std::uint64_t seed,
                        std::int64_t epoch, std::int64_t sample, float* out) {
  ImageReadOptions options;
  options.shorter_side = size;  // the resize below only shrinks a JPEG decoded at a reduced scale
  const Image rgb = to_rgb(read_image(path, options));
  if (augment != nullptr && augment->random_resized_crop) {
    const CropBox box = random_resized_crop_box(rgb.width, rgb.height, *augment, seed, epoch, sample);
    image_to_chw(resize(crop(rgb, box.x, box.y, box.width, box.height), size, size), out);
  } else {
    image_to_chw(resize_shorter_center_crop(rgb, size, path), out);
  }
  if (augment == nullptr) return;
  Augment rest = *augment;
  rest.random_resized_crop = false;  // done above, on the full-resolution image
  if (rest.enabled()) augment_sample(out, out, 3, size, size, rest, seed, epoch, sample);
}

}  // namespace cudl
