#pragma once
// In-memory datasets and their loaders: IDX (MNIST, Fashion-MNIST), the CIFAR-10 binary batches,
// and folders of images, one subfolder per class. Every loader returns host tensors; the
// DataLoader (engine/io/loader.hpp) moves batches to the device.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/tensor.hpp"

namespace cudl {

struct Dataset {
  Tensor images;  // [N,C,H,W] f32 on the CPU, values in [0,1]
  Tensor labels;  // [N] i32 on the CPU, in [0, num_classes)
  int num_classes = 0;
  std::string name;
  std::vector<std::string> class_names;  // filled by load_image_folder; empty otherwise

  std::int64_t size() const { return labels.defined() ? labels.dim(0) : 0; }
};

struct DataSplits {
  Dataset train, test;
};

// An IDX3 ubyte image file (magic 2051: count, rows, cols, then bytes) and its IDX1 ubyte label
// file (magic 2049), raw or gzip (detected by the 1f 8b magic, not the name). Errors name the file
// for a wrong magic number, dims whose product overflows, a size other than the header promises, a
// label count that differs from the image count, and labels >= num_classes. The header is read
// and checked before the rest of a gzip is inflated, and inflation stops one byte past the size
// the header promises, so a small file that inflates to gigabytes is refused early.
Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes = 10);
// The same from the files' bytes in memory; the names are what messages call them.
Dataset decode_idx(std::span<const std::uint8_t> images, std::span<const std::uint8_t> labels,
                   const std::string& images_name, const std::string& labels_name, int num_classes = 10);

// MNIST or Fashion-MNIST (same file names): train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte in `dir`, each optionally with .gz.
DataSplits load_mnist_dir(const std::string& dir);

// CIFAR-10 binary version: data_batch_1..5.bin and test_batch.bin in `dir` or in its
// cifar-10-batches-bin subfolder; each record is a label byte and 3072 bytes of 32x32 R, G, B planes.
// Files may be gzip; a file holding (or inflating to) more than 60000 records is refused.
DataSplits load_cifar10_dir(const std::string& dir);
// One batch file's bytes (raw or gzip) as a dataset; `name` is what messages call them.
Dataset decode_cifar10_batch(std::span<const std::uint8_t> bytes, const std::string& name);

// dir/train/<class>/*.{png,jpg,jpeg} and dir/test/<class>/... (class folders sorted by name; both
// splits must have the same classes). Each image is decoded, converted to RGB, resized so its
// shorter side is `size`, then centre-cropped to size x size.
DataSplits load_image_folder(const std::string& dir, int size);

}  // namespace cudl
