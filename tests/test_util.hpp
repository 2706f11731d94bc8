#pragma once
// Helpers shared by the tests: a scratch folder removed after each test, file writers, the
// "expect an Error naming X" checks, and random inputs compared against naive loops.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "engine/context.hpp"
#include "engine/error.hpp"
#include "engine/tensor.hpp"

namespace cudl::testing {

// A fresh folder under the system temp dir, removed (with its contents) on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "cudl-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The checkout's root and the cudl CLI, compiled in for the build tree. CUDL_TEST_SOURCE_DIR and
// CUDL_TEST_CLI override them where the test binary runs away from its build: tools/gpu-check.sh
// runs a prebuilt kit on another machine, where the build's paths do not exist.
inline std::string source_dir() {
  const char* dir = std::getenv("CUDL_TEST_SOURCE_DIR");
  return dir != nullptr && *dir != '\0' ? std::string(dir) : std::string(CUDL_SOURCE_DIR);
}
inline std::string cli_path() {
  const char* cli = std::getenv("CUDL_TEST_CLI");
  return cli != nullptr && *cli != '\0' ? std::string(cli) : std::string(CUDL_CLI_PATH);
}

inline void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// The same for bytes held in a string (a name of its own: a braced list would fit either overload).
inline void write_string(const std::string& path, std::string_view bytes) {
  write_bytes(path, std::vector<std::uint8_t>(bytes.begin(), bytes.end()));
}

inline std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The message of the cudl::Error that fn throws (a test failure when it throws none).
template <class Fn>
std::string error_message(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a cudl::Error";
  return {};
}

// The call must throw cudl::Error whose message contains every fragment (the op, the shapes).
inline void expect_error(const std::function<void()>& call, std::initializer_list<std::string> fragments) {
  try {
    call();
    ADD_FAILURE() << "expected cudl::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

// n values drawn uniformly from [lo, hi) by a generator seeded with `seed`.
inline std::vector<float> random_values(std::int64_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// Elementwise |actual - expected| <= atol + rtol * |expected|; reports the first five misses.
inline void expect_close(const std::vector<float>& actual, const std::vector<double>& expected, const std::string& what,
                         double atol = 1e-4, double rtol = 1e-4) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int bad = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (std::abs(actual[i] - expected[i]) > atol + rtol * std::abs(expected[i]) && ++bad <= 5)
      ADD_FAILURE() << what << ": [" << i << "] got " << actual[i] << ", expected " << expected[i];
  }
  EXPECT_EQ(bad, 0) << what;
}

// Built from host zeros rather than Tensor::zeros so that a test needs no backend op but the
// ones under test.
inline Tensor zeros(const Shape& s, Context& ctx) {
  return Tensor::from_host(std::vector<float>(static_cast<std::size_t>(s.numel()), 0.0f), s, ctx);
}

}  // namespace cudl::testing
