// Dataset loaders (engine/io/datasets.hpp) over small synthetic files, plus real MNIST when
// tools/fetch-mnist.sh has put it in data/mnist.
#include <sys/resource.h>
#include <zlib.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/io/image.hpp"
#include "test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

std::vector<std::uint8_t> idx_images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols,
                                     std::uint32_t magic = 2051) {
  std::vector<std::uint8_t> b;
  put_u32(b, magic);
  put_u32(b, count);
  put_u32(b, rows);
  put_u32(b, cols);
  for (std::uint32_t i = 0; i < count * rows * cols; ++i) b.push_back(static_cast<std::uint8_t>(i * 7 % 256));
  return b;
}

std::vector<std::uint8_t> idx_labels(const std::vector<std::uint8_t>& labels, std::uint32_t magic = 2049) {
  std::vector<std::uint8_t> b;
  put_u32(b, magic);
  put_u32(b, static_cast<std::uint32_t>(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// One gzip member holding `bytes`.
std::vector<std::uint8_t> gzip_member(const std::vector<std::uint8_t>& bytes) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<std::uint8_t> out(deflateBound(&z, static_cast<uLong>(bytes.size())));
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// `head` followed by `mib` MiB of zeros, as gzip: one member of 1 MiB of zeros (about 1 KB)
// repeated, so a gzip file of about `mib` KB inflates to `mib` MiB.
std::vector<std::uint8_t> gzip_bomb(const std::vector<std::uint8_t>& head, std::size_t mib) {
  std::vector<std::uint8_t> out = gzip_member(head);
  const std::vector<std::uint8_t> zeros = gzip_member(std::vector<std::uint8_t>(1 << 20, 0));
  for (std::size_t i = 0; i < mib; ++i) out.insert(out.end(), zeros.begin(), zeros.end());
  return out;
}

// The process's peak resident size so far, in MiB.
long peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

void expect_idx_values(const Dataset& d, std::int64_t count, std::int64_t rows, std::int64_t cols) {
  ASSERT_EQ(d.images.shape(), (Shape{count, 1, rows, cols}));
  ASSERT_EQ(d.images.device(), Device::cpu());
  const float* p = d.images.data<float>();
  for (std::int64_t i = 0; i < d.images.numel(); ++i) {
    ASSERT_FLOAT_EQ(p[i], static_cast<float>(i * 7 % 256) / 255.0f) << i;
  }
}

// CIFAR records: label, then 3072 bytes that encode (record, position).
std::vector<std::uint8_t> cifar_records(const std::vector<std::uint8_t>& labels) {
  std::vector<std::uint8_t> b;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    b.push_back(labels[r]);
    for (std::size_t i = 0; i < 3072; ++i) b.push_back(static_cast<std::uint8_t>((i + 31 * r) % 256));
  }
  return b;
}

void write_solid_png(const std::string& path, int width, int height, float r, float g, float b) {
  Image img(width, height, 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      img.at(y, x, 0) = r;
      img.at(y, x, 1) = g;
      img.at(y, x, 2) = b;
    }
  }
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  write_image(path, img);
}

}  // namespace

TEST(Datasets, ReadsRawAndGzipIdx) {
  TempDir dir;
  write_bytes(dir.file("img"), idx_images(5, 3, 2));
  write_bytes(dir.file("lab"), idx_labels({0, 9, 3, 3, 1}));
  Dataset d = load_idx(dir.file("img"), dir.file("lab"));
  expect_idx_values(d, 5, 3, 2);
  EXPECT_EQ(d.labels.shape(), (Shape{5}));
  EXPECT_EQ(d.labels.dtype(), DType::i32);
  Context ctx{Device::cpu()};
  EXPECT_EQ(d.labels.to_int_vector(ctx), (std::vector<std::int32_t>{0, 9, 3, 3, 1}));
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.size(), 5);

  // gzip is recognised by its magic, whatever the name says.
  write_gz(dir.file("img.gz"), idx_images(5, 3, 2));
  write_gz(dir.file("lab-not-named-gz"), idx_labels({0, 9, 3, 3, 1}));
  Dataset z = load_idx(dir.file("img.gz"), dir.file("lab-not-named-gz"));
  expect_idx_values(z, 5, 3, 2);
  EXPECT_EQ(z.labels.to_int_vector(ctx), (std::vector<std::int32_t>{0, 9, 3, 3, 1}));
}

TEST(Datasets, IdxWrongMagicIsAnErrorNamingTheFile) {
  TempDir dir;
  write_bytes(dir.file("img"), idx_images(2, 2, 2));
  write_bytes(dir.file("lab"), idx_labels({1, 2}));
  // Arguments swapped: the label file where images are expected.
  std::string message = error_message([&] { load_idx(dir.file("lab"), dir.file("img")); });
  EXPECT_TRUE(contains(message, dir.file("lab"))) << message;
  EXPECT_TRUE(contains(message, "magic number 2049, expected 2051")) << message;

  write_bytes(dir.file("bad-lab"), idx_labels({1, 2}, 1234));
  message = error_message([&] { load_idx(dir.file("img"), dir.file("bad-lab")); });
  EXPECT_TRUE(contains(message, dir.file("bad-lab"))) << message;
  EXPECT_TRUE(contains(message, "2049")) << message;
}

TEST(Datasets, IdxTruncatedIsAnErrorNamingTheFile) {
  TempDir dir;
  std::vector<std::uint8_t> images = idx_images(4, 3, 3);
  images.resize(images.size() - 5);
  write_bytes(dir.file("img"), images);
  write_bytes(dir.file("lab"), idx_labels({1, 2, 3, 4}));
  std::string message = error_message([&] { load_idx(dir.file("img"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("img"))) << message;
  EXPECT_TRUE(contains(message, "truncated")) << message;

  write_bytes(dir.file("img"), idx_images(4, 3, 3));
  std::vector<std::uint8_t> labels = idx_labels({1, 2, 3, 4});
  labels.pop_back();
  write_bytes(dir.file("lab"), labels);
  message = error_message([&] { load_idx(dir.file("img"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("lab"))) << message;
  EXPECT_TRUE(contains(message, "truncated")) << message;

  write_bytes(dir.file("short"), {0, 0, 8});
  message = error_message([&] { load_idx(dir.file("short"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("short"))) << message;

  // A gzip stream cut short.
  write_gz(dir.file("img.gz"), idx_images(40, 8, 8));
  std::vector<std::uint8_t> gz = read_bytes(dir.file("img.gz"));
  gz.resize(gz.size() / 2);
  write_bytes(dir.file("cut.gz"), gz);
  message = error_message([&] { load_idx(dir.file("cut.gz"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("cut.gz"))) << message;
  EXPECT_TRUE(contains(message, "gzip")) << message;
}

TEST(Datasets, GzipIdxHeaderIsCheckedBeforeInflatingTheRest) {
  TempDir dir;
  write_bytes(dir.file("lab"), idx_labels({1, 2}));
  const long peak_before = peak_rss_mib();
  // 1 GiB of zeros in about 1 MB of gzip: the magic (0) is wrong, and nothing past it is inflated.
  std::vector<std::uint8_t> zeros = gzip_bomb({}, 1024);
  ASSERT_LT(zeros.size(), 2u << 20);
  write_bytes(dir.file("zeros.gz"), zeros);
  std::string message = error_message([&] { load_idx(dir.file("zeros.gz"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("zeros.gz"))) << message;
  EXPECT_TRUE(contains(message, "magic number 0, expected 2051")) << message;

  // A valid header promising 2 images of 2x2, then the same gigabyte: inflation stops one byte past
  // the 24 bytes promised.
  write_bytes(dir.file("long.gz"), gzip_bomb(idx_images(2, 2, 2), 1024));
  message = error_message([&] { load_idx(dir.file("long.gz"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("long.gz"))) << message;
  EXPECT_TRUE(
      contains(message, "is too long (trailing bytes): it inflates past the 24 bytes its header promises (dims 2x2x2)"))
      << message;
  // Nothing near the gigabyte was held at once (when the test runs alone, as ctest runs it; else
  // an earlier test's peak hides this one's).
  EXPECT_LT(peak_rss_mib() - peak_before, 256) << "peak RSS grew from " << peak_before << " MiB";

  // A header that promises more than its gzip could ever inflate to (deflate expands at most 1032:1)
  // is refused before inflating anything.
  std::vector<std::uint8_t> head = idx_images(1, 1, 1);
  head[4] = 0, head[5] = 0, head[6] = 0xea, head[7] = 0x60;  // 60000 images of 28x28 ...
  head[11] = 28, head[15] = 28;                              // ... in a 50-byte file
  write_bytes(dir.file("short.gz"), gzip_member(head));
  message = error_message([&] { load_idx(dir.file("short.gz"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("short.gz"))) << message;
  EXPECT_TRUE(contains(message, "truncated: its header promises 47040016 bytes (dims 60000x28x28)")) << message;
  EXPECT_TRUE(contains(message, "gzip file can inflate to")) << message;
}

TEST(Datasets, IdxDimsWhoseProductOverflowsAreErrorsNamingTheFileAndDims) {
  TempDir dir;
  write_bytes(dir.file("lab"), idx_labels({1, 2}));
  // 2^22 * 2^21 * 2^21 = 2^64: the product wraps to exactly 0 in 64 bits, so a 16-byte file would
  // "hold" it.
  std::vector<std::uint8_t> b;
  put_u32(b, 2051);
  put_u32(b, 1u << 22);
  put_u32(b, 1u << 21);
  put_u32(b, 1u << 21);
  write_bytes(dir.file("wrap"), b);
  std::string message = error_message([&] { load_idx(dir.file("wrap"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("wrap"))) << message;
  EXPECT_TRUE(contains(message, "dims 4194304x2097152x2097152")) << message;
  EXPECT_TRUE(contains(message, "overflows")) << message;

  // The largest dims: 2^96 values.
  b.resize(4);
  for (int i = 0; i < 3; ++i) put_u32(b, 0xffffffffu);
  write_bytes(dir.file("huge"), b);
  message = error_message([&] { load_idx(dir.file("huge"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, "dims 4294967295x4294967295x4294967295")) << message;
  EXPECT_TRUE(contains(message, "overflows")) << message;

  // 2^48 values fit in 64 bits but not in the file.
  b.resize(4);
  for (int i = 0; i < 3; ++i) put_u32(b, 1u << 16);
  write_bytes(dir.file("big"), b);
  message = error_message([&] { load_idx(dir.file("big"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, "truncated: its header promises 281474976710672 bytes (dims 65536x65536x65536)"))
      << message;
  EXPECT_TRUE(contains(message, "more than its 16 bytes")) << message;
}

TEST(Datasets, DecodeIdxFromMemoryMatchesTheFiles) {
  const std::vector<std::uint8_t> images = idx_images(5, 3, 2), labels = idx_labels({0, 9, 3, 3, 1});
  Dataset d = decode_idx(images, labels, "images", "labels");
  expect_idx_values(d, 5, 3, 2);
  Context ctx{Device::cpu()};
  EXPECT_EQ(d.labels.to_int_vector(ctx), (std::vector<std::int32_t>{0, 9, 3, 3, 1}));
  std::string message = error_message([&] { decode_idx(labels, images, "labels-bytes", "images-bytes"); });
  EXPECT_TRUE(contains(message, "'labels-bytes' has magic number 2049")) << message;
}

TEST(Datasets, IdxCountMismatchAndBadLabelsAreErrors) {
  TempDir dir;
  write_bytes(dir.file("img"), idx_images(5, 2, 2));
  write_bytes(dir.file("lab"), idx_labels({1, 2, 3, 4}));
  std::string message = error_message([&] { load_idx(dir.file("img"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("img"))) << message;
  EXPECT_TRUE(contains(message, dir.file("lab"))) << message;
  EXPECT_TRUE(contains(message, "4 labels")) << message;
  EXPECT_TRUE(contains(message, "5 images")) << message;

  write_bytes(dir.file("lab"), idx_labels({1, 2, 12, 4, 0}));
  message = error_message([&] { load_idx(dir.file("img"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("lab"))) << message;
  EXPECT_TRUE(contains(message, "label 12")) << message;
  EXPECT_EQ(load_idx(dir.file("img"), dir.file("lab"), 13).num_classes, 13);

  message = error_message([&] { load_idx(dir.file("absent"), dir.file("lab")); });
  EXPECT_TRUE(contains(message, dir.file("absent"))) << message;
}

TEST(Datasets, MnistDirAcceptsRawAndGzipNames) {
  TempDir dir;
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_images(6, 4, 4));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_labels({0, 1, 2, 3, 4, 5}));
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_images(2, 4, 4));
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx_labels({7, 8}));
  DataSplits s = load_mnist_dir(dir.path().string());
  EXPECT_EQ(s.train.images.shape(), (Shape{6, 1, 4, 4}));
  EXPECT_EQ(s.test.images.shape(), (Shape{2, 1, 4, 4}));
  EXPECT_EQ(s.train.num_classes, 10);
  EXPECT_TRUE(contains(s.train.name, "train")) << s.train.name;
  EXPECT_TRUE(contains(s.test.name, "test")) << s.test.name;
}

TEST(Datasets, MnistDirMissingFilesAreNamed) {
  TempDir dir;
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_images(6, 4, 4));
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx_labels({7, 8}));
  std::string message = error_message([&] { load_mnist_dir(dir.path().string()); });
  EXPECT_TRUE(contains(message, dir.path().string())) << message;
  EXPECT_TRUE(contains(message, "train-labels-idx1-ubyte")) << message;
  EXPECT_TRUE(contains(message, "t10k-images-idx3-ubyte")) << message;
  EXPECT_FALSE(contains(message, "train-images-idx3-ubyte")) << message;

  message = error_message([&] { load_mnist_dir(dir.file("nowhere")); });
  EXPECT_TRUE(contains(message, dir.file("nowhere"))) << message;
}

TEST(Datasets, Cifar10BatchesInTheSubfolder) {
  TempDir dir;
  std::filesystem::path bin = dir.path() / "cifar-10-batches-bin";
  for (int i = 1; i <= 5; ++i) {
    write_bytes((bin / ("data_batch_" + std::to_string(i) + ".bin")).string(),
                cifar_records({static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i + 4)}));
  }
  write_bytes((bin / "test_batch.bin").string(), cifar_records({0, 9, 5}));
  DataSplits s = load_cifar10_dir(dir.path().string());
  ASSERT_EQ(s.train.images.shape(), (Shape{10, 3, 32, 32}));
  ASSERT_EQ(s.test.images.shape(), (Shape{3, 3, 32, 32}));
  Context ctx{Device::cpu()};
  EXPECT_EQ(s.train.labels.to_int_vector(ctx), (std::vector<std::int32_t>{1, 5, 2, 6, 3, 7, 4, 8, 5, 9}));
  EXPECT_EQ(s.test.labels.to_int_vector(ctx), (std::vector<std::int32_t>{0, 9, 5}));
  // Test record 1: byte i of the image is (i + 31) % 256; planes R, G, B in order (already CHW).
  const float* p = s.test.images.data<float>() + 3072;
  for (std::size_t i : {std::size_t{0}, std::size_t{1023}, std::size_t{1024}, std::size_t{3071}}) {
    EXPECT_FLOAT_EQ(p[i], static_cast<float>((i + 31) % 256) / 255.0f) << i;
  }
}

TEST(Datasets, Cifar10ErrorsNameTheFiles) {
  TempDir dir;
  for (int i = 1; i <= 4; ++i) write_bytes(dir.file("data_batch_" + std::to_string(i) + ".bin"), cifar_records({1}));
  std::string message = error_message([&] { load_cifar10_dir(dir.path().string()); });
  EXPECT_TRUE(contains(message, "data_batch_5.bin")) << message;
  EXPECT_TRUE(contains(message, "test_batch.bin")) << message;
  EXPECT_TRUE(contains(message, dir.path().string())) << message;

  std::vector<std::uint8_t> odd = cifar_records({1, 2});
  odd.resize(odd.size() - 7);
  write_bytes(dir.file("data_batch_5.bin"), odd);
  write_bytes(dir.file("test_batch.bin"), cifar_records({3}));
  message = error_message([&] { load_cifar10_dir(dir.path().string()); });
  EXPECT_TRUE(contains(message, dir.file("data_batch_5.bin"))) << message;
  EXPECT_TRUE(contains(message, "3073")) << message;

  write_bytes(dir.file("data_batch_5.bin"), cifar_records({1, 10}));
  message = error_message([&] { load_cifar10_dir(dir.path().string()); });
  EXPECT_TRUE(contains(message, dir.file("data_batch_5.bin"))) << message;
  EXPECT_TRUE(contains(message, "label 10")) << message;
}

TEST(Datasets, Cifar10GzipThatInflatesPastTheRecordCapIsRefused) {
  TempDir dir;
  // 1 GiB of zeros in about 1 MB (all label 0, all black): far more than 60000 records of 3073
  // bytes (184 MB), where inflation stops.
  const long peak_before = peak_rss_mib();
  write_bytes(dir.file("bomb.bin"), gzip_bomb({}, 1024));
  std::string message = error_message([&] { decode_cifar10_batch(read_bytes(dir.file("bomb.bin")), "bomb.bin"); });
  EXPECT_TRUE(contains(message, "'bomb.bin' holds more than 60000 records (184380000 bytes inflated)")) << message;
  // The capped buffer and its growth (more under ASan, whose quarantine holds freed blocks).
  EXPECT_LT(peak_rss_mib() - peak_before, 700) << "peak RSS grew from " << peak_before << " MiB";

  // The same records as bytes in memory, raw or gzip.
  Dataset d = decode_cifar10_batch(gzip_member(cifar_records({4, 2})), "two.gz");
  EXPECT_EQ(d.images.shape(), (Shape{2, 3, 32, 32}));
  Context ctx{Device::cpu()};
  EXPECT_EQ(d.labels.to_int_vector(ctx), (std::vector<std::int32_t>{4, 2}));
}

TEST(Datasets, ImageFolderDecodesResizesAndCrops) {
  TempDir dir;
  write_solid_png(dir.file("train/dog/a.png"), 40, 20, 1.0f, 0.0f, 0.0f);
  write_solid_png(dir.file("train/cat/b.png"), 10, 30, 0.0f, 1.0f, 0.0f);
  write_solid_png(dir.file("train/cat/c.PNG"), 16, 16, 0.0f, 0.0f, 1.0f);
  write_bytes(dir.file("train/cat/notes.txt"), {'x'});              // not an image: ignored
  write_solid_png(dir.file("train/.hidden/x.png"), 8, 8, 0, 0, 0);  // not a class
  write_solid_png(dir.file("test/cat/d.png"), 8, 8, 0.2f, 0.4f, 0.6f);
  write_solid_png(dir.file("test/dog/e.png"), 50, 60, 0.0f, 0.0f, 0.0f);
  write_image(dir.file("test/dog/f.jpg"), Image(20, 20, 1));  // grey JPEG -> RGB

  DataSplits s = load_image_folder(dir.path().string(), 12);
  EXPECT_EQ(s.train.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(s.train.num_classes, 2);
  ASSERT_EQ(s.train.images.shape(), (Shape{3, 3, 12, 12}));
  ASSERT_EQ(s.test.images.shape(), (Shape{3, 3, 12, 12}));
  Context ctx{Device::cpu()};
  // Sorted by class, then by file name: cat/b, cat/c, dog/a.
  EXPECT_EQ(s.train.labels.to_int_vector(ctx), (std::vector<std::int32_t>{0, 0, 1}));
  EXPECT_EQ(s.test.labels.to_int_vector(ctx), (std::vector<std::int32_t>{0, 1, 1}));
  const float* p = s.train.images.data<float>();
  std::size_t plane = 144;
  EXPECT_NEAR(p[0 * plane + 5], 0.0f, 1e-5f);  // cat/b is green
  EXPECT_NEAR(p[1 * plane + 5], 1.0f, 1e-5f);
  EXPECT_NEAR(p[3 * plane + 2 * plane + 7], 1.0f, 1e-5f);    // cat/c is blue
  EXPECT_NEAR(p[6 * plane + 0 * plane + 100], 1.0f, 1e-5f);  // dog/a is red
  const float* t = s.test.images.data<float>();
  EXPECT_NEAR(t[0 * plane + 50], 0.2f, 1e-5f);
  EXPECT_NEAR(t[2 * plane + 50], 0.6f, 1e-5f);
}

TEST(Datasets, ImageFolderCropsAThinImageWithoutResizingItWhole) {
  TempDir dir;
  // 3000x1 at a shorter side of 224 would be 672000x224 pixels (1.8 GB of floats) before the crop.
  write_solid_png(dir.file("train/a/thin.png"), 3000, 1, 0.0f, 1.0f, 0.0f);
  write_solid_png(dir.file("test/a/x.png"), 8, 8, 0, 0, 0);
  const long peak_before = peak_rss_mib();
  DataSplits s = load_image_folder(dir.path().string(), 224);
  EXPECT_LT(peak_rss_mib() - peak_before, 100) << "peak RSS grew from " << peak_before << " MiB";
  ASSERT_EQ(s.train.images.shape(), (Shape{1, 3, 224, 224}));
  EXPECT_NEAR(s.train.images.data<float>()[224 * 224 + 5], 1.0f, 1e-5f);  // green plane
}

TEST(Datasets, ImageFolderErrors) {
  TempDir dir;
  write_solid_png(dir.file("train/cat/a.png"), 8, 8, 1, 1, 1);
  write_solid_png(dir.file("train/dog/a.png"), 8, 8, 1, 1, 1);
  write_solid_png(dir.file("test/cat/a.png"), 8, 8, 1, 1, 1);
  write_solid_png(dir.file("test/bird/a.png"), 8, 8, 1, 1, 1);
  std::string message = error_message([&] { load_image_folder(dir.path().string(), 8); });
  EXPECT_TRUE(contains(message, "different classes")) << message;
  EXPECT_TRUE(contains(message, "dog")) << message;
  EXPECT_TRUE(contains(message, "bird")) << message;

  std::filesystem::rename(dir.file("test/bird"), dir.file("test/dog"));
  write_bytes(dir.file("test/dog/broken.jpg"), {0xff, 0xd8, 0xff, 0x00, 0x01});
  message = error_message([&] { load_image_folder(dir.path().string(), 8); });
  EXPECT_TRUE(contains(message, dir.file("test/dog/broken.jpg"))) << message;

  TempDir empty;
  message = error_message([&] { load_image_folder(empty.path().string(), 8); });
  EXPECT_TRUE(contains(message, "train")) << message;
}

TEST(Datasets, RealMnist) {
  std::string dir = source_dir() + "/data/mnist";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    GTEST_SKIP() << "real MNIST not found at data/mnist (run tools/fetch-mnist.sh)";
  }
  DataSplits s = load_mnist_dir(dir);
  ASSERT_EQ(s.train.images.shape(), (Shape{60000, 1, 28, 28}));
  ASSERT_EQ(s.test.images.shape(), (Shape{10000, 1, 28, 28}));
  Context ctx{Device::cpu()};
  for (const Dataset* d : {&s.train, &s.test}) {
    std::array<std::int64_t, 10> histogram{};
    for (std::int32_t label : d->labels.to_int_vector(ctx)) ++histogram[static_cast<std::size_t>(label)];
    // Every digit is between 8% and 12% of each split (the real counts are 8.9%..11.2%).
    for (std::size_t c = 0; c < 10; ++c) {
      EXPECT_GT(histogram[c], d->size() * 8 / 100) << d->name << " digit " << c;
      EXPECT_LT(histogram[c], d->size() * 12 / 100) << d->name << " digit " << c;
    }
  }
  // Mean intensity of MNIST is about 0.13.
  double sum = 0.0;
  const float* p = s.test.images.data<float>();
  for (std::int64_t i = 0; i < s.test.images.numel(); ++i) sum += p[i];
  EXPECT_NEAR(sum / static_cast<double>(s.test.images.numel()), 0.13, 0.02);
  // The first training label of MNIST is a 5.
  EXPECT_EQ(s.train.labels.data<std::int32_t>()[0], 5);
}
