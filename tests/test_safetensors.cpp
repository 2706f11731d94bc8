// The safetensors reader and writer: round trips, dtype conversion from hand-built files (as
// PyTorch writes them, independent of our writer), every malformed-file case the reader must
// reject with an Error naming the file, and the writer's atomic replace.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::error_message;
using cudl::testing::write_string;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test, removed afterwards.
class Safetensors : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.file(name); }

  static std::string le64(std::uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xffu);
    return s;
  }
  // A file as the format defines it: header length, header text, data buffer.
  static void write_raw(const std::string& path, const std::string& header, const std::string& data) {
    write_string(path, le64(header.size()) + header + data);
  }
  template <class T>
  static std::string bytes_of(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  }
  std::vector<std::string> leftovers() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_.path()))
      if (e.path().extension() == ".tmp") names.push_back(e.path().filename().string());
    return names;
  }

  cudl::testing::TempDir dir_;
};

TEST_F(Safetensors, RoundTripsF32I32AndMetadata) {
  const std::vector<float> w{1.0f, -2.5f, 3.25f, 0.0f, 1e-7f, -1e7f};
  const std::vector<std::int32_t> labels{7, -1, 0, 2147483647};
  const std::vector<float> scalar{42.0f};
  const std::string path = file("a.safetensors");
  write_safetensors(path,
                    {{"layer.weight", "F32", {2, 3}, w.data()},
                     {"labels", "I32", {4}, labels.data()},
                     {"scale", "F32", {}, scalar.data()},
                     {"empty", "F32", {0, 3}, nullptr}},
                    {{"format", "test"}, {"note", "héllo \"quoted\""}});

  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"empty", "labels", "layer.weight", "scale"}));
  EXPECT_TRUE(f.contains("labels"));
  EXPECT_FALSE(f.contains("__metadata__"));
  EXPECT_EQ(f.shape("layer.weight"), (Shape{2, 3}));
  EXPECT_EQ(f.shape("scale"), Shape{});
  EXPECT_EQ(f.shape("empty"), (Shape{0, 3}));
  EXPECT_EQ(f.dtype("labels"), "I32");
  EXPECT_EQ(f.read_f32("layer.weight"), w);
  EXPECT_EQ(f.read_i32("labels"), labels);
  EXPECT_EQ(f.read_f32("scale"), scalar);
  EXPECT_TRUE(f.read_f32("empty").empty());
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "test"}, {"note", "héllo \"quoted\""}}));

  // Header padded to a multiple of 8, so the data buffer is aligned; nothing after the data.
  std::ifstream in(path, std::ios::binary);
  std::uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(fs::file_size(path), 8 + header_len + w.size() * 4 + labels.size() * 4 + 4);

  EXPECT_TRUE(contains(error_message([&] { f.shape("nope"); }), path));
  EXPECT_TRUE(contains(error_message([&] { f.read_f32("labels"); }), "expected F32, F16, BF16 or F64"));
  EXPECT_TRUE(contains(error_message([&] { f.read_i32("layer.weight"); }), "expected I32"));
}

TEST_F(Safetensors, ConvertsF16BF16AndF64ToFloat) {
  // Bit patterns as PyTorch stores them: F16 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal),
  // 3 * 2^-18 (subnormal), -0, inf; BF16 1, -3, 0.15625; F64 1.5, -0.25, 1e10.
  const std::vector<std::uint16_t> f16{0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x00C0, 0x8000, 0x7C00};
  const std::vector<std::uint16_t> bf16{0x3F80, 0xC040, 0x3E20};
  const std::vector<double> f64{1.5, -0.25, 1e10};
  const std::string data = bytes_of(f64) + bytes_of(f16) + bytes_of(bf16);
  const std::string header = R"({"d": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]},)"
                             R"( "h": {"dtype": "F16", "shape": [2, 4], "data_offsets": [24, 40]},)"
                             R"( "b": {"dtype": "BF16", "shape": [3], "data_offsets": [40, 46]},)"
                             R"( "__metadata__": {"format": "pt"}})";
  const std::string path = file("mixed.safetensors");
  write_raw(path, header, data);

  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.dtype("h"), "F16");
  EXPECT_EQ(f.shape("h"), (Shape{2, 4}));
  const std::vector<float> h = f.read_f32("h");
  ASSERT_EQ(h.size(), 8u);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 0.5f);
  EXPECT_EQ(h[3], 65504.0f);
  EXPECT_EQ(h[4], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[5], 3.0f * std::ldexp(1.0f, -18));
  EXPECT_EQ(h[6], 0.0f);
  EXPECT_TRUE(std::signbit(h[6]));
  EXPECT_EQ(h[7], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f.read_f32("b"), (std::vector<float>{1.0f, -3.0f, 0.15625f}));
  EXPECT_EQ(f.read_f32("d"), (std::vector<float>{1.5f, -0.25f, 1e10f}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST_F(Safetensors, ConvertsEveryF16BitPattern) {
  // All 65536 halves against the definition: (-1)^s * m * 2^-24 for subnormals,
  // (-1)^s * (1 + m/1024) * 2^(e-15) for normals, inf and nan for e = 31.
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  const std::string path = file("all_f16.safetensors");
  write_raw(path, R"({"h": {"dtype": "F16", "shape": [65536], "data_offsets": [0, 131072]}})", bytes_of(all));
  const std::vector<float> h = SafetensorsFile::open(path).read_f32("h");
  ASSERT_EQ(h.size(), all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    const float sign = (i & 0x8000u) ? -1.0f : 1.0f;
    const int e = static_cast<int>((i >> 10) & 0x1fu);
    const auto m = static_cast<float>(i & 0x3ffu);
    if (e == 31) {
      if (m == 0.0f) {
        EXPECT_EQ(h[i], sign * std::numeric_limits<float>::infinity()) << i;
      } else {
        EXPECT_TRUE(std::isnan(h[i])) << i;
      }
      continue;
    }
    const float expected = e == 0 ? sign * std::ldexp(m, -24) : sign * std::ldexp(1.0f + m / 1024.0f, e - 15);
    ASSERT_EQ(h[i], expected) << "bits " << i;
    ASSERT_EQ(std::signbit(h[i]), sign < 0) << "bits " << i;
  }
}

TEST_F(Safetensors, OpensOtherDtypesButReadsOnlyFloatsAsFloat) {
  // PyTorch files may hold I64 counters (BatchNorm's num_batches_tracked); the file still opens.
  const std::vector<std::int64_t> count{5};
  const std::string path = file("i64.safetensors");
  write_raw(path, R"({"n": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}})", bytes_of(count));
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.dtype("n"), "I64");
  const std::string msg = error_message([&] { f.read_f32("n"); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "'n' is I64")) << msg;
}

TEST_F(Safetensors, RejectsMalformedFilesNamingTheFileAndTheProblem) {
  const std::string four(4, '\0');
  const std::string eight(8, '\0');
  struct Case {
    std::string label, bytes, expected;
  };
  auto raw = [](const std::string& header, const std::string& data) { return le64(header.size()) + header + data; };
  const std::vector<Case> cases{
      {"truncated", std::string(3, '\x10'), "shorter than the 8-byte header length"},
      {"empty", "", "0 bytes"},
      {"header_past_end", le64(1000) + "{}", "runs past the end of the file"},
      {"header_absurd", le64(std::uint64_t{1} << 40) + "{}", "absurd"},
      {"bad_json", raw("{\"w\": {", ""), "not valid JSON"},
      {"not_object", raw("[1, 2]", ""), "not an object"},
      {"entry_not_object", raw(R"({"w": 3})", ""), "entry 'w' must be an object"},
      {"no_dtype", raw(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", four), "entry 'w' has no dtype"},
      {"no_shape", raw(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", four), "entry 'w' has no shape"},
      {"no_offsets", raw(R"({"w": {"dtype": "F32", "shape": [1]}})", four), "entry 'w' needs data_offsets"},
      {"three_offsets", raw(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", four),
       "entry 'w' needs data_offsets"},
      {"negative_offset", raw(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", four),
       "entry 'w' needs data_offsets"},
      {"negative_dim", raw(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", four),
       "entry 'w' has shape [-1]"},
      {"unknown_dtype", raw(R"({"w": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}})", four),
       "entry 'w' has unknown dtype 'F17'"},
      {"offsets_out_of_range", raw(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", four),
       "entry 'w' has data_offsets [0, 8] outside the 4-byte data buffer"},
      {"offsets_reversed", raw(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", four),
       "outside the 4-byte data buffer"},
      {"size_mismatch", raw(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", eight),
       "entry 'w' spans 4 bytes, but shape [2] of F32 needs 8"},
      {"huge_shape", raw(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", four),
       "needs more than the file"},
      {"overlap",
       raw(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
           R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
           eight + four),
       "entries 'a' [0, 8] and 'b' [4, 12] overlap"},
      {"metadata_not_strings", raw(R"({"__metadata__": {"epoch": 3}})", ""), "__metadata__ 'epoch' must be a string"},
      {"rank_too_high", raw(R"({"w": {"dtype": "F32", "shape": [1,1,1,1,1,1,1], "data_offsets": [0, 4]}})", four),
       "rank 7"},
  };
  for (const Case& c : cases) {
    const std::string path = file(c.label + ".safetensors");
    write_string(path, c.bytes);
    const std::string msg = error_message([&] { SafetensorsFile::open(path); });
    EXPECT_TRUE(contains(msg, path)) << c.label << ": " << msg;
    EXPECT_TRUE(contains(msg, c.expected)) << c.label << ": " << msg;
  }
  const std::string missing = file("does_not_exist.safetensors");
  EXPECT_TRUE(contains(error_message([&] { SafetensorsFile::open(missing); }), missing));
}

TEST_F(Safetensors, FromBytesChecksLikeOpenAndADirectoryIsRefused) {
  const std::vector<float> v{1.0f, 2.0f};
  const std::string path = file("v.safetensors");
  write_raw(path, R"({"v": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", bytes_of(v));
  const std::vector<std::uint8_t> bytes = cudl::testing::read_bytes(path);
  const SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "in-memory");
  EXPECT_EQ(f.path(), "in-memory");
  EXPECT_EQ(f.read_f32("v"), v);
  std::vector<std::uint8_t> cut(bytes.begin(), bytes.end() - 1);
  std::string msg = error_message([&] { SafetensorsFile::from_bytes(cut, "cut-bytes"); });
  EXPECT_TRUE(contains(msg, "'cut-bytes'")) << msg;
  EXPECT_TRUE(contains(msg, "outside the 7-byte data buffer")) << msg;
  // A folder passed as weights is refused before anything is read.
  msg = error_message([&] { SafetensorsFile::open(dir_.path().string()); });
  EXPECT_TRUE(contains(msg, dir_.path().string())) << msg;
  EXPECT_TRUE(contains(msg, "is a folder")) << msg;
}

TEST_F(Safetensors, DeeplyNestedHeaderValuesAreRefusedWithoutRecursing) {
  // A million nested arrays (2 MB of header) where a shape or a metadata string belongs: quoting
  // the value in the message with json::dump() recursed once per level and overflowed the stack.
  const std::size_t depth = 1000000;
  const std::string nested = std::string(depth, '[') + std::string(depth, ']');
  const std::string shape_path = file("deep_shape.safetensors");
  write_raw(shape_path, R"({"w": {"dtype": "F32", "shape": [1, )" + nested + R"(], "data_offsets": [0, 0]}})", "");
  std::string msg = error_message([&] { SafetensorsFile::open(shape_path); });
  EXPECT_TRUE(contains(msg, shape_path)) << msg.substr(0, 300);
  EXPECT_TRUE(contains(msg, "entry 'w' has shape [1, (an array)], expected non-negative integers"))
      << msg.substr(0, 300);

  const std::string metadata_path = file("deep_metadata.safetensors");
  write_raw(metadata_path, R"({"__metadata__": {"epoch": )" + nested + "}}", "");
  msg = error_message([&] { SafetensorsFile::open(metadata_path); });
  EXPECT_TRUE(contains(msg, "__metadata__ 'epoch' must be a string, got an array")) << msg.substr(0, 300);
  // A long flat value is cut short in the message.
  write_raw(metadata_path, R"({"__metadata__": {"epoch": [)" + std::string(100000, '1') + "]}}", "");
  msg = error_message([&] { SafetensorsFile::open(metadata_path); });
  EXPECT_LT(msg.size(), 1000u);
}

TEST_F(Safetensors, AcceptsZeroSizedTensorsAnywhereAndTrailingSpaces) {
  const std::vector<float> v{1.0f, 2.0f};
  const std::string path = file("ok.safetensors");
  write_raw(path,
            R"({"z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
            R"( "v": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}   )",
            bytes_of(v));
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.read_f32("v"), v);
  EXPECT_EQ(f.shape("z"), Shape{0});
}

TEST_F(Safetensors, WriterRejectsBadEntriesBeforeCreatingAnything) {
  const float x = 1.0f;
  const std::string path = file("bad.safetensors");
  EXPECT_TRUE(contains(error_message([&] {
                         write_safetensors(path, {{"a", "F32", {1}, &x}, {"a", "F32", {1}, &x}});
                       }),
                       "'a' appears twice"));
  EXPECT_TRUE(contains(error_message([&] { write_safetensors(path, {{"a", "Q8", {1}, &x}}); }), "unknown dtype 'Q8'"));
  EXPECT_TRUE(contains(error_message([&] { write_safetensors(path, {{"a", "F32", {1}, nullptr}}); }), "no data"));
  EXPECT_TRUE(contains(error_message([&] {
                         write_safetensors(path, {{"__metadata__", "F32", {1}, &x}});
                       }),
                       "invalid tensor name"));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(leftovers().empty());
}

TEST_F(Safetensors, WriteIsAtomic) {
  // A missing directory: the error names the target, and nothing appears anywhere.
  const std::string in_missing_dir = file("no/such/dir/w.safetensors");
  const float x = 3.0f;
  const std::string msg = error_message([&] { write_safetensors(in_missing_dir, {{"x", "F32", {1}, &x}}); });
  EXPECT_TRUE(contains(msg, in_missing_dir)) << msg;
  EXPECT_FALSE(fs::exists(file("no")));

  // An existing file is replaced whole by a smaller one: no bytes of the old one survive.
  const std::string path = file("w.safetensors");
  const std::vector<float> big(1000, 7.0f);
  write_safetensors(path, {{"big", "F32", {1000}, big.data()}}, {{"version", "1"}});
  const auto big_size = fs::file_size(path);
  write_safetensors(path, {{"x", "F32", {1}, &x}}, {{"version", "2"}});
  EXPECT_LT(fs::file_size(path), big_size);
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), std::vector<std::string>{"x"});
  EXPECT_EQ(f.read_f32("x"), std::vector<float>{3.0f});
  EXPECT_EQ(f.metadata().at("version"), "2");

  // A failure after the temporary was written (renaming onto a non-empty directory) removes it.
  const std::string dir_target = file("occupied");
  fs::create_directories(fs::path(dir_target) / "child");
  EXPECT_TRUE(contains(error_message([&] { write_safetensors(dir_target, {{"x", "F32", {1}, &x}}); }), dir_target));
  EXPECT_TRUE(fs::is_directory(fs::path(dir_target) / "child"));
  EXPECT_TRUE(leftovers().empty()) << leftovers().front();
}

}  // namespace
