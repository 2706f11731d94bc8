// Generates a catdog-like folder for the pipeline bench: dir/{train,test}/{cat,dog}/NNNNN.jpg,
// coloured blobs on noise, each image a little larger than `side` so decoding also resizes.
// Usage: make_folder DIR COUNT SIDE
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "cudl/engine/io/image.hpp"
int main(int argc, char** argv) {
  const std::string dir = argv[1];
  const int n = std::atoi(argv[2]), side = std::atoi(argv[3]);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  for (int i = 0; i < n; ++i) {
    const bool test = (i / 2) % 10 == 0;
    const int cls = i % 2;
    const std::string folder = dir + (test ? "/test/" : "/train/") + (cls ? "dog" : "cat");
    std::filesystem::create_directories(folder);
    const int w = side + static_cast<int>(u(rng) * side * 0.3f), h = side + static_cast<int>(u(rng) * side * 0.2f);
    cudl::Image img(w, h, 3);
    const float cx = u(rng) * w, cy = u(rng) * h, r = (0.2f + 0.3f * u(rng)) * side;
    const float c0 = u(rng), c1 = u(rng), c2 = u(rng);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const float d = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (r * r);
        const float inside = d < 1 ? 1.0f : 0.0f;
        const float noise = 0.15f * u(rng);
        img.at(y, x, 0) = inside * (cls ? 0.9f : c0) + (1 - inside) * 0.3f * c1 + noise;
        img.at(y, x, 1) = inside * (cls ? c1 : 0.8f) + (1 - inside) * 0.4f * c2 + noise;
        img.at(y, x, 2) = inside * c2 + (1 - inside) * (0.5f * static_cast<float>(y) / h) + noise;
      }
    char name[32];
    std::snprintf(name, sizeof name, "/%05d.jpg", i);
    cudl::write_image(folder + name, img);
  }
}
