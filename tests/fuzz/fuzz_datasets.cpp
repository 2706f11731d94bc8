// libFuzzer target: the IDX and CIFAR-10 readers (engine/io/datasets.cpp), raw or gzip, over
// arbitrary bytes. The first byte picks the reader: even, one CIFAR-10 batch file (the rest of the
// input); odd, an IDX pair, the next two bytes giving the images file's length (little-endian)
// and the labels file taking what follows it. Every flaw must be a cudl::Error.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/datasets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::span<const std::uint8_t> rest(data + 1, size - 1);
  try {
    if (data[0] % 2 == 0) {
      (void)cudl::decode_cifar10_batch(rest, "fuzz-cifar");
    } else if (rest.size() >= 2) {
      std::size_t images = std::min<std::size_t>(rest[0] | (std::size_t{rest[1]} << 8), rest.size() - 2);
      (void)cudl::decode_idx(rest.subspan(2, images), rest.subspan(2 + images), "fuzz-images", "fuzz-labels",
                             1 + data[0] / 2 % 256);
    }
  } catch (const cudl::Error&) {
  }
  return 0;
}
