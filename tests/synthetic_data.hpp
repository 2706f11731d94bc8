#pragma once
// Small synthetic datasets for the training tests, in memory and as the IDX files `cudl train
// --dataset mnist` reads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/philox.hpp"

namespace cudl::testing {

// n images of `classes` classes: each class is a fixed random pattern, each image that pattern
// plus noise (so the classes are separable but no two images are equal). Values in [0, 1].
inline Dataset synthetic_patterns(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, int classes,
                                  std::uint64_t seed, Context& ctx) {
  const std::int64_t pixels = c * h * w;
  std::vector<float> images(static_cast<std::size_t>(n * pixels));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int32_t>(i % classes);
    labels[static_cast<std::size_t>(i)] = label;
    for (std::int64_t p = 0; p < pixels; ++p) {
      const float pattern = philox::uniform(static_cast<std::uint64_t>(label * pixels + p), 1234);
      const float noise = philox::uniform(static_cast<std::uint64_t>(i * pixels + p), seed) - 0.5f;
      images[static_cast<std::size_t>(i * pixels + p)] = std::clamp(0.7f * pattern + 0.3f * (noise + 0.5f), 0.f, 1.f);
    }
  }
  Dataset d;
  d.images = Tensor::from_host(images, {n, c, h, w}, ctx);
  d.labels = Tensor::from_host(std::span<const std::int32_t>(labels), {n}, ctx);
  d.num_classes = classes;
  d.name = "synthetic";
  return d;
}

// One IDX file of d: its images (IDX3 ubyte) or its labels (IDX1).
inline void write_idx_file(const std::string& path, const Dataset& d, Context& ctx, bool labels) {
  std::ofstream out(path, std::ios::binary);
  auto be32 = [&](std::uint32_t v) {
    const unsigned char b[4] = {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16),
                                static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
    out.write(reinterpret_cast<const char*>(b), 4);
  };
  const auto n = static_cast<std::uint32_t>(d.size());
  if (labels) {
    be32(2049);
    be32(n);
    for (std::int32_t l : d.labels.to_int_vector(ctx)) out.put(static_cast<char>(l));
  } else {
    be32(2051);
    be32(n);
    be32(static_cast<std::uint32_t>(d.images.dim(2)));
    be32(static_cast<std::uint32_t>(d.images.dim(3)));
    for (float v : d.images.to_vector(ctx))
      out.put(static_cast<char>(static_cast<unsigned char>(std::lround(v * 255))));
  }
}

// A small MNIST-shaped dataset (`train` and `test` images, 10 classes) in IDX files in `dir`.
inline void write_synthetic_mnist_dir(const std::string& dir, Context& ctx, std::int64_t train = 320,
                                      std::int64_t test = 100) {
  const Dataset tr = synthetic_patterns(train, 1, 28, 28, 10, 1, ctx),
                te = synthetic_patterns(test, 1, 28, 28, 10, 2, ctx);
  write_idx_file(dir + "/train-images-idx3-ubyte", tr, ctx, false);
  write_idx_file(dir + "/train-labels-idx1-ubyte", tr, ctx, true);
  write_idx_file(dir + "/t10k-images-idx3-ubyte", te, ctx, false);
  write_idx_file(dir + "/t10k-labels-idx1-ubyte", te, ctx, true);
}

// MNIST's four IDX files in `dir` (created): n training and n / 2 test 28x28 images, byte p of
// image i being pixel(i, p), labels i % 10.
inline void write_mnist_bytes_dir(const std::string& dir, int n, const std::function<std::uint8_t(int, int)>& pixel) {
  std::filesystem::create_directories(dir);
  Context cpu{Device::cpu()};
  for (auto [prefix, count] : {std::pair<std::string, int>{"train", n}, {"t10k", n / 2}}) {
    std::vector<float> values;
    std::vector<std::int32_t> labels;
    for (int i = 0; i < count; ++i) {
      for (int p = 0; p < 28 * 28; ++p) values.push_back(static_cast<float>(pixel(i, p)) / 255.0f);
      labels.push_back(i % 10);
    }
    Dataset d;
    d.images = Tensor::from_host(values, {count, 1, 28, 28}, cpu);
    d.labels = Tensor::from_host(std::span<const std::int32_t>(labels), {count}, cpu);
    d.num_classes = 10;
    write_idx_file(dir + "/" + prefix + "-images-idx3-ubyte", d, cpu, false);
    write_idx_file(dir + "/" + prefix + "-labels-idx1-ubyte", d, cpu, true);
  }
}

}  // namespace cudl::testing
