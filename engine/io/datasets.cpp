#include "engine/io/datasets.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <system_error>

#include "engine/context.hpp"
#include "engine/error.hpp"
#include "engine/io/files.hpp"
#include "engine/io/image.hpp"

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

std::string size_complaint(std::size_t have, std::size_t want) {
  return have < want ? "truncated" : "too long (trailing bytes)";
}

struct IdxImages {
  std::int64_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> bytes;  // header included
};

IdxImages read_idx_images(const std::string& path) {
  IdxImages out;
  out.bytes = io::read_maybe_gzip(path, "load_idx");
  const std::vector<std::uint8_t>& b = out.bytes;
  CUDL_CHECK(b.size() >= 4, "load_idx: '{}' holds {} bytes, too few for an IDX3 header (16 bytes)", path, b.size());
  std::uint32_t magic = big_endian_u32(b.data());
  CUDL_CHECK(magic == kIdxImagesMagic, "load_idx: '{}' has magic number {}, expected {} (IDX3 ubyte images){}", path,
             magic, kIdxImagesMagic, magic == kIdxLabelsMagic ? "; it looks like a label file" : "");
  CUDL_CHECK(b.size() >= 16, "load_idx: '{}' is truncated: {} bytes, too few for an IDX3 header (16 bytes)", path,
             b.size());
  out.count = big_endian_u32(b.data() + 4);
  out.rows = big_endian_u32(b.data() + 8);
  out.cols = big_endian_u32(b.data() + 12);
  CUDL_CHECK(out.count > 0 && out.rows > 0 && out.cols > 0, "load_idx: '{}' declares {} images of {}x{}", path,
             out.count, out.rows, out.cols);
  std::size_t want = 16 + static_cast<std::size_t>(out.count * out.rows * out.cols);
  CUDL_CHECK(b.size() == want, "load_idx: '{}' is {}: {} bytes, its header promises {} ({} images of {}x{})", path,
             size_complaint(b.size(), want), b.size(), want, out.count, out.rows, out.cols);
  return out;
}

std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
  std::vector<std::uint8_t> b = io::read_maybe_gzip(path, "load_idx");
  CUDL_CHECK(b.size() >= 4, "load_idx: '{}' holds {} bytes, too few for an IDX1 header (8 bytes)", path, b.size());
  std::uint32_t magic = big_endian_u32(b.data());
  CUDL_CHECK(magic == kIdxLabelsMagic, "load_idx: '{}' has magic number {}, expected {} (IDX1 ubyte labels){}", path,
             magic, kIdxLabelsMagic, magic == kIdxImagesMagic ? "; it looks like an image file" : "");
  CUDL_CHECK(b.size() >= 8, "load_idx: '{}' is truncated: {} bytes, too few for an IDX1 header (8 bytes)", path,
             b.size());
  std::size_t count = big_endian_u32(b.data() + 4);
  std::size_t want = 8 + count;
  CUDL_CHECK(b.size() == want, "load_idx: '{}' is {}: {} bytes, its header promises {} ({} labels)", path,
             size_complaint(b.size(), want), b.size(), want, count);
  b.erase(b.begin(), b.begin() + 8);
  return b;
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

Dataset load_cifar_files(const std::vector<std::string>& paths, const std::string& name) {
  std::vector<std::vector<std::uint8_t>> files;
  std::size_t records = 0;
  for (const std::string& path : paths) {
    files.push_back(io::read_maybe_gzip(path, "load_cifar10_dir"));
    std::size_t size = files.back().size();
    CUDL_CHECK(size > 0 && size % kCifarRecordBytes == 0,
               "load_cifar10_dir: '{}' holds {} bytes, expected a positive multiple of {} (label byte + 32x32x3 image)",
               path, size, kCifarRecordBytes);
    records += size / kCifarRecordBytes;
  }
  Dataset d;
  d.name = name;
  d.num_classes = 10;
  d.images = Tensor::empty({static_cast<std::int64_t>(records), 3, 32, 32}, host_context());
  d.labels = Tensor::empty({static_cast<std::int64_t>(records)}, host_context(), DType::i32);
  float* images = d.images.data<float>();
  std::int32_t* labels = d.labels.data<std::int32_t>();
  std::size_t n = 0;
  for (std::size_t f = 0; f < files.size(); ++f) {
    const std::vector<std::uint8_t>& b = files[f];
    for (std::size_t r = 0; r < b.size() / kCifarRecordBytes; ++r, ++n) {
      const std::uint8_t* record = b.data() + r * kCifarRecordBytes;
      CUDL_CHECK(record[0] < 10, "load_cifar10_dir: '{}' record {}: label {} is out of range (expected 0..9)", paths[f],
                 r, record[0]);
      labels[n] = record[0];
      // The record already holds the R, G and B planes one after another: CHW.
      float* out = images + n * kCifarImageBytes;
      for (std::size_t i = 0; i < kCifarImageBytes; ++i) out[i] = static_cast<float>(record[1 + i]) / 255.0f;
    }
  }
  return d;
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
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Shorter side to `size` (aspect ratio kept), then the centred size x size square.
Image square(const Image& image, int size) {
  Image rgb = to_rgb(image);
  int w = rgb.width, h = rgb.height;
  int new_w = w <= h ? size : std::max(size, static_cast<int>(std::lround(static_cast<double>(w) * size / h)));
  int new_h = h < w ? size : std::max(size, static_cast<int>(std::lround(static_cast<double>(h) * size / w)));
  return center_crop(resize(rgb, new_w, new_h), size, size);
}

Dataset load_split(const fs::path& split_dir, const std::vector<std::string>& classes, int size,
                   const std::string& name) {
  std::vector<std::pair<std::string, std::int32_t>> files;
  for (std::size_t c = 0; c < classes.size(); ++c) {
    for (const std::string& f : sorted_entries(split_dir / classes[c], false)) {
      files.emplace_back((split_dir / classes[c] / f).string(), static_cast<std::int32_t>(c));
    }
  }
  CUDL_CHECK(!files.empty(), "load_image_folder: no .png/.jpg/.jpeg images under '{}'", split_dir.string());
  Dataset d;
  d.name = name;
  d.num_classes = static_cast<int>(classes.size());
  d.class_names = classes;
  std::int64_t n = static_cast<std::int64_t>(files.size());
  d.images = Tensor::empty({n, 3, size, size}, host_context());
  d.labels = Tensor::empty({n}, host_context(), DType::i32);
  std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
  for (std::size_t i = 0; i < files.size(); ++i) {
    // read_image's errors name the file; the crop cannot fail after the resize.
    Image img = square(read_image(files[i].first), size);
    float* out = d.images.data<float>() + i * 3 * plane;
    for (std::size_t p = 0; p < plane; ++p) {
      for (std::size_t c = 0; c < 3; ++c) out[c * plane + p] = img.pixels[p * 3 + c];
    }
    d.labels.data<std::int32_t>()[i] = files[i].second;
  }
  return d;
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes) {
  CUDL_CHECK(num_classes > 0 && num_classes <= 256, "load_idx: num_classes {} must be in 1..256 ('{}')", num_classes,
             labels_path);
  IdxImages images = read_idx_images(images_path);
  std::vector<std::uint8_t> labels = read_idx_labels(labels_path);
  CUDL_CHECK(static_cast<std::int64_t>(labels.size()) == images.count,
             "load_idx: '{}' holds {} labels but '{}' holds {} images", labels_path, labels.size(), images_path,
             images.count);
  Dataset d;
  d.name = base_name(images_path);
  d.num_classes = num_classes;
  d.labels = make_labels(labels, num_classes,
                         [&](std::size_t i) { return fmt::format("load_idx: '{}' item {}", labels_path, i); });
  d.images = Tensor::empty({images.count, 1, images.rows, images.cols}, host_context());
  float* out = d.images.data<float>();
  const std::uint8_t* in = images.bytes.data() + 16;
  std::size_t values = static_cast<std::size_t>(d.images.numel());
  for (std::size_t i = 0; i < values; ++i) out[i] = static_cast<float>(in[i]) / 255.0f;
  return d;
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

DataSplits load_image_folder(const std::string& dir, int size) {
  CUDL_CHECK(size > 0, "load_image_folder: size {} must be positive ('{}')", size, dir);
  check_directory(dir, "load_image_folder");
  fs::path root = dir;
  std::vector<std::string> missing;
  for (const char* split : {"train", "test"}) {
    std::error_code ec;
    if (!fs::is_directory(root / split, ec)) missing.push_back(split);
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
  splits.train = load_split(root / "train", classes, size, base_name(dir) + "/train");
  splits.test = load_split(root / "test", classes, size, base_name(dir) + "/test");
  return splits;
}

}  // namespace cudl
