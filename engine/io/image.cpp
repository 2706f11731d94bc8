// Image decoding, encoding and resampling on the host.
//
// libpng and libjpeg report errors by calling a handler that must not return. We longjmp out of
// it back to a setjmp in a small decode/encode function whose frame holds no C++ objects, so no
// destructor is ever skipped; the libraries' state lives in a struct owned by the caller, which
// frees it on every path and turns the recorded message into a cudl::Error.
#include "cudl/engine/io/image.hpp"

#include <png.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>

// jpeglib.h needs FILE and size_t declared first.
#include <jerror.h>
#include <jpeglib.h>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/files.hpp"

namespace cudl {

namespace {

// Decoded images are stored as floats; refuse sizes whose buffer would be absurd (a corrupt or
// hostile header) before allocating it.
constexpr std::uint64_t kMaxValues = std::uint64_t{1} << 30;

void check_size(std::uint64_t width, std::uint64_t height, std::uint64_t channels, const std::string& name,
                const char* format) {
  CUDL_CHECK(width > 0 && height > 0, "read_image: '{}': {} has an empty size {}x{}", name, format, width, height);
  CUDL_CHECK(width * height * channels <= kMaxValues,
             "read_image: '{}': {} of {}x{}x{} is too large (more than {} values)", name, format, width, height,
             channels, kMaxValues);
}

// The limit a read enforces and how the user changes it, for the message.
struct PixelLimit {
  std::uint64_t pixels;
  const char* hint;
};

PixelLimit resolve_limit(const ImageReadOptions& options) {
  if (options.max_pixels > 0) return {options.max_pixels, ""};
  return {image_pixel_limit(), std::getenv("CUDL_MAX_PIXELS") ? " (CUDL_MAX_PIXELS)" : " (CUDL_MAX_PIXELS raises it)"};
}

// From the header, before a byte of pixel data is decoded or a buffer sized.
void check_claimed_size(std::uint64_t width, std::uint64_t height, const PixelLimit& limit, const std::string& name,
                        const char* format) {
  CUDL_CHECK(width * height <= limit.pixels,
             "read_image: '{}': the {} claims {}x{} ({} pixels), over the limit of {} pixels{}", name, format, width,
             height, width * height, limit.pixels, limit.hint);
}

std::uint8_t to_byte(float v) {
  v = std::clamp(v, 0.0f, 1.0f);
  return static_cast<std::uint8_t>(std::lround(v * 255.0f));
}

// ------------------------------------------------------------------------------------------ PNG

struct PngReader {
  std::jmp_buf jump;
  char message[256] = "";
  const std::uint8_t* data = nullptr;
  std::size_t size = 0, pos = 0;
  png_structp png = nullptr;
  png_infop info = nullptr;
  png_uint_32 width = 0, height = 0;
  int channels = 0, bit_depth = 0;
  std::vector<png_byte> raw;
  std::vector<png_bytep> rows;
  std::string name;
  PixelLimit limit{};

  ~PngReader() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", message);
  std::longjmp(r->jump, 1);
}

// Warnings ("iCCP: known incorrect sRGB profile") do not affect the pixels.
void png_on_warning(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep out, png_size_t count) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (count > r->size - r->pos) png_error(png, "file is truncated");
  std::memcpy(out, r->data + r->pos, count);
  r->pos += count;
}

// Returns false when libpng reported an error (message in r->message). The size checks may throw:
// a normal C++ throw from this frame, which is fine (it is not a longjmp), and the reader's
// destructor frees libpng's state.
bool png_decode(PngReader* r) {
  if (setjmp(r->jump)) return false;
  png_set_read_fn(r->png, r, png_read_memory);
  png_read_info(r->png, r->info);
  check_claimed_size(png_get_image_width(r->png, r->info), png_get_image_height(r->png, r->info), r->limit, r->name,
                     "PNG");
  int color_type = png_get_color_type(r->png, r->info);
  int depth = png_get_bit_depth(r->png, r->info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r->png);
  if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
  if (png_get_valid(r->png, r->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r->png);
  png_set_interlace_handling(r->png);
  png_read_update_info(r->png, r->info);
  r->width = png_get_image_width(r->png, r->info);
  r->height = png_get_image_height(r->png, r->info);
  r->channels = png_get_channels(r->png, r->info);
  r->bit_depth = png_get_bit_depth(r->png, r->info);
  check_size(r->width, r->height, static_cast<std::uint64_t>(r->channels), r->name, "PNG");
  std::size_t row_bytes = png_get_rowbytes(r->png, r->info);
  r->raw.resize(row_bytes * r->height);
  r->rows.resize(r->height);
  for (png_uint_32 y = 0; y < r->height; ++y) r->rows[y] = r->raw.data() + y * row_bytes;
  png_read_image(r->png, r->rows.data());
  // Reads up to IEND, so a file cut after its pixel data is still reported as truncated.
  png_read_end(r->png, nullptr);
  return true;
}

Image decode_png(std::span<const std::uint8_t> bytes, const std::string& name, const PixelLimit& limit) {
  PngReader r;
  r.data = bytes.data();
  r.size = bytes.size();
  r.name = name;
  r.limit = limit;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_on_error, png_on_warning);
  CUDL_CHECK(r.png != nullptr, "read_image: '{}': png_create_read_struct failed", name);
  r.info = png_create_info_struct(r.png);
  CUDL_CHECK(r.info != nullptr, "read_image: '{}': png_create_info_struct failed", name);
  if (!png_decode(&r)) CUDL_THROW("read_image: '{}': corrupt or truncated PNG (libpng: {})", name, r.message);
  CUDL_CHECK((r.bit_depth == 8 || r.bit_depth == 16) && r.channels >= 1 && r.channels <= 4,
             "read_image: '{}': unexpected PNG layout after expansion ({} channels, {} bits)", name, r.channels,
             r.bit_depth);

  Image image(static_cast<int>(r.width), static_cast<int>(r.height), r.channels);
  std::size_t values = image.pixels.size();
  if (r.bit_depth == 8) {
    for (std::size_t i = 0; i < values; ++i) image.pixels[i] = static_cast<float>(r.raw[i]) * (1.0f / 255.0f);
  } else {
    // PNG stores 16-bit samples big-endian.
    for (std::size_t i = 0; i < values; ++i) {
      unsigned v = (static_cast<unsigned>(r.raw[2 * i]) << 8) | r.raw[2 * i + 1];
      image.pixels[i] = static_cast<float>(v) * (1.0f / 65535.0f);
    }
  }
  // Rows are contiguous in r.raw (row_bytes == width * channels * bytes per sample), so the flat
  // loops above walk the image in HWC order.
  return image;
}

struct PngWriter {
  std::jmp_buf jump;
  char message[256] = "";
  png_structp png = nullptr;
  png_infop info = nullptr;
  const Image* image = nullptr;
  std::vector<std::uint8_t> row;
  std::vector<std::uint8_t> out;
  bool out_of_memory = false;

  ~PngWriter() {
    if (png) png_destroy_write_struct(&png, info ? &info : nullptr);
  }
};

void png_write_error(png_structp png, png_const_charp message) {
  auto* w = static_cast<PngWriter*>(png_get_error_ptr(png));
  std::snprintf(w->message, sizeof w->message, "%s", message);
  std::longjmp(w->jump, 1);
}

void png_write_memory(png_structp png, png_bytep data, png_size_t count) {
  auto* w = static_cast<PngWriter*>(png_get_io_ptr(png));
  // An exception must not unwind through libpng's C frames; report it the library's way instead.
  try {
    w->out.insert(w->out.end(), data, data + count);
  } catch (...) {
    w->out_of_memory = true;
  }
  if (w->out_of_memory) png_error(png, "out of memory");
}

void png_flush_memory(png_structp) {}

bool png_encode(PngWriter* w) {
  if (setjmp(w->jump)) return false;
  const Image& img = *w->image;
  static constexpr int kColorTypes[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                        PNG_COLOR_TYPE_RGB_ALPHA};
  png_set_write_fn(w->png, w, png_write_memory, png_flush_memory);
  png_set_IHDR(w->png, w->info, static_cast<png_uint_32>(img.width), static_cast<png_uint_32>(img.height), 8,
               kColorTypes[img.channels - 1], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(w->png, w->info);
  std::size_t row_values = static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.channels);
  for (int y = 0; y < img.height; ++y) {
    const float* src = img.pixels.data() + static_cast<std::size_t>(y) * row_values;
    for (std::size_t i = 0; i < row_values; ++i) w->row[i] = to_byte(src[i]);
    png_write_row(w->png, w->row.data());
  }
  png_write_end(w->png, nullptr);
  return true;
}

std::vector<std::uint8_t> encode_png(const Image& image, const std::string& path) {
  PngWriter w;
  w.image = &image;
  w.row.resize(static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.channels));
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_write_error, png_on_warning);
  CUDL_CHECK(w.png != nullptr, "write_image: '{}': png_create_write_struct failed", path);
  w.info = png_create_info_struct(w.png);
  CUDL_CHECK(w.info != nullptr, "write_image: '{}': png_create_info_struct failed", path);
  if (!png_encode(&w)) CUDL_THROW("write_image: '{}': PNG encoding failed (libpng: {})", path, w.message);
  return std::move(w.out);
}

// ----------------------------------------------------------------------------------------- JPEG

struct JpegReader {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr err{};
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
  bool created = false;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  std::vector<std::uint8_t> raw;
  int width = 0, height = 0, components = 0;
  bool cmyk = false, adobe = false;
  std::string name;
  PixelLimit limit{};
  int longest_side = 0, shorter_side = 0;
  jpeg_progress_mgr progress{};

  ~JpegReader() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

struct JpegWriter {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr err{};
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
  bool created = false;
  unsigned char* buffer = nullptr;  // malloc'ed by jpeg_mem_dest
  unsigned long buffer_size = 0;
  const Image* image = nullptr;
  std::vector<std::uint8_t> row;

  ~JpegWriter() {
    if (created) jpeg_destroy_compress(&cinfo);
    std::free(buffer);
  }
};

// client_data points at the reader or writer; both start with nothing we need but jump/message,
// so the handlers take those two through this small view.
struct JpegJump {
  std::jmp_buf* jump;
  char* message;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* j = static_cast<JpegJump*>(cinfo->client_data);
  (*cinfo->err->format_message)(cinfo, j->message);
  std::longjmp(*j->jump, 1);
}

// libjpeg only warns when the data runs out (it pads with a fake end-of-image marker and returns
// grey pixels); a truncated file is an error for us. Other warnings (extraneous bytes between
// markers, common in camera files) leave the pixels intact and are ignored.
void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && (cinfo->err->msg_code == JWRN_JPEG_EOF || cinfo->err->msg_code == JWRN_HIT_MARKER)) {
    jpeg_on_error(cinfo);
  }
}

// A progressive JPEG may hold any number of scans, each a pass over the whole image: a small file
// with thousands of them costs minutes. Real encoders write about ten; libjpeg-turbo's own advice
// is to cap them (djpeg -maxscans).
constexpr int kMaxJpegScans = 1000;

void jpeg_on_progress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number <= kMaxJpegScans) return;
  auto* j = static_cast<JpegJump*>(cinfo->client_data);
  std::snprintf(j->message, JMSG_LENGTH_MAX, "more than %d progressive scans", kMaxJpegScans);
  std::longjmp(*j->jump, 1);
}

// The largest power-of-two reduction (libjpeg scales by 1/2, 1/4 or 1/8 in its inverse DCT) that
// keeps the sides the caller needs; 1 when it needs the whole image.
unsigned jpeg_scale_denominator(std::uint64_t width, std::uint64_t height, int longest_side, int shorter_side) {
  if (longest_side <= 0 && shorter_side <= 0) return 1;
  for (unsigned d : {8u, 4u, 2u}) {
    std::uint64_t w = (width + d - 1) / d, h = (height + d - 1) / d;  // libjpeg rounds up
    if (std::max(w, h) >= static_cast<std::uint64_t>(std::max(longest_side, 0)) &&
        std::min(w, h) >= static_cast<std::uint64_t>(std::max(shorter_side, 0)))
      return d;
  }
  return 1;
}

bool jpeg_decode(JpegReader* r, JpegJump* jump) {
  r->cinfo.err = jpeg_std_error(&r->err);
  r->err.error_exit = jpeg_on_error;
  r->err.emit_message = jpeg_on_message;
  r->cinfo.client_data = jump;
  if (setjmp(r->jump)) return false;
  jpeg_create_decompress(&r->cinfo);
  r->created = true;
  r->progress.progress_monitor = jpeg_on_progress;
  r->cinfo.progress = &r->progress;
  jpeg_mem_src(&r->cinfo, r->data, static_cast<unsigned long>(r->size));
  jpeg_read_header(&r->cinfo, TRUE);
  check_claimed_size(r->cinfo.image_width, r->cinfo.image_height, r->limit, r->name, "JPEG");
  r->cinfo.scale_num = 1;
  r->cinfo.scale_denom =
      jpeg_scale_denominator(r->cinfo.image_width, r->cinfo.image_height, r->longest_side, r->shorter_side);
  switch (r->cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
      r->cinfo.out_color_space = JCS_GRAYSCALE;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      // libjpeg converts YCCK to CMYK but not on to RGB; decode_jpeg does that last step.
      r->cinfo.out_color_space = JCS_CMYK;
      r->cmyk = true;
      break;
    default:
      r->cinfo.out_color_space = JCS_RGB;
      break;
  }
  jpeg_start_decompress(&r->cinfo);
  r->width = static_cast<int>(r->cinfo.output_width);
  r->height = static_cast<int>(r->cinfo.output_height);
  r->components = r->cinfo.output_components;
  r->adobe = r->cinfo.saw_Adobe_marker;
  check_size(r->cinfo.output_width, r->cinfo.output_height, static_cast<std::uint64_t>(r->components), r->name, "JPEG");
  std::size_t row_bytes = static_cast<std::size_t>(r->width) * static_cast<std::size_t>(r->components);
  r->raw.resize(row_bytes * static_cast<std::size_t>(r->height));
  while (r->cinfo.output_scanline < r->cinfo.output_height) {
    JSAMPROW row = r->raw.data() + r->cinfo.output_scanline * row_bytes;
    jpeg_read_scanlines(&r->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&r->cinfo);
  return true;
}

Image decode_jpeg(std::span<const std::uint8_t> bytes, const std::string& name, const PixelLimit& limit,
                  const ImageReadOptions& options) {
  JpegReader r;
  r.data = bytes.data();
  r.size = bytes.size();
  r.name = name;
  r.limit = limit;
  r.longest_side = options.longest_side;
  r.shorter_side = options.shorter_side;
  JpegJump jump{&r.jump, r.message};
  if (!jpeg_decode(&r, &jump)) CUDL_THROW("read_image: '{}': corrupt or truncated JPEG (libjpeg: {})", name, r.message);

  if (!r.cmyk) {
    Image image(r.width, r.height, r.components);
    for (std::size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = static_cast<float>(r.raw[i]) / 255.0f;
    return image;
  }
  // Photoshop (the Adobe marker) writes CMYK inverted; others write it plain.
  Image image(r.width, r.height, 3);
  std::size_t pixels = static_cast<std::size_t>(r.width) * static_cast<std::size_t>(r.height);
  for (std::size_t p = 0; p < pixels; ++p) {
    float k = r.raw[4 * p + 3] / 255.0f;
    for (int c = 0; c < 3; ++c) {
      float v = r.raw[4 * p + static_cast<std::size_t>(c)] / 255.0f;
      image.pixels[3 * p + static_cast<std::size_t>(c)] = r.adobe ? v * k : (1.0f - v) * (1.0f - k);
    }
  }
  return image;
}

bool jpeg_encode(JpegWriter* w, JpegJump* jump) {
  w->cinfo.err = jpeg_std_error(&w->err);
  w->err.error_exit = jpeg_on_error;
  w->cinfo.client_data = jump;
  if (setjmp(w->jump)) return false;
  const Image& img = *w->image;
  jpeg_create_compress(&w->cinfo);
  w->created = true;
  jpeg_mem_dest(&w->cinfo, &w->buffer, &w->buffer_size);
  bool grey = img.channels <= 2;
  w->cinfo.image_width = static_cast<JDIMENSION>(img.width);
  w->cinfo.image_height = static_cast<JDIMENSION>(img.height);
  w->cinfo.input_components = grey ? 1 : 3;
  w->cinfo.in_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&w->cinfo);
  jpeg_set_quality(&w->cinfo, 95, TRUE);
  jpeg_start_compress(&w->cinfo, TRUE);
  int out_channels = grey ? 1 : 3;
  while (w->cinfo.next_scanline < w->cinfo.image_height) {
    int y = static_cast<int>(w->cinfo.next_scanline);
    for (int x = 0; x < img.width; ++x) {
      for (int c = 0; c < out_channels; ++c) {
        w->row[static_cast<std::size_t>(x * out_channels + c)] = to_byte(img.at(y, x, c));  // alpha dropped
      }
    }
    JSAMPROW row = w->row.data();
    jpeg_write_scanlines(&w->cinfo, &row, 1);
  }
  jpeg_finish_compress(&w->cinfo);
  return true;
}

std::vector<std::uint8_t> encode_jpeg(const Image& image, const std::string& path) {
  JpegWriter w;
  w.image = &image;
  w.row.resize(static_cast<std::size_t>(image.width) * 3);
  JpegJump jump{&w.jump, w.message};
  if (!jpeg_encode(&w, &jump)) CUDL_THROW("write_image: '{}': JPEG encoding failed (libjpeg: {})", path, w.message);
  return std::vector<std::uint8_t>(w.buffer, w.buffer + w.buffer_size);
}

// ------------------------------------------------------------------------------------ resampling

// Keys' cubic convolution with a = -0.5 (Catmull-Rom), Pillow's BICUBIC.
double cubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// For each output index in [begin, begin + count) of a resize from in_size to out_size along one
// axis: the first input index and the normalised weights of the inputs it reads (Pillow's
// precompute_coeffs). A window of the output gets the same taps as the whole would.
struct Taps {
  std::vector<int> first;
  std::vector<int> count;
  std::vector<float> weights;  // stride `max_count` per output
  int max_count = 0;
};

Taps make_taps(int in_size, int out_size, int begin, int count) {
  double scale = static_cast<double>(in_size) / out_size;
  double filter_scale = std::max(scale, 1.0);  // widen the kernel when shrinking: antialiasing
  double support = 2.0 * filter_scale;
  Taps t;
  t.max_count = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<std::size_t>(count));
  t.count.resize(static_cast<std::size_t>(count));
  t.weights.assign(static_cast<std::size_t>(count) * static_cast<std::size_t>(t.max_count), 0.0f);
  std::vector<double> w(static_cast<std::size_t>(t.max_count));
  for (int i = 0; i < count; ++i) {
    double center = (begin + i + 0.5) * scale;
    int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    int n = std::min(hi - lo, t.max_count);
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
      w[static_cast<std::size_t>(j)] = cubic((j + lo - center + 0.5) / filter_scale);
      sum += w[static_cast<std::size_t>(j)];
    }
    float* out = t.weights.data() + static_cast<std::size_t>(i) * static_cast<std::size_t>(t.max_count);
    for (int j = 0; j < n; ++j) out[j] = static_cast<float>(sum != 0.0 ? w[static_cast<std::size_t>(j)] / sum : 0.0);
    t.first[static_cast<std::size_t>(i)] = lo;
    t.count[static_cast<std::size_t>(i)] = n;
  }
  return t;
}

// Columns [begin, begin + count) of src resized to `width` columns.
Image resize_horizontal(const Image& src, int width, int begin, int count) {
  Taps t = make_taps(src.width, width, begin, count);
  Image dst(count, src.height, src.channels);
  for (int y = 0; y < src.height; ++y) {
    for (int x = 0; x < count; ++x) {
      const float* w = t.weights.data() + static_cast<std::size_t>(x) * static_cast<std::size_t>(t.max_count);
      int first = t.first[static_cast<std::size_t>(x)], n = t.count[static_cast<std::size_t>(x)];
      for (int c = 0; c < src.channels; ++c) {
        float acc = 0.0f;
        for (int j = 0; j < n; ++j) acc += w[j] * src.at(y, first + j, c);
        dst.at(y, x, c) = acc;
      }
    }
  }
  return dst;
}

// Rows [begin, begin + count) of src resized to `height` rows.
Image resize_vertical(const Image& src, int height, int begin, int count) {
  Taps t = make_taps(src.height, height, begin, count);
  Image dst(src.width, count, src.channels);
  std::size_t row_values = static_cast<std::size_t>(src.width) * static_cast<std::size_t>(src.channels);
  for (int y = 0; y < count; ++y) {
    const float* w = t.weights.data() + static_cast<std::size_t>(y) * static_cast<std::size_t>(t.max_count);
    int first = t.first[static_cast<std::size_t>(y)], n = t.count[static_cast<std::size_t>(y)];
    float* out = dst.pixels.data() + static_cast<std::size_t>(y) * row_values;
    // Whole rows at a time: contiguous, so the compiler vectorises the inner loop.
    for (int j = 0; j < n; ++j) {
      const float* in = src.pixels.data() + static_cast<std::size_t>(first + j) * row_values;
      for (std::size_t i = 0; i < row_values; ++i) out[i] += w[j] * in[i];
    }
  }
  return dst;
}

void check_image(const Image& image, const char* who) {
  CUDL_CHECK(image.width > 0 && image.height > 0 && image.channels >= 1 && image.channels <= 4,
             "{}: invalid image {}x{} with {} channels (expected a positive size and 1-4 channels)", who, image.width,
             image.height, image.channels);
  CUDL_CHECK(image.pixels.size() == static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) *
                                        static_cast<std::size_t>(image.channels),
             "{}: image {}x{}x{} holds {} values, expected {}", who, image.width, image.height, image.channels,
             image.pixels.size(),
             static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) *
                 static_cast<std::size_t>(image.channels));
}

// The pixels of an image that would be width x height, refused over the pixel limit before the
// buffer is allocated.
void check_target_pixels(std::uint64_t width, std::uint64_t height, const char* who, const Image& from) {
  const std::uint64_t limit = image_pixel_limit();
  CUDL_CHECK(width * height <= limit,
             "{}: {}x{} -> {}x{} would be {} pixels, over the limit of {} pixels (CUDL_MAX_PIXELS)", who, from.width,
             from.height, width, height, width * height, limit);
}

// The window (x, y, w, h) of `image` resized to width x height, computed for the window alone.
// Same arithmetic per output pixel as the whole resize, so the values are identical.
Image resize_window(const Image& image, int width, int height, int x, int y, int w, int h) {
  if (width == image.width && height == image.height) return crop(image, x, y, w, h);
  // Resample the axis that shrinks most first, so the second pass works on fewer pixels.
  bool horizontal_first = static_cast<double>(width) / image.width <= static_cast<double>(height) / image.height;
  Image out;
  if (horizontal_first) {
    out = width != image.width ? resize_horizontal(image, width, x, w) : crop(image, x, 0, w, image.height);
    out = height != image.height ? resize_vertical(out, height, y, h) : crop(out, 0, y, w, h);
  } else {
    out = height != image.height ? resize_vertical(image, height, y, h) : crop(image, 0, y, image.width, h);
    out = width != image.width ? resize_horizontal(out, width, x, w) : crop(out, x, 0, w, h);
  }
  for (float& v : out.pixels) v = std::clamp(v, 0.0f, 1.0f);
  return out;
}

std::string lower_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext;
}

}  // namespace

Image::Image(int w, int h, int c)
    : width(w),
      height(h),
      channels(c),
      pixels(static_cast<std::size_t>(std::max(w, 0)) * static_cast<std::size_t>(std::max(h, 0)) *
                 static_cast<std::size_t>(std::max(c, 0)),
             0.0f) {}

std::uint64_t image_pixel_limit() {
  const char* text = std::getenv("CUDL_MAX_PIXELS");
  if (text == nullptr) return kDefaultMaxImagePixels;
  std::uint64_t value = 0;
  bool ok = *text != '\0';
  for (const char* p = text; ok && *p; ++p) {
    ok = *p >= '0' && *p <= '9' && !__builtin_mul_overflow(value, 10u, &value) &&
         !__builtin_add_overflow(value, static_cast<unsigned>(*p - '0'), &value);
  }
  CUDL_CHECK(ok && value > 0, "CUDL_MAX_PIXELS='{}' must be a positive whole number of pixels (default {})", text,
             kDefaultMaxImagePixels);
  return value;
}

Image decode_image(std::span<const std::uint8_t> bytes, const std::string& name, const ImageReadOptions& options) {
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  static constexpr std::uint8_t kJpeg[3] = {0xff, 0xd8, 0xff};
  CUDL_CHECK(!bytes.empty(), "read_image: '{}' is empty", name);
  if (bytes.size() >= sizeof kPng && std::equal(kPng, kPng + sizeof kPng, bytes.begin()))
    return decode_png(bytes, name, resolve_limit(options));
  if (bytes.size() >= sizeof kJpeg && std::equal(kJpeg, kJpeg + sizeof kJpeg, bytes.begin())) {
    return decode_jpeg(bytes, name, resolve_limit(options), options);
  }
  std::string head;
  for (std::size_t i = 0; i < std::min<std::size_t>(bytes.size(), 8); ++i) head += fmt::format("{:02x}", bytes[i]);
  CUDL_THROW("read_image: '{}' is neither PNG nor JPEG (starts with bytes {})", name, head);
}

Image read_image(const std::string& path, const ImageReadOptions& options) {
  return decode_image(io::read_file(path, "read_image"), path, options);
}

void write_image(const std::string& path, const Image& image) {
  check_image(image, "write_image");
  std::string ext = lower_extension(path);
  std::vector<std::uint8_t> bytes;
  if (ext == ".png") {
    bytes = encode_png(image, path);
  } else if (ext == ".jpg" || ext == ".jpeg") {
    bytes = encode_jpeg(image, path);
  } else {
    CUDL_THROW("write_image: '{}': unknown extension '{}' (expected .png, .jpg or .jpeg)", path, ext);
  }
  CUDL_CHECK(!std::filesystem::path(path).filename().empty(), "write_image: '{}' names a folder, expected a file",
             path);
  write_file_atomically(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

Image to_rgb(const Image& image) {
  check_image(image, "to_rgb");
  if (image.channels == 3) return image;
  Image out(image.width, image.height, 3);
  std::size_t pixels = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height);
  std::size_t in_c = static_cast<std::size_t>(image.channels);
  for (std::size_t p = 0; p < pixels; ++p) {
    const float* in = image.pixels.data() + p * in_c;
    float* o = out.pixels.data() + 3 * p;
    if (in_c <= 2) {
      o[0] = o[1] = o[2] = in[0];
    } else {
      o[0] = in[0], o[1] = in[1], o[2] = in[2];
    }
  }
  return out;
}

Image resize(const Image& image, int width, int height) {
  check_image(image, "resize");
  CUDL_CHECK(width > 0 && height > 0, "resize: target size {}x{} must be positive (image is {}x{})", width, height,
             image.width, image.height);
  if (width == image.width && height == image.height) return image;
  check_target_pixels(static_cast<std::uint64_t>(width), static_cast<std::uint64_t>(height), "resize", image);
  return resize_window(image, width, height, 0, 0, width, height);
}

Image resize_center_crop(const Image& image, int width, int height, int crop_width, int crop_height) {
  check_image(image, "resize_center_crop");
  CUDL_CHECK(
      width > 0 && height > 0 && crop_width > 0 && crop_height > 0 && crop_width <= width && crop_height <= height,
      "resize_center_crop: a {}x{} window does not fit in {}x{} (image is {}x{})", crop_width, crop_height, width,
      height, image.width, image.height);
  // As center_crop rounds its offsets.
  int x = static_cast<int>(std::lround((width - crop_width) / 2.0));
  int y = static_cast<int>(std::lround((height - crop_height) / 2.0));
  return resize_window(image, width, height, x, y, crop_width, crop_height);
}

Image resize_shorter_center_crop(const Image& image, int size, const std::string& name) {
  const int w = image.width, h = image.height;
  const double new_w = w <= h ? size : std::max<double>(size, std::round(static_cast<double>(w) * size / h));
  const double new_h = h < w ? size : std::max<double>(size, std::round(static_cast<double>(h) * size / w));
  CUDL_CHECK(new_w <= std::numeric_limits<int>::max() && new_h <= std::numeric_limits<int>::max(),
             "'{}': {}x{} with its shorter side at {} would be {:.0f}x{:.0f}, too elongated", name, w, h, size, new_w,
             new_h);
  return resize_center_crop(image, static_cast<int>(new_w), static_cast<int>(new_h), size, size);
}

Image crop(const Image& image, int x, int y, int width, int height) {
  check_image(image, "crop");
  CUDL_CHECK(width > 0 && height > 0 && x >= 0 && y >= 0 && x + width <= image.width && y + height <= image.height,
             "crop: window {}x{} at ({}, {}) does not lie inside the {}x{} image", width, height, x, y, image.width,
             image.height);
  Image out(width, height, image.channels);
  std::size_t row_values = static_cast<std::size_t>(width) * static_cast<std::size_t>(image.channels);
  for (int r = 0; r < height; ++r) {
    const float* src = &image.pixels[(static_cast<std::size_t>(y + r) * static_cast<std::size_t>(image.width) +
                                      static_cast<std::size_t>(x)) *
                                     static_cast<std::size_t>(image.channels)];
    std::copy(src, src + row_values, out.pixels.data() + static_cast<std::size_t>(r) * row_values);
  }
  return out;
}

Image center_crop(const Image& image, int width, int height) {
  check_image(image, "center_crop");
  CUDL_CHECK(width > 0 && height > 0 && width <= image.width && height <= image.height,
             "center_crop: {}x{} does not fit in the {}x{} image", width, height, image.width, image.height);
  int x = static_cast<int>(std::lround((image.width - width) / 2.0));
  int y = static_cast<int>(std::lround((image.height - height) / 2.0));
  return crop(image, x, y, width, height);
}

Image hflip(const Image& image) {
  check_image(image, "hflip");
  Image out(image.width, image.height, image.channels);
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      for (int c = 0; c < image.channels; ++c) out.at(y, image.width - 1 - x, c) = image.at(y, x, c);
    }
  }
  return out;
}

Tensor image_to_tensor(const Image& image, Context& ctx) {
  check_image(image, "image_to_tensor");
  std::size_t plane = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height);
  std::vector<float> chw(image.pixels.size());
  std::size_t channels = static_cast<std::size_t>(image.channels);
  for (std::size_t p = 0; p < plane; ++p) {
    for (std::size_t c = 0; c < channels; ++c) chw[c * plane + p] = image.pixels[p * channels + c];
  }
  return Tensor::from_host(chw, {1, image.channels, image.height, image.width}, ctx);
}

Image tensor_to_image(const Tensor& tensor, Context& ctx) {
  CUDL_CHECK(tensor.defined(), "tensor_to_image: the tensor is undefined");
  const Shape& s = tensor.shape();
  bool batched = s.rank() == 4 && s[0] == 1;
  CUDL_CHECK(batched || s.rank() == 3, "tensor_to_image: expected [1,C,H,W] or [C,H,W], got {}", s);
  std::int64_t c = s.dim(-3), h = s.dim(-2), w = s.dim(-1);
  CUDL_CHECK(c >= 1 && c <= 4 && h > 0 && w > 0, "tensor_to_image: expected 1-4 channels and a positive size, got {}",
             s);
  CUDL_CHECK(tensor.dtype() == DType::f32, "tensor_to_image: expected f32, got {} (shape {})",
             dtype_name(tensor.dtype()), s);
  std::vector<float> chw = tensor.to_vector(ctx);
  Image image(static_cast<int>(w), static_cast<int>(h), static_cast<int>(c));
  std::size_t plane = static_cast<std::size_t>(h * w);
  std::size_t channels = static_cast<std::size_t>(c);
  for (std::size_t p = 0; p < plane; ++p) {
    for (std::size_t k = 0; k < channels; ++k) image.pixels[p * channels + k] = chw[k * plane + p];
  }
  return image;
}

}  // namespace cudl
