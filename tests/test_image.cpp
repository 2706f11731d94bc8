// Image decoding, encoding and resampling (engine/io/image.hpp). Inputs of every PNG flavour are
// written here with libpng's simplified API, so the test needs no binary fixtures beyond one photo.
#include <png.h>
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/image.hpp"
#include "test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

// A smooth RGB gradient (JPEG-friendly) with distinct values per channel.
Image gradient(int width, int height, int channels) {
  Image img(width, height, channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        img.at(y, x, c) =
            (static_cast<float>(x) / (width - 1) + static_cast<float>(y) / (height - 1) + 0.3f * c) / 2.9f;
      }
    }
  }
  return img;
}

// Writes `buffer` as a PNG with libpng's simplified API (format: PNG_FORMAT_*).
void write_png_simplified(const std::string& path, png_uint_32 format, int width, int height, const void* buffer,
                          const void* colormap = nullptr, png_uint_32 colormap_entries = 0) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = format;
  image.colormap_entries = colormap_entries;
  ASSERT_NE(png_image_write_to_file(&image, path.c_str(), 0, buffer, 0, colormap), 0) << image.message;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0.0f;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

void put_be32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

void png_chunk(std::vector<std::uint8_t>& out, const char* type, const std::vector<std::uint8_t>& data) {
  put_be32(out, static_cast<std::uint32_t>(data.size()));
  std::vector<std::uint8_t> body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  out.insert(out.end(), body.begin(), body.end());
  put_be32(out, static_cast<std::uint32_t>(crc32(0, body.data(), static_cast<uInt>(body.size()))));
}

// An 8-bit RGB PNG whose header says width x height; its pixel data is `rows` zero rows, so
// a large claim costs a few bytes (a whole image of zeros compresses to next to nothing).
std::vector<std::uint8_t> png_claiming(std::uint32_t width, std::uint32_t height, std::uint32_t rows) {
  std::vector<std::uint8_t> png{0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  std::vector<std::uint8_t> ihdr;
  put_be32(ihdr, width);
  put_be32(ihdr, height);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8 bits, RGB, deflate, adaptive filters, no interlace
  png_chunk(png, "IHDR", ihdr);
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(rows) * (1 + 3 * std::size_t{width}), 0);
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<std::uint8_t> idat(size);
  EXPECT_EQ(compress2(idat.data(), &size, raw.data(), static_cast<uLong>(raw.size()), 9), Z_OK);
  idat.resize(size);
  png_chunk(png, "IDAT", idat);
  png_chunk(png, "IEND", {});
  return png;
}

// A real JPEG whose frame header (SOF0) is patched to claim width x height.
std::vector<std::uint8_t> jpeg_claiming(const std::string& scratch, std::uint16_t width, std::uint16_t height) {
  write_image(scratch, gradient(16, 16, 3));
  std::vector<std::uint8_t> jpeg = read_bytes(scratch);
  for (std::size_t i = 0; i + 8 < jpeg.size(); ++i) {
    if (jpeg[i] == 0xff && jpeg[i + 1] == 0xc0) {  // FFC0 length(2) precision(1) height(2) width(2)
      jpeg[i + 5] = static_cast<std::uint8_t>(height >> 8), jpeg[i + 6] = static_cast<std::uint8_t>(height);
      jpeg[i + 7] = static_cast<std::uint8_t>(width >> 8), jpeg[i + 8] = static_cast<std::uint8_t>(width);
      return jpeg;
    }
  }
  ADD_FAILURE() << "no SOF0 marker in " << scratch;
  return jpeg;
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

std::vector<std::string> folder_entries(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST(Image, PngRoundTripIsExactAt8Bits) {
  TempDir dir;
  for (int channels = 1; channels <= 4; ++channels) {
    Image img = gradient(13, 7, channels);
    for (float& v : img.pixels) v = std::round(v * 255.0f) / 255.0f;  // representable in 8 bits
    std::string path = dir.file("rt" + std::to_string(channels) + ".png");
    write_image(path, img);
    Image back = read_image(path);
    EXPECT_EQ(back.width, 13);
    EXPECT_EQ(back.height, 7);
    EXPECT_EQ(back.channels, channels);
    EXPECT_LT(max_abs_diff(back.pixels, img.pixels), 1e-6f) << channels << " channels";
  }
  // Only the final files: no temporaries left behind.
  EXPECT_EQ(folder_entries(dir.path()), (std::vector<std::string>{"rt1.png", "rt2.png", "rt3.png", "rt4.png"}));
}

TEST(Image, WriteClampsValues) {
  TempDir dir;
  Image img(2, 1, 1);
  img.pixels = {-0.5f, 1.7f};
  write_image(dir.file("c.png"), img);
  EXPECT_EQ(read_image(dir.file("c.png")).pixels, (std::vector<float>{0.0f, 1.0f}));
}

TEST(Image, JpegRoundTripWithinTolerance) {
  TempDir dir;
  Image rgb = gradient(40, 30, 3);
  write_image(dir.file("a.jpg"), rgb);
  Image back = read_image(dir.file("a.jpg"));
  ASSERT_EQ(back.channels, 3);
  ASSERT_EQ(back.width, 40);
  ASSERT_EQ(back.height, 30);
  EXPECT_LT(max_abs_diff(back.pixels, rgb.pixels), 0.04f);

  Image grey = gradient(24, 16, 1);
  write_image(dir.file("g.JPEG"), grey);  // extension case does not matter
  Image grey_back = read_image(dir.file("g.JPEG"));
  ASSERT_EQ(grey_back.channels, 1);
  EXPECT_LT(max_abs_diff(grey_back.pixels, grey.pixels), 0.04f);

  // RGBA to JPEG drops alpha.
  write_image(dir.file("rgba.jpg"), gradient(8, 8, 4));
  EXPECT_EQ(read_image(dir.file("rgba.jpg")).channels, 3);
}

TEST(Image, FormatComesFromMagicBytesNotExtension) {
  TempDir dir;
  Image img = gradient(8, 8, 3);
  write_image(dir.file("x.png"), img);
  std::filesystem::rename(dir.file("x.png"), dir.file("x.jpg"));
  Image back = read_image(dir.file("x.jpg"));  // a PNG despite its name
  EXPECT_EQ(back.channels, 3);
  EXPECT_LT(max_abs_diff(back.pixels, img.pixels), 1.0f / 255.0f);
}

TEST(Image, ReadsGreyGreyAlphaAndRgba8BitPngs) {
  TempDir dir;
  std::vector<std::uint8_t> grey{0, 51, 255, 128, 1, 2};
  write_png_simplified(dir.file("grey.png"), PNG_FORMAT_GRAY, 3, 2, grey.data());
  Image g = read_image(dir.file("grey.png"));
  ASSERT_EQ(g.channels, 1);
  ASSERT_EQ(g.width, 3);
  ASSERT_EQ(g.height, 2);
  for (std::size_t i = 0; i < grey.size(); ++i) EXPECT_FLOAT_EQ(g.pixels[i], grey[i] / 255.0f);

  std::vector<std::uint8_t> ga{10, 255, 20, 0};
  write_png_simplified(dir.file("ga.png"), PNG_FORMAT_GA, 2, 1, ga.data());
  Image a = read_image(dir.file("ga.png"));
  ASSERT_EQ(a.channels, 2);
  EXPECT_FLOAT_EQ(a.pixels[0], 10 / 255.0f);
  EXPECT_FLOAT_EQ(a.pixels[1], 1.0f);
  EXPECT_FLOAT_EQ(a.pixels[3], 0.0f);

  std::vector<std::uint8_t> rgba{255, 0, 0, 255, 0, 255, 0, 128};
  write_png_simplified(dir.file("rgba.png"), PNG_FORMAT_RGBA, 2, 1, rgba.data());
  Image r = read_image(dir.file("rgba.png"));
  ASSERT_EQ(r.channels, 4);
  for (std::size_t i = 0; i < rgba.size(); ++i) EXPECT_FLOAT_EQ(r.pixels[i], rgba[i] / 255.0f) << i;

  Image rgb = to_rgb(r);
  ASSERT_EQ(rgb.channels, 3);
  EXPECT_EQ(rgb.pixels, (std::vector<float>{1, 0, 0, 0, 1, 0}));
  Image grey_rgb = to_rgb(g);
  ASSERT_EQ(grey_rgb.channels, 3);
  EXPECT_FLOAT_EQ(grey_rgb.at(0, 1, 0), 0.2f);
  EXPECT_FLOAT_EQ(grey_rgb.at(0, 1, 2), 0.2f);
}

TEST(Image, Reads16BitPng) {
  TempDir dir;
  // Linear formats are written with 16-bit samples, stored as given.
  std::vector<std::uint16_t> grey{0, 1000, 65535, 32768};
  write_png_simplified(dir.file("g16.png"), PNG_FORMAT_LINEAR_Y, 2, 2, grey.data());
  Image g = read_image(dir.file("g16.png"));
  ASSERT_EQ(g.channels, 1);
  for (std::size_t i = 0; i < grey.size(); ++i) EXPECT_NEAR(g.pixels[i], grey[i] / 65535.0f, 1e-6f) << i;
}

TEST(Image, ExpandsPalettePngs) {
  TempDir dir;
  std::vector<std::uint8_t> palette{255, 0, 0, 0, 0, 255, 0, 255, 0};  // red, blue, green
  std::vector<std::uint8_t> indices{0, 1, 2, 1};
  write_png_simplified(dir.file("pal.png"), PNG_FORMAT_RGB_COLORMAP, 2, 2, indices.data(), palette.data(), 3);
  Image p = read_image(dir.file("pal.png"));
  ASSERT_EQ(p.channels, 3);
  EXPECT_EQ(p.pixels, (std::vector<float>{1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1}));

  // A palette with transparency (tRNS) becomes RGBA.
  std::vector<std::uint8_t> palette_alpha{255, 0, 0, 255, 0, 0, 255, 0};
  std::vector<std::uint8_t> idx{0, 1};
  write_png_simplified(dir.file("pala.png"), PNG_FORMAT_RGBA_COLORMAP, 2, 1, idx.data(), palette_alpha.data(), 2);
  Image pa = read_image(dir.file("pala.png"));
  ASSERT_EQ(pa.channels, 4);
  EXPECT_FLOAT_EQ(pa.pixels[3], 1.0f);
  EXPECT_FLOAT_EQ(pa.pixels[7], 0.0f);
}

TEST(Image, ReadsTheChelseaPhoto) {
  Image img = read_image(source_dir() + "/tests/data/chelsea.png");
  EXPECT_EQ(img.width, 451);
  EXPECT_EQ(img.height, 300);
  EXPECT_EQ(img.channels, 3);
  double sum = 0.0;
  for (float v : img.pixels) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LE(v, 1.0f);
    sum += v;
  }
  double mean = sum / static_cast<double>(img.pixels.size());
  EXPECT_GT(mean, 0.2);  // a real photo, neither black nor white
  EXPECT_LT(mean, 0.8);
}

TEST(Image, ResizeToTheSameSizeIsAnExactCopy) {
  Image img = gradient(17, 9, 3);
  img.pixels[5] = 0.123456789f;
  Image same = resize(img, 17, 9);
  EXPECT_EQ(same.pixels, img.pixels);
}

TEST(Image, ResizeKeepsAConstantImageConstant) {
  Image img(100, 80, 3);
  std::fill(img.pixels.begin(), img.pixels.end(), 0.3f);
  for (auto [w, h] : {std::pair{23, 17}, std::pair{100, 40}, std::pair{7, 80}, std::pair{151, 97}}) {
    Image out = resize(img, w, h);
    ASSERT_EQ(out.width, w);
    ASSERT_EQ(out.height, h);
    ASSERT_EQ(out.channels, 3);
    for (float v : out.pixels) ASSERT_NEAR(v, 0.3f, 1e-5f) << w << "x" << h;
  }
}

TEST(Image, DownscalingACheckerboardAveragesIt) {
  // One-pixel squares: point sampling would give 0s and 1s; an antialiasing filter gives grey.
  Image board(64, 64, 1);
  for (int y = 0; y < 64; ++y) {
    for (int x = 0; x < 64; ++x) board.at(y, x, 0) = static_cast<float>((x + y) % 2);
  }
  for (int size : {8, 10, 21}) {
    Image out = resize(board, size, size);
    for (float v : out.pixels) ASSERT_NEAR(v, 0.5f, 0.03f) << "size " << size;
  }
}

TEST(Image, UpscalingInterpolatesBetweenPixels) {
  Image ramp(2, 1, 1);
  ramp.pixels = {0.0f, 1.0f};
  Image out = resize(ramp, 8, 1);
  for (int x = 1; x < 8; ++x) EXPECT_GE(out.at(0, x, 0), out.at(0, x - 1, 0));  // monotone
  EXPECT_NEAR(out.at(0, 0, 0), 0.0f, 1e-6f);
  EXPECT_NEAR(out.at(0, 7, 0), 1.0f, 1e-6f);
}

TEST(Image, CropCenterCropAndFlip) {
  Image img(4, 3, 1);
  for (int i = 0; i < 12; ++i) img.pixels[static_cast<std::size_t>(i)] = static_cast<float>(i);
  Image c = crop(img, 1, 1, 2, 2);
  EXPECT_EQ(c.pixels, (std::vector<float>{5, 6, 9, 10}));
  Image cc = center_crop(img, 2, 1);
  EXPECT_EQ(cc.pixels, (std::vector<float>{5, 6}));
  Image f = hflip(img);
  EXPECT_EQ(f.pixels, (std::vector<float>{3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8}));

  std::string message = error_message([&] { crop(img, 3, 0, 2, 2); });
  EXPECT_TRUE(contains(message, "crop")) << message;
  EXPECT_TRUE(contains(message, "4x3")) << message;
  message = error_message([&] { center_crop(img, 5, 1); });
  EXPECT_TRUE(contains(message, "center_crop")) << message;
}

TEST(Image, TensorConversionsUseChwLayout) {
  Context ctx{Device::cpu()};
  Image img(3, 2, 2);
  for (std::size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<float>(i);
  Tensor t = image_to_tensor(img, ctx);
  EXPECT_EQ(t.shape(), (Shape{1, 2, 2, 3}));
  // Channel 0 of HWC (0, 2, 4, ...) comes first.
  EXPECT_EQ(t.to_vector(ctx), (std::vector<float>{0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11}));
  Image back = tensor_to_image(t, ctx);
  EXPECT_EQ(back.width, 3);
  EXPECT_EQ(back.height, 2);
  EXPECT_EQ(back.pixels, img.pixels);
  EXPECT_EQ(tensor_to_image(t.reshape({2, 2, 3}), ctx).pixels, img.pixels);

  std::string message = error_message([&] { tensor_to_image(Tensor::zeros({2, 3, 4, 4}, ctx), ctx); });
  EXPECT_TRUE(contains(message, "[2,3,4,4]")) << message;
}

TEST(Image, MissingFileIsAnErrorNamingIt) {
  TempDir dir;
  std::string path = dir.file("nope.png");
  std::string message = error_message([&] { read_image(path); });
  EXPECT_TRUE(contains(message, path)) << message;
  EXPECT_TRUE(contains(message, "No such file")) << message;
}

TEST(Image, GarbageAndEmptyFilesAreErrorsNamingThem) {
  TempDir dir;
  write_bytes(dir.file("junk.png"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
  std::string message = error_message([&] { read_image(dir.file("junk.png")); });
  EXPECT_TRUE(contains(message, dir.file("junk.png"))) << message;
  EXPECT_TRUE(contains(message, "neither PNG nor JPEG")) << message;

  write_bytes(dir.file("empty.jpg"), {});
  message = error_message([&] { read_image(dir.file("empty.jpg")); });
  EXPECT_TRUE(contains(message, dir.file("empty.jpg"))) << message;

  // Right magic, garbage after it.
  std::vector<std::uint8_t> fake_png{0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  write_bytes(dir.file("fake.png"), fake_png);
  message = error_message([&] { read_image(dir.file("fake.png")); });
  EXPECT_TRUE(contains(message, dir.file("fake.png"))) << message;
  EXPECT_TRUE(contains(message, "PNG")) << message;

  std::vector<std::uint8_t> fake_jpeg{0xff, 0xd8, 0xff, 0xe0, 0, 3, 1, 2, 3, 4, 5};
  write_bytes(dir.file("fake.jpg"), fake_jpeg);
  message = error_message([&] { read_image(dir.file("fake.jpg")); });
  EXPECT_TRUE(contains(message, dir.file("fake.jpg"))) << message;
  EXPECT_TRUE(contains(message, "JPEG")) << message;
}

TEST(Image, TruncatedPngAndJpegAreErrorsNamingThem) {
  TempDir dir;
  Image img = gradient(64, 48, 3);
  for (const char* ext : {".png", ".jpg"}) {
    std::string whole = dir.file(std::string("whole") + ext), cut = dir.file(std::string("cut") + ext);
    write_image(whole, img);
    std::vector<std::uint8_t> bytes = read_bytes(whole);
    ASSERT_GT(bytes.size(), 200u);
    for (std::size_t keep : {bytes.size() / 2, bytes.size() - 1, std::size_t{40}}) {
      write_bytes(cut, std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(keep)));
      std::string message = error_message([&] { read_image(cut); });
      EXPECT_TRUE(contains(message, cut)) << message;
      EXPECT_TRUE(contains(message, "truncated")) << message;
    }
  }
}

TEST(Image, WriteToAnUnwritablePathLeavesNoFile) {
  TempDir dir;
  write_bytes(dir.file("plain-file"), {1, 2, 3});
  // A regular file where a folder should be: no temporary can be created there.
  std::string path = dir.file("plain-file/out.png");
  std::string message = error_message([&] { write_image(path, gradient(4, 4, 3)); });
  EXPECT_TRUE(contains(message, path)) << message;
  message = error_message([&] { write_image(dir.file("missing-dir/out.jpg"), gradient(4, 4, 3)); });
  EXPECT_TRUE(contains(message, dir.file("missing-dir/out.jpg"))) << message;
  message = error_message([&] { write_image(dir.file("out.bmp"), gradient(4, 4, 3)); });
  EXPECT_TRUE(contains(message, "out.bmp")) << message;
  EXPECT_TRUE(contains(message, ".png")) << message;
  EXPECT_EQ(folder_entries(dir.path()), (std::vector<std::string>{"plain-file"}));
}

TEST(Image, WriteReplacesAnExistingFile) {
  TempDir dir;
  write_image(dir.file("a.png"), gradient(4, 4, 3));
  write_image(dir.file("a.png"), gradient(6, 5, 1));
  Image back = read_image(dir.file("a.png"));
  EXPECT_EQ(back.width, 6);
  EXPECT_EQ(back.channels, 1);
  EXPECT_EQ(folder_entries(dir.path()), (std::vector<std::string>{"a.png"}));
}

// ------------------------------------------------------------------ memory bombs (pixel limits)

TEST(Image, PngClaimingMoreThanThePixelLimitIsRefusedFromItsHeader) {
  TempDir dir;
  ASSERT_EQ(std::getenv("CUDL_MAX_PIXELS"), nullptr) << "the test expects the default limit";
  // 20000x20000 = 400 megapixels (4.8 GB as RGB floats) in a few hundred bytes.
  std::vector<std::uint8_t> bomb = png_claiming(20000, 20000, 1);
  ASSERT_LT(bomb.size(), 1000u);
  write_bytes(dir.file("bomb.png"), bomb);
  std::string message = error_message([&] { read_image(dir.file("bomb.png")); });
  EXPECT_TRUE(contains(message, dir.file("bomb.png"))) << message;
  EXPECT_TRUE(contains(message, "20000x20000")) << message;
  EXPECT_TRUE(contains(message, "400000000 pixels")) << message;
  EXPECT_TRUE(contains(message, "limit of 100000000 pixels")) << message;
  EXPECT_TRUE(contains(message, "CUDL_MAX_PIXELS")) << message;
}

TEST(Image, JpegClaimingMoreThanThePixelLimitIsRefusedFromItsHeader) {
  TempDir dir;
  std::vector<std::uint8_t> bomb = jpeg_claiming(dir.file("small.jpg"), 30257, 10758);
  ASSERT_LT(bomb.size(), 2000u);
  std::string message = error_message([&] { decode_image(bomb, "bomb.jpg"); });
  EXPECT_TRUE(contains(message, "'bomb.jpg'")) << message;
  EXPECT_TRUE(contains(message, "JPEG claims 30257x10758")) << message;
  EXPECT_TRUE(contains(message, "limit of 100000000 pixels")) << message;
}

TEST(Image, ThePixelLimitIsAnOptionAndAnEnvironmentVariable) {
  TempDir dir;
  write_image(dir.file("a.png"), gradient(16, 16, 3));
  write_image(dir.file("a.jpg"), gradient(16, 16, 3));
  for (const char* name : {"a.png", "a.jpg"}) {
    ImageReadOptions options;
    options.max_pixels = 255;
    std::string message = error_message([&] { read_image(dir.file(name), options); });
    EXPECT_TRUE(contains(message, "16x16 (256 pixels), over the limit of 255 pixels")) << message;
    options.max_pixels = 256;
    EXPECT_EQ(read_image(dir.file(name), options).width, 16);
  }
  EXPECT_EQ(image_pixel_limit(), kDefaultMaxImagePixels);
  {
    ScopedEnv env("CUDL_MAX_PIXELS", "100");
    EXPECT_EQ(image_pixel_limit(), 100u);
    std::string message = error_message([&] { read_image(dir.file("a.png")); });
    EXPECT_TRUE(contains(message, dir.file("a.png"))) << message;
    EXPECT_TRUE(contains(message, "over the limit of 100 pixels (CUDL_MAX_PIXELS)")) << message;
    // The option wins over the environment.
    ImageReadOptions options;
    options.max_pixels = 1000;
    EXPECT_EQ(read_image(dir.file("a.png"), options).width, 16);
  }
  for (const char* bad : {"", "lots", "-5", "0", "1e9", "99999999999999999999999"}) {
    ScopedEnv env("CUDL_MAX_PIXELS", bad);
    std::string message = error_message([&] { read_image(dir.file("a.png")); });
    EXPECT_TRUE(contains(message, "CUDL_MAX_PIXELS")) << bad << ": " << message;
    EXPECT_TRUE(contains(message, "positive whole number")) << bad << ": " << message;
  }
}

TEST(Image, ResizeRefusesATargetOverThePixelLimit) {
  // A 3000x1 image (a valid 93-byte PNG) with its shorter side resized to 256 would be 768000x256:
  // 2.4 GB of floats.
  Image thin(3000, 1, 3);
  std::string message = error_message([&] { resize(thin, 768000, 256); });
  EXPECT_TRUE(contains(message, "resize: 3000x1 -> 768000x256")) << message;
  EXPECT_TRUE(contains(message, "196608000 pixels, over the limit of 100000000")) << message;
  // The crop of it that classify and the image-folder loader keep costs 224x224.
  Image window = resize_center_crop(thin, 768000, 256, 224, 224);
  EXPECT_EQ(window.width, 224);
  EXPECT_EQ(window.height, 224);
}

TEST(Image, ResizeCenterCropEqualsResizeThenCenterCrop) {
  Image src = gradient(37, 23, 3);
  for (std::size_t i = 0; i < src.pixels.size(); ++i)
    src.pixels[i] = std::fmod(src.pixels[i] * 7.3f + i * 0.013f, 1.0f);
  struct Case {
    int width, height, crop_width, crop_height;
  };
  for (const Case& c : {Case{80, 50, 30, 20}, Case{10, 7, 5, 5}, Case{37, 60, 37, 11}, Case{90, 23, 13, 23},
                        Case{37, 23, 20, 20}, Case{12, 200, 12, 12}}) {
    Image expected = center_crop(resize(src, c.width, c.height), c.crop_width, c.crop_height);
    Image got = resize_center_crop(src, c.width, c.height, c.crop_width, c.crop_height);
    ASSERT_EQ(got.width, expected.width);
    ASSERT_EQ(got.height, expected.height);
    EXPECT_EQ(got.pixels, expected.pixels)
        << c.width << "x" << c.height << " crop " << c.crop_width << "x" << c.crop_height;
  }
  Image thin = gradient(50, 2, 1);
  EXPECT_EQ(resize_center_crop(thin, 400, 16, 16, 16).pixels, center_crop(resize(thin, 400, 16), 16, 16).pixels);
  std::string message = error_message([&] { resize_center_crop(src, 10, 10, 11, 5); });
  EXPECT_TRUE(contains(message, "11x5")) << message;
}

TEST(Image, LargeJpegsDecodeAtAReducedScaleWhenASmallerSizeIsAllThatIsNeeded) {
  TempDir dir;
  Image full = gradient(400, 200, 3);
  write_image(dir.file("big.jpg"), full);
  write_image(dir.file("big.png"), full);
  struct Case {
    int longest, shorter, width, height;
  };
  for (const Case& c : {Case{100, 0, 100, 50},    // 1/4: the longest side stays >= 100
                        Case{0, 60, 200, 100},    // 1/2: 1/4 would leave a shorter side of 50
                        Case{0, 25, 50, 25},      // 1/8
                        Case{120, 60, 200, 100},  // both needs
                        Case{0, 201, 400, 200},   // more than the image: full size
                        Case{0, 0, 400, 200}}) {
    ImageReadOptions options;
    options.longest_side = c.longest;
    options.shorter_side = c.shorter;
    Image scaled = read_image(dir.file("big.jpg"), options);
    EXPECT_EQ(scaled.width, c.width) << c.longest << "/" << c.shorter;
    EXPECT_EQ(scaled.height, c.height) << c.longest << "/" << c.shorter;
    // Close to the full image shrunk the ordinary way.
    EXPECT_LT(max_abs_diff(scaled.pixels, resize(full, c.width, c.height).pixels), 0.05f);
    // PNGs are decoded whole.
    EXPECT_EQ(read_image(dir.file("big.png"), options).width, 400);
  }
}

TEST(Image, AProgressiveJpegWithThousandsOfScansIsRefused) {
  // Each scan is a pass over the whole image, and a decoder only warns about a bogus progression:
  // a small file repeating one scan costs one pass per copy.
  std::vector<std::uint8_t> jpeg = read_bytes(source_dir() + "/tests/fuzz/corpus/image/progressive_16x16.jpg");
  ASSERT_GT(jpeg.size(), 4u);
  EXPECT_EQ(decode_image(jpeg, "ok.jpg").width, 16);
  // The first scan (the DC one) with the Huffman table defined just before it: from that DHT to
  // the marker after the scan's entropy-coded data.
  std::size_t sos = 0, dht = 0, end = 0;
  for (std::size_t i = 0; i + 1 < jpeg.size() && sos == 0; ++i) {
    if (jpeg[i] == 0xff && jpeg[i + 1] == 0xc4) dht = i;
    if (jpeg[i] == 0xff && jpeg[i + 1] == 0xda) sos = i;
  }
  ASSERT_GT(sos, dht);
  ASSERT_GT(dht, 0u);
  std::size_t data = sos + 2 + (std::size_t{jpeg[sos + 2]} << 8 | jpeg[sos + 3]);
  for (end = data; end + 1 < jpeg.size(); ++end) {
    std::uint8_t next = jpeg[end + 1];
    if (jpeg[end] == 0xff && next != 0x00 && !(next >= 0xd0 && next <= 0xd7)) break;
  }
  const std::vector<std::uint8_t> scan(jpeg.begin() + static_cast<std::ptrdiff_t>(dht),
                                       jpeg.begin() + static_cast<std::ptrdiff_t>(end));
  std::vector<std::uint8_t> many(jpeg.begin(), jpeg.end() - 2);  // all but EOI
  for (int i = 0; i < 1000; ++i) many.insert(many.end(), scan.begin(), scan.end());
  many.insert(many.end(), {0xff, 0xd9});
  std::string message = error_message([&] { decode_image(many, "scans.jpg"); });
  EXPECT_TRUE(contains(message, "'scans.jpg'")) << message;
  EXPECT_TRUE(contains(message, "more than 1000 progressive scans")) << message;
}
