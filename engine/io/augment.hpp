#pragma once
// Training-time augmentations and the per-sample decoding of listed image folders, each a pure
// function of (seed, epoch, sample): the loader's workers may run them in any order, on any
// thread, and a resumed run or another worker count sees the same pixels.
#include <cstdint>
#include <string>

#include "cudl/engine/philox.hpp"

namespace cudl {

struct Image;

// Host-side augmentations, applied in torchvision's order: a crop (pad-and-crop or random resized
// crop), then the left-right flip, then colour jitter. Each sample's draws come from (seed,
// epoch, sample index) alone. The first three fields keep their order (aggregate initialisation).
struct Augment {
  // Pad by crop_padding with zeros and take a random crop of the original size (CIFAR's recipe).
  bool random_crop = false;
  int crop_padding = 4;
  // Flip left-right with probability 1/2.
  bool hflip = false;
  // torchvision's RandomResizedCrop: a window of scale x the area and aspect ratio in
  // [ratio_min, ratio_max] (log-uniform), 10 tries, then the centred crop of the nearest allowed
  // ratio; resized to the output size.
  bool random_resized_crop = false;
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  // torchvision's ColorJitter without hue: factors uniform in [max(0, 1-s), 1+s] for brightness,
  // contrast and saturation (0: off), applied in a random order, each result clamped to [0, 1].
  float brightness = 0, contrast = 0, saturation = 0;

  bool color_jitter() const { return brightness > 0 || contrast > 0 || saturation > 0; }
  bool enabled() const { return random_crop || hflip || random_resized_crop || color_jitter(); }
};

// Throws naming the field when a setting is out of range (negative padding or jitter, scales
// outside (0, 1], ratios not positive and ordered).
void check_augment(const Augment& augment);

// Four random words for (seed, epoch, stream, index): Philox with the counter (index, epoch,
// stream), so every stream and sample has its own draws.
philox::Uint4 sample_draw(std::uint64_t seed, std::int64_t epoch, std::uint32_t stream, std::int64_t index);

// A crop window in pixels.
struct CropBox {
  int x = 0, y = 0, width = 0, height = 0;
};

// RandomResizedCrop.get_params for a width x height image and (seed, epoch, sample).
CropBox random_resized_crop_box(int width, int height, const Augment& augment, std::uint64_t seed, std::int64_t epoch,
                                std::int64_t sample);

// Colour jitter of one CHW sample in place (1 channel: brightness and contrast only; 3: all).
void color_jitter(float* chw, std::int64_t channels, std::int64_t height, std::int64_t width, const Augment& augment,
                  std::uint64_t seed, std::int64_t epoch, std::int64_t sample);

// Augments one CHW sample (`src` to `dst`, both channels*height*width floats) as the loader does
// for (seed, epoch, sample).
void augment_sample(const float* src, float* dst, std::int64_t channels, std::int64_t height, std::int64_t width,
                    const Augment& augment, std::uint64_t seed, std::int64_t epoch, std::int64_t sample);

// One listed image as a [3, size, size] CHW sample in `out`: decoded (a large JPEG at the smallest
// DCT scale whose shorter side stays >= size), converted to RGB, then without `augment` (or with
// one that crops nothing) the shorter side resized to size and the centre cropped, as evaluation
// and `cudl predict` see it; with random_resized_crop the random window resized to size x size.
// Flip and colour jitter follow. Errors name the file.
void load_folder_sample(const std::string& path, int size, const Augment* augment, std::uint64_t seed,
                        std::int64_t epoch, std::int64_t sample, float* out);

}  // namespace cudl
