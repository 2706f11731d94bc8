#pragma once
// Datasets and their loaders: IDX (MNIST, Fashion-MNIST) and the CIFAR-10 binary batches in
// memory, and folders of images, one subfolder per class, either listed (paths and labels; the
// DataLoader's workers decode each batch) or decoded whole. Every loader returns host tensors;
// the DataLoader (engine/io/loader.hpp) moves batches to the device.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/tensor.hpp"

namespace cudl {

// A listed image folder's samples: decoded only when a loader asks for them.
struct ImageFiles {
  std::vector<std::string> paths;  // one per sample, in the dataset's order
  int size = 0;                    // each decodes to [3, size, size]
};

struct Dataset {
  // In memory: [N,C,H,W] f32 on the CPU, values in [0,1]. Undefined for a listed dataset, whose
  // `files` say where each sample is; image_shape() is right for both.
  Tensor images;
  Tensor labels;  // [N] i32 on the CPU, in [0, num_classes); in memory for listed datasets too
  std::shared_ptr<const ImageFiles> files;  // set for a listed image folder
  int num_classes = 0;
  std::string name;
  std::vector<std::string> class_names;  // filled for image folders; empty otherwise

  std::int64_t size() const { return labels.defined() ? labels.dim(0) : 0; }
  bool listed() const { return files != nullptr; }
  // [N,C,H,W] of the images, decoded or not ([0] when there are none).
  Shape image_shape() const;
  // The bytes the decoded images take (or would take) as f32.
  std::size_t image_bytes() const;
};

// The samples at `indices` (in that order) as a new dataset of the same kind: in-memory images
// are copied, a listed dataset's paths.
Dataset select_samples(const Dataset& data, const std::vector<std::int64_t>& indices);
// A listed dataset decoded into memory the way evaluation sees it (the dataset itself otherwise).
Dataset decode_all(const Dataset& data);

struct DataSplits {
  Dataset train, test;
  // A flat image folder (DIR/<class>/*, no train/ or test/): every image is in `train` and `test`
  // is empty; the caller holds out a test set (cudl train --test-split, with split_validation).
  bool flat = false;
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
// splits must have the same classes), listed: paths, labels and class names, nothing decoded, so
// memory does not grow with the number of images. The DataLoader decodes each image, converts it
// to RGB and (without augmentation) resizes its shorter side to `size` and centre-crops size x size.
// A folder with neither train/ nor test/ but class folders, dir/<class>/*.{png,jpg,jpeg} as people
// keep them (Keras' image_dataset_from_directory), is listed whole into `train`, with `flat` set.
DataSplits list_image_folder(const std::string& dir, int size);
// The same, decoded whole into memory (small folders, tests, tools that need every pixel at once).
DataSplits load_image_folder(const std::string& dir, int size);

}  // namespace cudl
