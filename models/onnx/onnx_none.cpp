// A build without libonnx (CUDL_ONNX=OFF, or libonnx-dev not installed): every ONNX entry point
// refuses in one line that says why and what to install.
#include "cudl/engine/error.hpp"
#include "cudl/models/onnx/onnx.hpp"

namespace cudl {

namespace {
[[noreturn]] void refuse(const std::string& what) {
  CUDL_THROW("{}: cudl was built without ONNX support (install libonnx-dev and rebuild with CUDL_ONNX=AUTO or ON)",
             what);
}
}  // namespace

bool onnx_available() { return false; }
bool is_onnx_file(const std::string& name) { return name.size() > 5 && name.ends_with(".onnx"); }
OnnxModel read_onnx(const std::string& path) { refuse("onnx '" + path + "'"); }
OnnxModel parse_onnx(const void*, std::size_t, const std::string& source) { refuse("onnx '" + source + "'"); }
void load_onnx_weights(const OnnxModel&, Context&, Sequential&) { refuse("onnx"); }
void export_onnx(const std::string& path, Context&, Sequential&, const ModelSpec&) {
  refuse("--export '" + path + "'");
}
std::string model_to_onnx(Context&, Sequential&, const ModelSpec&) { refuse("onnx export"); }
void check_onnx(const std::string&, const std::string& source) { refuse("onnx '" + source + "'"); }

}  // namespace cudl
