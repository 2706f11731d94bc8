#include "cudl/engine/io/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <utility>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/half.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/files.hpp"

namespace cudl {

// The format is little-endian; reading it with memcpy is only right on a little-endian host
// (x86-64 and aarch64 Linux, everything cudl targets).
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

// A real header is kilobytes (VGG19's is about 3 KB); a length beyond this means the file is not
// safetensors at all, and we refuse before allocating or parsing it.
constexpr std::uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

// Every dtype the reference implementation defines, so a valid file from PyTorch (with an I64
// counter, say) opens; read_f32 then converts only the floating ones.
std::size_t dtype_bytes(const std::string& dtype) {
  static const std::map<std::string, std::size_t> sizes{
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

std::string errno_text(int err) { return std::generic_category().message(err); }

// Shape has no runtime-rank constructor; start from one of the right rank and fill it in.
Shape shape_from(const std::vector<std::int64_t>& dims) {
  Shape s;
  switch (dims.size()) {
    case 0:
      break;
    case 1:
      s = Shape{0};
      break;
    case 2:
      s = Shape{0, 0};
      break;
    case 3:
      s = Shape{0, 0, 0};
      break;
    case 4:
      s = Shape{0, 0, 0, 0};
      break;
    case 5:
      s = Shape{0, 0, 0, 0, 0};
      break;
    default:
      s = Shape{0, 0, 0, 0, 0, 0};
      break;
  }
  for (std::size_t i = 0; i < dims.size(); ++i) s[static_cast<int>(i)] = dims[i];
  return s;
}

// An ifstream opens a folder too, and reports its size as 2^63 - 1: only a regular file is read.
void check_regular_file(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  CUDL_CHECK(!ec, "safetensors: cannot open '{}': {}", path, ec.message());
  CUDL_CHECK(std::filesystem::is_regular_file(status), "safetensors: '{}' is {}, not a file", path,
             std::filesystem::is_directory(status) ? "a folder" : "a special file");
}

// A header value for a message. json::dump() recurses once per nesting level, and a hostile
// header nests arrays a million deep (2 MB): anything structured inside the value is named by
// its type, and the text is cut short.
std::string quote(const nlohmann::json& v) {
  std::string text;
  if (!v.is_structured()) {
    text = v.dump();
  } else if (v.is_array()) {
    text = "[";
    for (const auto& e : v) {
      if (text.size() > 1) text += ", ";
      text += e.is_structured() ? fmt::format("(an {})", e.type_name()) : e.dump();
      if (text.size() > 200) break;
    }
    text += "]";
  } else {
    text = fmt::format("an {}", v.type_name());
  }
  return text.size() > 200 ? text.substr(0, 200) + "..." : text;
}

template <class T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

// ------------------------------------------------------------------------------------------ reader

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  check_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  CUDL_CHECK(in.good(), "safetensors: cannot open '{}': {}", path, errno_text(errno));
  unsigned char length_bytes[8] = {};
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  CUDL_CHECK(in.gcount() == 8, "safetensors: '{}' is shorter than the 8-byte header length", path);
  const auto header_len = load<std::uint64_t>(length_bytes);
  CUDL_CHECK(header_len <= kMaxHeaderBytes, "safetensors: '{}': header length {} is absurd; not a safetensors file?",
             path, header_len);
  std::string text(static_cast<std::size_t>(header_len), '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  CUDL_CHECK(static_cast<std::uint64_t>(in.gcount()) == header_len,
             "safetensors: '{}': header length {} runs past the end of the file", path, header_len);
  const nlohmann::json header = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  CUDL_CHECK(!header.is_discarded() && header.is_object(), "safetensors: '{}': the header is not a JSON object", path);
  std::map<std::string, std::string> metadata;
  if (auto it = header.find("__metadata__"); it != header.end() && it->is_object())
    for (const auto& [key, value] : it->items())
      if (value.is_string()) metadata[key] = value.get<std::string>();
  return metadata;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  check_regular_file(path);
  return from_bytes(io::read_file(path, "safetensors"), path);
}

SafetensorsFile SafetensorsFile::from_bytes(std::vector<unsigned char> bytes, const std::string& file_name) {
  SafetensorsFile f;
  f.path_ = file_name;
  f.bytes_ = std::move(bytes);
  const std::string& path = f.path_;
  const std::size_t file_size = f.bytes_.size();
  CUDL_CHECK(file_size >= 8, "safetensors: '{}' is {} bytes, shorter than the 8-byte header length", path, file_size);
  const auto header_len = load<std::uint64_t>(f.bytes_.data());
  CUDL_CHECK(header_len <= kMaxHeaderBytes,
             "safetensors: '{}': header length {} is absurd (over {} bytes); not a safetensors file?", path, header_len,
             kMaxHeaderBytes);
  CUDL_CHECK(header_len <= file_size - 8,
             "safetensors: '{}': header length {} runs past the end of the file ({} bytes)", path, header_len,
             file_size);
  f.buffer_start_ = 8 + static_cast<std::size_t>(header_len);
  const std::uint64_t buffer_size = file_size - f.buffer_start_;

  const auto* header_begin = reinterpret_cast<const char*>(f.bytes_.data() + 8);
  // JSON keeps the last of two equal keys; a tensor named twice would silently lose one of them.
  std::set<std::string> keys;
  std::string repeated;
  const auto note_repeats = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && !keys.insert(parsed.get<std::string>()).second &&
        repeated.empty())
      repeated = parsed.get<std::string>();
    return true;
  };
  const nlohmann::json header =
      nlohmann::json::parse(header_begin, header_begin + header_len, note_repeats, /*allow_exceptions=*/false);
  CUDL_CHECK(!header.is_discarded(), "safetensors: '{}': the {}-byte header is not valid JSON", path, header_len);
  CUDL_CHECK(repeated.empty(), "safetensors: '{}': the header names '{}' twice", path, repeated);
  CUDL_CHECK(header.is_object(), "safetensors: '{}': the header is JSON but not an object", path);

  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      CUDL_CHECK(value.is_object(), "safetensors: '{}': __metadata__ must be an object of strings", path);
      for (const auto& [key, text] : value.items()) {
        CUDL_CHECK(text.is_string(), "safetensors: '{}': __metadata__ '{}' must be a string, got {}", path, key,
                   text.is_structured() ? fmt::format("an {}", text.type_name()) : quote(text));
        f.metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    CUDL_CHECK(value.is_object(), "safetensors: '{}': entry '{}' must be an object with dtype, shape, data_offsets",
               path, name);
    auto dtype_it = value.find("dtype");
    auto shape_it = value.find("shape");
    auto offsets_it = value.find("data_offsets");
    CUDL_CHECK(dtype_it != value.end() && dtype_it->is_string(), "safetensors: '{}': entry '{}' has no dtype string",
               path, name);
    CUDL_CHECK(shape_it != value.end() && shape_it->is_array(), "safetensors: '{}': entry '{}' has no shape array",
               path, name);
    CUDL_CHECK(offsets_it != value.end() && offsets_it->is_array() && offsets_it->size() == 2 &&
                   (*offsets_it)[0].is_number_unsigned() && (*offsets_it)[1].is_number_unsigned(),
               "safetensors: '{}': entry '{}' needs data_offsets [begin, end] of non-negative integers", path, name);

    Entry e;
    e.dtype = dtype_it->get<std::string>();
    const std::size_t elem = dtype_bytes(e.dtype);
    CUDL_CHECK(elem != 0, "safetensors: '{}': entry '{}' has unknown dtype '{}'", path, name, e.dtype);

    CUDL_CHECK(shape_it->size() <= static_cast<std::size_t>(Shape::kMaxRank),
               "safetensors: '{}': entry '{}' has rank {}, at most {} supported", path, name, shape_it->size(),
               Shape::kMaxRank);
    std::vector<std::int64_t> dims;
    bool has_zero = false;
    for (const auto& d : *shape_it) {
      CUDL_CHECK(d.is_number_unsigned() && d.get<std::uint64_t>() <= std::numeric_limits<std::int64_t>::max(),
                 "safetensors: '{}': entry '{}' has shape {}, expected non-negative integers", path, name,
                 quote(*shape_it));
      dims.push_back(d.get<std::int64_t>());
      has_zero = has_zero || dims.back() == 0;
    }
    // The element count saturates just past the buffer size, so a huge shape cannot overflow it.
    std::uint64_t numel = has_zero ? 0 : 1;
    for (std::int64_t d : dims)
      if (numel != 0) {
        const auto n = static_cast<std::uint64_t>(d);
        numel = numel > buffer_size / n ? buffer_size + 1 : numel * n;
      }
    e.shape = shape_from(dims);

    e.begin = (*offsets_it)[0].get<std::uint64_t>();
    e.end = (*offsets_it)[1].get<std::uint64_t>();
    CUDL_CHECK(e.begin <= e.end && e.end <= buffer_size,
               "safetensors: '{}': entry '{}' has data_offsets [{}, {}] outside the {}-byte data buffer", path, name,
               e.begin, e.end, buffer_size);
    CUDL_CHECK(numel <= buffer_size && e.end - e.begin == numel * elem,
               "safetensors: '{}': entry '{}' spans {} bytes, but shape {} of {} needs {}", path, name, e.end - e.begin,
               e.shape, e.dtype,
               numel > buffer_size ? std::string("more than the file") : std::to_string(numel * elem));
    f.entries_.emplace(name, std::move(e));
  }

  // Two tensors sharing bytes would alias silently; the reference implementation rejects it too.
  std::vector<std::pair<const std::string*, const Entry*>> by_offset;
  for (const auto& [name, e] : f.entries_)
    if (e.end > e.begin) by_offset.emplace_back(&name, &e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i)
    CUDL_CHECK(by_offset[i].second->begin >= by_offset[i - 1].second->end,
               "safetensors: '{}': entries '{}' [{}, {}] and '{}' [{}, {}] overlap", path, *by_offset[i - 1].first,
               by_offset[i - 1].second->begin, by_offset[i - 1].second->end, *by_offset[i].first,
               by_offset[i].second->begin, by_offset[i].second->end);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  CUDL_CHECK(it != entries_.end(), "safetensors: '{}' has no tensor '{}'", path_, name);
  return it->second;
}

const unsigned char* SafetensorsFile::data(const Entry& e) const {
  return bytes_.data() + buffer_start_ + static_cast<std::size_t>(e.begin);
}

Shape SafetensorsFile::shape(const std::string& name) const { return entry(name).shape; }

std::string SafetensorsFile::dtype(const std::string& name) const { return entry(name).dtype; }

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const Entry& e = entry(name);
  const auto n = static_cast<std::size_t>(e.shape.numel());
  const unsigned char* p = data(e);
  std::vector<float> out(n);
  if (e.dtype == "F32") {
    if (n) std::memcpy(out.data(), p, n * sizeof(float));
  } else if (e.dtype == "F16") {
    for (std::size_t i = 0; i < n; ++i) out[i] = to_float(f16{load<std::uint16_t>(p + 2 * i)});
  } else if (e.dtype == "BF16") {
    for (std::size_t i = 0; i < n; ++i) out[i] = to_float(bf16{load<std::uint16_t>(p + 2 * i)});
  } else if (e.dtype == "F64") {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(load<double>(p + 8 * i));
  } else {
    CUDL_THROW("safetensors: '{}': tensor '{}' is {}, expected F32, F16, BF16 or F64", path_, name, e.dtype);
  }
  return out;
}

Tensor SafetensorsFile::read(const std::string& name, Context& ctx) const {
  const Entry& e = entry(name);
  if (e.dtype == "F16" || e.dtype == "BF16") {
    const auto n = static_cast<std::size_t>(e.shape.numel());
    std::vector<std::uint16_t> bits(n);
    const unsigned char* p = data(e);
    for (std::size_t i = 0; i < n; ++i) bits[i] = load<std::uint16_t>(p + 2 * i);  // little-endian, any alignment
    Tensor t = Tensor::empty(e.shape, ctx, e.dtype == "F16" ? DType::f16 : DType::bf16);
    copy_bytes(ctx, t.raw(), t.device(), bits.data(), Device::cpu(), t.nbytes());
    ctx.synchronize();  // `bits` is freed on return
    return t;
  }
  if (e.dtype == "I32") return Tensor::from_host(read_i32(name), e.shape, ctx);
  Tensor t = Tensor::from_host(read_f32(name), e.shape, ctx);
  ctx.synchronize();
  return t;
}

std::vector<std::int32_t> SafetensorsFile::read_i32(const std::string& name) const {
  const Entry& e = entry(name);
  CUDL_CHECK(e.dtype == "I32", "safetensors: '{}': tensor '{}' is {}, expected I32", path_, name, e.dtype);
  std::vector<std::int32_t> out(static_cast<std::size_t>(e.shape.numel()));
  if (!out.empty()) std::memcpy(out.data(), data(e), out.size() * sizeof(std::int32_t));
  return out;
}

// ------------------------------------------------------------------------------------------ writer

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata) {
  // Everything is checked before the temporary file exists.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  std::vector<std::size_t> sizes;
  std::uint64_t offset = 0;
  for (const auto& e : entries) {
    CUDL_CHECK(!e.name.empty() && e.name != "__metadata__", "safetensors: cannot write '{}': invalid tensor name '{}'",
               path, e.name);
    CUDL_CHECK(seen.insert(e.name).second, "safetensors: cannot write '{}': tensor '{}' appears twice", path, e.name);
    const std::size_t elem = dtype_bytes(e.dtype);
    CUDL_CHECK(elem != 0, "safetensors: cannot write '{}': tensor '{}' has unknown dtype '{}'", path, e.name, e.dtype);
    const std::size_t bytes = static_cast<std::size_t>(e.shape.numel()) * elem;
    CUDL_CHECK(bytes == 0 || e.data != nullptr, "safetensors: cannot write '{}': tensor '{}' {} has no data", path,
               e.name, e.shape);
    header[e.name] = {{"dtype", e.dtype},
                      {"shape", std::vector<std::int64_t>(e.shape.begin(), e.shape.end())},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes.push_back(bytes);
  }
  std::string text = header.dump();
  // Pad to a multiple of 8 so the data buffer (and every F64/I64 tensor in it) starts aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::uint64_t header_len = text.size();

  write_file_atomically(path, [&](std::FILE* file) {
    auto put = [&](const void* data, std::size_t bytes) {
      CUDL_CHECK(bytes == 0 || std::fwrite(data, 1, bytes, file) == bytes, "safetensors: cannot write '{}': {}", path,
                 errno_text(errno));
    };
    put(&header_len, sizeof(header_len));
    put(text.data(), text.size());
    for (std::size_t i = 0; i < entries.size(); ++i) put(entries[i].data, sizes[i]);
  });
}

}  // namespace cudl
