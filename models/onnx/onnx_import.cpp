// Reading an ONNX file: the bytes, bounded, into a ModelProto; the opset; tensors decoded with their
// dims checked against their data. The graph's translation into layers is onnx_graph.cpp.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/checker.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "cudl/engine/error.hpp"
#include "cudl/models/onnx/onnx_detail.hpp"

namespace cudl {

namespace onnx_detail {

namespace {

// protobuf's own ceiling for one message; a larger file cannot be a valid ModelProto without
// external data, which cudl refuses.
constexpr std::uintmax_t kMaxFileBytes = (std::uintmax_t{2} << 30) - 1;
// Nesting of messages (graphs inside attributes inside nodes...): a real CNN needs 5 or 6 levels;
// the cap keeps a hostile file from exhausting the stack.
constexpr int kRecursionLimit = 32;
// Far more elements than any layer's weight; keeps products of dims from overflowing.
constexpr std::int64_t kMaxTensorElements = std::int64_t{1} << 31;

Shape shape_of(const std::vector<std::int64_t>& d, const std::string& where) {
  CUDL_CHECK(d.size() <= static_cast<std::size_t>(Shape::kMaxRank), "{}: rank {} (cudl takes at most {})", where,
             d.size(), Shape::kMaxRank);
  switch (d.size()) {
    case 0:
      return Shape{};
    case 1:
      return Shape{d[0]};
    case 2:
      return Shape{d[0], d[1]};
    case 3:
      return Shape{d[0], d[1], d[2]};
    case 4:
      return Shape{d[0], d[1], d[2], d[3]};
    case 5:
      return Shape{d[0], d[1], d[2], d[3], d[4]};
    default:
      return Shape{d[0], d[1], d[2], d[3], d[4], d[5]};
  }
}

template <typename T>
std::vector<T> from_raw(const std::string& raw) {
  std::vector<T> out(raw.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), raw.data(), out.size() * sizeof(T));  // little-endian, as x86/ARM
  return out;
}

}  // namespace

Decoded decode_tensor(const onnx::TensorProto& t, const std::string& where) {
  CUDL_CHECK(t.data_location() != onnx::TensorProto::EXTERNAL && t.external_data_size() == 0,
             "{}: its data is in an external file, which cudl does not read (save the model with its weights "
             "inside)",
             where);
  CUDL_CHECK(!t.has_segment(), "{}: segmented tensors are not supported", where);
  std::vector<std::int64_t> dims(t.dims().begin(), t.dims().end());
  std::int64_t n = 1;
  for (std::int64_t d : dims) {
    CUDL_CHECK(d >= 0 && (d == 0 || n <= kMaxTensorElements / d), "{}: dims {} (negative, or over 2^31 elements)",
               where, fmt::join(dims, "x"));
    n *= d;
  }
  Decoded out;
  out.shape = shape_of(dims, where);
  const auto type = t.data_type();
  if (type == onnx::TensorProto::FLOAT) {
    out.is_float = true;
    const std::size_t have = t.has_raw_data() ? t.raw_data().size() : static_cast<std::size_t>(t.float_data_size()) * 4;
    CUDL_CHECK(have == static_cast<std::size_t>(n) * 4,
               "{}: dims {} claim {} floats ({} bytes) but the tensor holds {} bytes", where, fmt::join(dims, "x"), n,
               n * 4, have);
    out.f = t.has_raw_data() ? from_raw<float>(t.raw_data())
                             : std::vector<float>(t.float_data().begin(), t.float_data().end());
  } else if (type == onnx::TensorProto::INT64) {
    const std::size_t have = t.has_raw_data() ? t.raw_data().size() : static_cast<std::size_t>(t.int64_data_size()) * 8;
    CUDL_CHECK(have == static_cast<std::size_t>(n) * 8,
               "{}: dims {} claim {} int64 values ({} bytes) but the tensor holds {} bytes", where,
               fmt::join(dims, "x"), n, n * 8, have);
    out.i = t.has_raw_data() ? from_raw<std::int64_t>(t.raw_data())
                             : std::vector<std::int64_t>(t.int64_data().begin(), t.int64_data().end());
  } else {
    CUDL_THROW("{}: data type {} is not supported (cudl reads FLOAT weights and INT64 shapes)", where,
               onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(type)));
  }
  return out;
}

}  // namespace onnx_detail

bool onnx_available() { return true; }
bool is_onnx_file(const std::string& name) { return name.size() > 5 && name.ends_with(".onnx"); }

OnnxModel parse_onnx(const void* data, std::size_t size, const std::string& source) {
  using namespace onnx_detail;
  const std::string where = fmt::format("onnx '{}'", source);
  CUDL_CHECK(size <= kMaxFileBytes, "{}: {} bytes; an ONNX file may hold at most 2 GiB", where, size);
  CUDL_CHECK(size > 0, "{}: empty file", where);
  onnx::ModelProto model;
  google::protobuf::io::ArrayInputStream raw(data, static_cast<int>(size));
  google::protobuf::io::CodedInputStream in(&raw);
  in.SetTotalBytesLimit(static_cast<int>(size));
  in.SetRecursionLimit(kRecursionLimit);
  // protobuf refuses a field claiming more bytes than remain, so a truncated file fails here.
  CUDL_CHECK(model.ParseFromCodedStream(&in) && in.ConsumedEntireMessage(),
             "{}: not a valid ONNX ModelProto (truncated, or not an ONNX file)", where);
  CUDL_CHECK(model.has_graph(), "{}: holds no graph", where);
  int opset = 0;
  for (const auto& o : model.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = static_cast<int>(o.version());
  }
  CUDL_CHECK(opset != 0, "{}: imports no opset of the default ONNX domain", where);
  CUDL_CHECK(opset >= kMinOpset && opset <= kMaxOpset,
             "{}: opset {} of the default domain; cudl reads opsets {} to {} (re-export with torch.onnx.export(..., "
             "opset_version=13))",
             where, opset, kMinOpset, kMaxOpset);
  return translate_graph(model, source, opset);
}

OnnxModel read_onnx(const std::string& path) {
  std::error_code ec;
  CUDL_CHECK(std::filesystem::is_regular_file(path, ec), "onnx '{}': not a readable file", path);
  const std::uintmax_t bytes = std::filesystem::file_size(path, ec);
  CUDL_CHECK(!ec && bytes <= onnx_detail::kMaxFileBytes, "onnx '{}': {} bytes; an ONNX file may hold at most 2 GiB",
             path, bytes);
  std::ifstream f(path, std::ios::binary);
  CUDL_CHECK(f.good(), "onnx '{}': cannot be opened", path);
  std::string text(static_cast<std::size_t>(bytes), '\0');
  f.read(text.data(), static_cast<std::streamsize>(bytes));
  CUDL_CHECK(f.gcount() == static_cast<std::streamsize>(bytes), "onnx '{}': cannot be read", path);
  return parse_onnx(text.data(), text.size(), path);
}

void load_onnx_weights(const OnnxModel& onnx, Context& ctx, Sequential& model) {
  CUDL_CHECK(model.built(), "load_onnx_weights: build() the model first");
  std::map<std::string, const OnnxWeight*> by_name;
  for (const OnnxWeight& w : onnx.weights) by_name[w.name] = &w;
  std::vector<NamedParameter> all = model.parameters();
  for (const NamedParameter& b : model.buffers()) all.push_back(b);
  for (const NamedParameter& p : all) {
    auto it = by_name.find(p.name);
    CUDL_CHECK(it != by_name.end(), "onnx: the model's tensor '{}' has no initializer", p.name);
    CUDL_CHECK(it->second->shape == p.parameter->shape, "onnx: '{}' is {} in the file but {} in the model", p.name,
               it->second->shape, p.parameter->shape);
    Tensor& target = p.parameter->value;
    copy_bytes(ctx, target.raw(), target.device(), it->second->values.data(), Device::cpu(),
               it->second->values.size() * sizeof(float));
  }
  model.parameters_changed();
  ctx.synchronize();
}

void check_onnx(const std::string& bytes, const std::string& source) {
  onnx::ModelProto model;
  CUDL_CHECK(model.ParseFromString(bytes), "onnx '{}': not a valid ModelProto", source);
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    std::string what = e.what();
    for (char& c : what)
      if (c == '\n') c = ' ';
    CUDL_THROW("onnx '{}': the ONNX checker refuses it: {}", source, what);
  }
}

}  // namespace cudl
