// libFuzzer target: the safetensors reader (engine/io/safetensors.cpp) over arbitrary bytes. Every
// flaw must be a cudl::Error; anything else (a crash, a sanitizer report, another exception, a
// leak, a hang) is a bug. Built and run by tools/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const cudl::SafetensorsFile f =
        cudl::SafetensorsFile::from_bytes(std::vector<unsigned char>(data, data + size), "fuzz");
    for (const std::string& name : f.names()) {
      (void)f.shape(name).numel();
      const std::string dtype = f.dtype(name);
      try {
        if (dtype == "I32") {
          (void)f.read_i32(name);
        } else {
          (void)f.read_f32(name);
        }
      } catch (const cudl::Error&) {
        // A dtype read_f32 does not convert: refused by name, and the other tensors still read.
      }
    }
    (void)f.metadata();
  } catch (const cudl::Error&) {
  }
  return 0;
}
