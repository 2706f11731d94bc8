// libFuzzer target: the ONNX reader (models/onnx/: protobuf parsing with its size and nesting
// limits, tensor decoding, the graph's translation into the model-file builder) over arbitrary
// bytes. Every flaw must be a cudl::Error; anything else (a crash, a sanitizer report, another
// exception, a hang, an allocation a tensor's dims claim but its bytes do not hold) is a bug.
// Built (when libonnx is found) and run by tools/fuzz.sh; the seed corpus holds small valid models.
#include <cstddef>
#include <cstdint>

#include "cudl/engine/error.hpp"
#include "cudl/models/onnx/onnx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const cudl::OnnxModel m = cudl::parse_onnx(data, size, "fuzz");
    (void)m.file.model.size();
  } catch (const cudl::Error&) {
  }
  return 0;
}
