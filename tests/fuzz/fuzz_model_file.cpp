// libFuzzer target: the JSON model-file reader (models/zoo/model_file.cpp over engine/io/json.cpp)
// over arbitrary bytes. Every flaw must be a cudl::Error; anything else (a crash, a stack overflow
// from deep nesting, a sanitizer report, another exception, a hang) is a bug. Built and run by
// tools/fuzz.sh; the seed corpus holds a value nested 75,000 deep (issue 22).
#include <cstddef>
#include <cstdint>
#include <string>

#include "cudl/engine/error.hpp"
#include "cudl/models/zoo/model_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const cudl::ModelFile f = cudl::parse_model_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    (void)f.model.size();
  } catch (const cudl::Error&) {
  }
  return 0;
}
