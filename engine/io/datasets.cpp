#include "cudl/engine/io/datasets.hpp"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <span>
#include <system_error>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/augment.hpp"
#include "cudl/engine/io/files.hpp"
#include "cudl/engine/io/image.hpp"

namespace cudl {

namespace fs = std::filesystem;

namespace {

constexpr std::uint32_t kIdxImagesMagic = 2051;  // 0x00000803: unsigned bytes, 3 dimensions
constexpr std::uint32_t kIdxLabelsMagic = 2049;  // 0x00000801: unsigned bytes, 1 dimension

std::uint32_t big_endian_u32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

std::string base_name(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

// Dataset tensors live on the host; a CPU context is cheap (no stream, no handles).
Context& host_context() {
  static thread_local Context ctx(Device::cpu());
  return ctx;
}

// An IDX ubyte file: its dimensions and the values after the header.
struct IdxData {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> values;
};

// Reads the header (magic 0x000008NN, N big-endian u32 dims) before inflating anything else, checks
// that the dims multiply without overflow to a size the data can hold, then reads exactly that
// many values: a gzip that would inflate past the promised size is stopped there.
IdxData decode_idx_file(std::span<const std::uint8_t> bytes, const std::string& name, std::uint32_t magic_wanted,
                        const char* what) {
  const std::size_t rank = magic_wanted & 0xff;
  const std::size_t header_bytes = 4 + 4 * rank;
  io::ByteStream in(bytes, name, "load_idx");
  std::vector<std::uint8_t> header;
  in.read(4, header);
  CUDL_CHECK(header.size() == 4, "load_idx: '{}' holds {} bytes, too few for an IDX{} header ({} bytes)", name,
             header.size(), rank, header_bytes);
  std::uint32_t magic = big_endian_u32(header.data());
  CUDL_CHECK(magic == magic_wanted, "load_idx: '{}' has magic number {}, expected {} ({}){}", name, magic, magic_wanted,
             what,
             magic == kIdxLabelsMagic   ? "; it looks like a label file"
             : magic == kIdxImagesMagic ? "; it looks like an image file"
                                        : "");
  in.read(header_bytes - 4, header);
  CUDL_CHECK(header.size() == header_bytes,
             "load_idx: '{}' is truncated: {} bytes, too few for an IDX{} header ({} bytes)", name, header.size(), rank,
             header_bytes);
  IdxData out;
  std::uint64_t values = 1;
  bool overflow = false;
  for (std::size_t i = 0; i < rank; ++i) {
    out.dims.push_back(big_endian_u32(header.data() + 4 + 4 * i));
    overflow = overflow || __builtin_mul_overflow(values, static_cast<std::uint64_t>(out.dims.back()), &values);
  }
  std::string dims = fmt::format("{}", fmt::join(out.dims, "x"));
  // Every dim is < 2^32, so a product that does not overflow 64 bits is a size the host can name;
  // it must still fit in the data (raw size, or what the gzip could possibly inflate to).
  CUDL_CHECK(!overflow && values <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - header_bytes,
             "load_idx: '{}' declares dims {}, whose product overflows a 64-bit size", name, dims);
  const std::uint64_t want = header_bytes + values;
  CUDL_CHECK(want <= in.max_size(), "load_idx: '{}' is truncated: its header promises {} bytes (dims {}), more than {}",
             name, want, dims,
             in.is_gzip() ? fmt::format("a {}-byte gzip file can inflate to", bytes.size())
                          : fmt::format("its {} bytes", bytes.size()));
  in.read(static_cast<std::size_t>(values), out.values);
  CUDL_CHECK(out.values.size() == values, "load_idx: '{}' is truncated: {} bytes, its header promises {} (dims {})",
             name, header_bytes + out.values.size(), want, dims);
  // One byte past the promise is enough to know there is more; nothing beyond it is inflated.
  if (!in.at_end()) {
    if (in.is_gzip())
      CUDL_THROW(
          "load_idx: '{}' is too long (trailing bytes): it inflates past the {} bytes its header promises (dims {})",
          name, want, dims);
    CUDL_THROW("load_idx: '{}' is too long (trailing bytes): {} bytes, its header promises {} (dims {})", name,
               bytes.size(), want, dims);
  }
  return out;
}

// Labels as an i32 tensor, each checked against num_classes; `where(i)` names sample i in errors.
template <class Where>
Tensor make_labels(const std::vector<std::uint8_t>& values, int num_classes, Where&& where) {
  Tensor labels = Tensor::empty({static_cast<std::int64_t>(values.size())}, host_context(), DType::i32);
  std::int32_t* out = labels.data<std::int32_t>();
  for (std::size_t i = 0; i < values.size(); ++i) {
    CUDL_CHECK(values[i] < num_classes, "{}: label {} is out of range (expected 0..{})", where(i), values[i],
               num_classes - 1);
    out[i] = values[i];
  }
  return labels;
}

// A file in `dir` named `name` or `name.gz`; empty when neither exists.
std::string find_maybe_gz(const fs::path& dir, const std::string& name) {
  std::error_code ec;
  for (const std::string& candidate : {name, name + ".gz"}) {
    fs::path p = dir / candidate;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return {};
}

std::string join(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? separator : "") + parts[i];
  return out;
}

void check_directory(const std::string& dir, const char* who) {
  std::error_code ec;
  CUDL_CHECK(fs::is_directory(dir, ec), "{}: '{}' is not a directory", who, dir);
}

// ------------------------------------------------------------------------------------- CIFAR-10

constexpr std::size_t kCifarImageBytes = 3 * 32 * 32;
constexpr std::size_t kCifarRecordBytes = 1 + kCifarImageBytes;
// An official batch holds 10000 records; a file may hold all 60000 of CIFAR-10, never more. The
// cap stops a small gzip that inflates without end (the format has no header to promise a size).
constexpr std::size_t kCifarMaxRecords = 60000;

// One batch file's records (raw or gzip), checked: a whole number of records, labels 0..9.
std::vector<std::uint8_t> decode_cifar_file(std::span<const std::uint8_t> bytes, const std::string& name) {
  io::ByteStream in(bytes, name, "load_cifar10_dir");
  std::vector<std::uint8_t> b;
  in.read(kCifarMaxRecords * kCifarRecordBytes, b);
  CUDL_CHECK(in.at_end(), "load_cifar10_dir: '{}' holds more than {} records ({} bytes{}), the most one file may hold",
             name, kCifarMaxRecords, kCifarMaxRecords * kCifarRecordBytes, in.is_gzip() ? " inflated" : "");
  CUDL_CHECK(!b.empty() && b.size() % kCifarRecordBytes == 0,
             "load_cifar10_dir: '{}' holds {} bytes, expected a positive multiple of {} (label byte + 32x32x3 image)",
             name, b.size(), kCifarRecordBytes);
  for (std::size_t r = 0; r < b.size() / kCifarRecordBytes; ++r) {
    const std::uint8_t label = b[r * kCifarRecordBytes];
    CUDL_CHECK(label < 10, "load_cifar10_dir: '{}' record {}: label {} is out of range (expected 0..9)", name, r,
               label);
  }
  return b;
}

// Records of several files, in order, as one dataset.
Dataset cifar_dataset(const std::vector<std::vector<std::uint8_t>>& files, const std::string& name) {
  std::size_t records = 0;
  for (const auto& b : files) records += b.size() / kCifarRecordBytes;
  Dataset d;
  d.name = name;
  d.num_classes = 10;
  d.images = Tensor::empty({static_cast<std::int64_t>(records), 3, 32, 32}, host_context());
  d.labels = Tensor::empty({static_cast<std::int64_t>(records)}, host_context(), DType::i32);
  float* images = d.images.data<float>();
  std::int32_t* labels = d.labels.data<std::int32_t>();
  std::size_t n = 0;
  for (const auto& b : files) {
    for (std::size_t r = 0; r < b.size() / kCifarRecordBytes; ++r, ++n) {
      const std::uint8_t* record = b.data() + r * kCifarRecordBytes;
      labels[n] = record[0];
      // The record already holds the R, G and B planes one after another: CHW.
      float* out = images + n * kCifarImageBytes;
      for (std::size_t i = 0; i < kCifarImageBytes; ++i) out[i] = static_cast<float>(record[1 + i]) / 255.0f;
    }
  }
  return d;
}

Dataset load_cifar_files(const std::vector<std::string>& paths, const std::string& name) {
  std::vector<std::vector<std::uint8_t>> files;
  for (const std::string& path : paths)
    files.push_back(decode_cifar_file(io::read_file(path, "load_cifar10_dir"), path));
  return cifar_dataset(files, name);
}

// ---------------------------------------------------------------------------------- image folder

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::vector<std::string> sorted_entries(const fs::path& dir, bool directories) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  CUDL_CHECK(!ec, "load_image_folder: cannot list '{}': {}", dir.string(), ec.message());
  for (const fs::directory_entry& entry : it) {
    // Hidden entries (.ipynb_checkpoints, .DS_Store) are tool litter, not classes or samples.
    if (entry.path().filename().string().starts_with('.')) continue;
    if (directories ? entry.is_directory(ec) : (entry.is_regular_file(ec) && is_image_name(entry.path()))) {
      names.push_back(entry.path().filename().string());
    } else if (!directories && is_image_name(entry.path())) {
      // An image name that is no readable file stops training (as an unreadable image does), not
      // skipped without a word: a dangling link, a link loop, a FIFO, a device or a folder.
      CUDL_THROW(
          "load_image_folder: '{}' is named as an image but is not a regular file (a dangling or looping "
          "link, a FIFO, a device or a folder): remove or fix it",
          entry.path().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

Dataset list_split(const fs::path& split_dir, const std::vector<std::string>& classes, int size,
                   const std::string& name) {
  auto files = std::make_shared<ImageFiles>();
  files->size = size;
  std::vector<std::int32_t> labels;
  for (std::size_t c = 0; c < classes.size(); ++c) {
    const std::vector<std::string> images = sorted_entries(split_dir / classes[c], false);
    CUDL_CHECK(!images.empty(), "load_image_folder: the class folder '{}' holds no .png/.jpg/.jpeg image",
               (split_dir / classes[c]).string());
    for (const std::string& f : images) {
      files->paths.push_back((split_dir / classes[c] / f).string());
      labels.push_back(static_cast<std::int32_t>(c));
    }
  }
  CUDL_CHECK(!labels.empty(), "load_image_folder: no .png/.jpg/.jpeg images under '{}'", split_dir.string());
  Dataset d;
  d.name = name;
  d.num_classes = static_cast<int>(classes.size());
  d.class_names = classes;
  d.labels = Tensor::from_host(std::span<const std::int32_t>(labels), {static_cast<std::int64_t>(labels.size())},
                               host_context());
  d.files = std::move(files);
  return d;
}

}  // namespace

Dataset decode_idx(std::span<const std::uint8_t> images_bytes, std::span<const std::uint8_t> labels_bytes,
                   const std::string& images_name, const std::string& labels_name, int num_classes) {
  CUDL_CHECK(num_classes > 0 && num_classes <= 256, "load_idx: num_classes {} must be in 1..256 ('{}')", num_classes,
             labels_name);
  IdxData images = decode_idx_file(images_bytes, images_name, kIdxImagesMagic, "IDX3 ubyte images");
  const std::int64_t count = images.dims[0], rows = images.dims[1], cols = images.dims[2];
  CUDL_CHECK(count > 0 && rows > 0 && cols > 0, "load_idx: '{}' declares {} images of {}x{}", images_name, count, rows,
             cols);
  IdxData labels = decode_idx_file(labels_bytes, labels_name, kIdxLabelsMagic, "IDX1 ubyte labels");
  CUDL_CHECK(labels.dims[0] == count, "load_idx: '{}' holds {} labels but '{}' holds {} images", labels_name,
             labels.dims[0], images_name, count);
  Dataset d;
  d.name = base_name(images_name);
  d.num_classes = num_classes;
  d.labels = make_labels(labels.values, num_classes,
                         [&](std::size_t i) { return fmt::format("load_idx: '{}' item {}", labels_name, i); });
  d.images = Tensor::empty({count, 1, rows, cols}, host_context());
  float* out = d.images.data<float>();
  for (std::size_t i = 0; i < images.values.size(); ++i) out[i] = static_cast<float>(images.values[i]) / 255.0f;
  return d;
}

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes) {
  // Each file is read whole (its size on disk is what it costs); only inflation is bounded.
  std::vector<std::uint8_t> images = io::read_file(images_path, "load_idx");
  std::vector<std::uint8_t> labels = io::read_file(labels_path, "load_idx");
  return decode_idx(images, labels, images_path, labels_path, num_classes);
}

DataSplits load_mnist_dir(const std::string& dir) {
  check_directory(dir, "load_mnist_dir");
  static const std::string kNames[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                        "t10k-labels-idx1-ubyte"};
  std::string paths[4];
  std::vector<std::string> missing;
  for (int i = 0; i < 4; ++i) {
    paths[i] = find_maybe_gz(dir, kNames[i]);
    if (paths[i].empty()) missing.push_back(kNames[i]);
  }
  CUDL_CHECK(missing.empty(), "load_mnist_dir: '{}' lacks {} (each may also end in .gz)", dir, join(missing, ", "));
  DataSplits splits;
  splits.train = load_idx(paths[0], paths[1]);
  splits.test = load_idx(paths[2], paths[3]);
  splits.train.name = base_name(dir) + "/train";
  splits.test.name = base_name(dir) + "/test";
  return splits;
}

DataSplits load_cifar10_dir(const std::string& dir) {
  check_directory(dir, "load_cifar10_dir");
  std::vector<std::string> train_names;
  for (int i = 1; i <= 5; ++i) train_names.push_back(fmt::format("data_batch_{}.bin", i));
  const std::string test_name = "test_batch.bin";
  // The official archive unpacks into cifar-10-batches-bin/; accept its parent too.
  std::error_code ec;
  fs::path folder = dir;
  if (!fs::exists(folder / train_names[0], ec) && fs::is_directory(folder / "cifar-10-batches-bin", ec)) {
    folder /= "cifar-10-batches-bin";
  }
  std::vector<std::string> missing, train_paths;
  for (const std::string& name : train_names) {
    if (!fs::is_regular_file(folder / name, ec)) missing.push_back(name);
    train_paths.push_back((folder / name).string());
  }
  if (!fs::is_regular_file(folder / test_name, ec)) missing.push_back(test_name);
  CUDL_CHECK(missing.empty(), "load_cifar10_dir: '{}' lacks {} (also looked in its cifar-10-batches-bin subfolder)",
             folder.string(), join(missing, ", "));
  DataSplits splits;
  splits.train = load_cifar_files(train_paths, base_name(dir) + "/train");
  splits.test = load_cifar_files({(folder / test_name).string()}, base_name(dir) + "/test");
  return splits;
}

Dataset decode_cifar10_batch(std::span<const std::uint8_t> bytes, const std::string& name) {
  return cifar_dataset({decode_cifar_file(bytes, name)}, name);
}

Shape Dataset::image_shape() const {
  if (listed()) return Shape{size(), 3, files->size, files->size};
  return images.defined() ? images.shape() : Shape{0};
}

std::size_t Dataset::image_bytes() const { return static_cast<std::size_t>(image_shape().numel()) * sizeof(float); }

Dataset select_samples(const Dataset& data, const std::vector<std::int64_t>& indices) {
  CUDL_CHECK(data.labels.defined() && data.labels.dtype() == DType::i32 && data.labels.device().is_cpu(),
             "select_samples: dataset '{}' needs i32 labels on the CPU", data.name);
  Dataset out;
  out.num_classes = data.num_classes;
  out.name = data.name;
  out.class_names = data.class_names;
  const auto count = static_cast<std::int64_t>(indices.size());
  out.labels = Tensor::empty({count}, host_context(), DType::i32);
  const std::int32_t* labels = data.labels.data<std::int32_t>();
  for (std::int64_t k = 0; k < count; ++k) {
    const std::int64_t i = indices[static_cast<std::size_t>(k)];
    CUDL_CHECK(i >= 0 && i < data.size(), "select_samples: index {} is outside dataset '{}' of {}", i, data.name,
               data.size());
    out.labels.data<std::int32_t>()[k] = labels[i];
  }
  if (data.listed()) {
    auto files = std::make_shared<ImageFiles>();
    files->size = data.files->size;
    for (std::int64_t i : indices) files->paths.push_back(data.files->paths[static_cast<std::size_t>(i)]);
    out.files = std::move(files);
    return out;
  }
  Shape shape = data.images.shape();
  const std::int64_t per_image = shape.numel() / std::max<std::int64_t>(shape[0], 1);
  out.images = Tensor::empty(Shape{count, shape[1], shape[2], shape[3]}, host_context());
  const float* src = data.images.data<float>();
  float* dst = out.images.data<float>();
  for (std::int64_t k = 0; k < count; ++k)
    std::copy_n(src + indices[static_cast<std::size_t>(k)] * per_image, per_image, dst + k * per_image);
  return out;
}

Dataset decode_all(const Dataset& data) {
  if (!data.listed()) return data;
  Dataset out = data;
  out.files = nullptr;
  const int size = data.files->size;
  out.images = Tensor::empty(data.image_shape(), host_context());
  const std::size_t per_image = 3 * static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
  for (std::size_t i = 0; i < data.files->paths.size(); ++i)
    load_folder_sample(data.files->paths[i], size, nullptr, 0, 0, 0, out.images.data<float>() + i * per_image);
  return out;
}

DataSplits list_image_folder(const std::string& dir, int size) {
  CUDL_CHECK(size > 0, "load_image_folder: size {} must be positive ('{}')", size, dir);
  check_directory(dir, "load_image_folder");
  fs::path root = dir;
  std::vector<std::string> missing;
  for (const char* split : {"train", "test"}) {
    std::error_code ec;
    if (!fs::is_directory(root / split, ec)) missing.push_back(split);
  }
  if (missing.size() == 2) {
    // Flat: the class folders are the folder's own subfolders.
    const std::vector<std::string> classes = sorted_entries(root, true);
    CUDL_CHECK(!classes.empty(),
               "load_image_folder: '{}' has neither train/<class>/ and test/<class>/ nor <class>/ folders of images",
               dir);
    DataSplits splits;
    splits.train = list_split(root, classes, size, base_name(dir));
    splits.flat = true;
    return splits;
  }
  CUDL_CHECK(missing.empty(),
             "load_image_folder: '{}' lacks the {} folder(s) (expected train/<class>/ and test/<class>/)", dir,
             join(missing, " and "));
  std::vector<std::string> classes = sorted_entries(root / "train", true);
  std::vector<std::string> test_classes = sorted_entries(root / "test", true);
  CUDL_CHECK(!classes.empty(), "load_image_folder: '{}' has no class folders", (root / "train").string());
  if (classes != test_classes) {
    std::vector<std::string> only_train, only_test;
    std::set_difference(classes.begin(), classes.end(), test_classes.begin(), test_classes.end(),
                        std::back_inserter(only_train));
    std::set_difference(test_classes.begin(), test_classes.end(), classes.begin(), classes.end(),
                        std::back_inserter(only_test));
    CUDL_THROW(
        "load_image_folder: '{}': train and test have different classes (only in train: [{}]; only in test: [{}])", dir,
        join(only_train, ", "), join(only_test, ", "));
  }
  DataSplits splits;
  splits.train = list_split(root / "train", classes, size, base_name(dir) + "/train");
  splits.test = list_split(root / "test", classes, size, base_name(dir) + "/test");
  return splits;
}

DataSplits load_image_folder(const std::string& dir, int size) {
  DataSplits splits = list_image_folder(dir, size);
  splits.train = decode_all(splits.train);
  splits.test = decode_all(splits.test);
  return splits;
}

}  // namespace cudl
