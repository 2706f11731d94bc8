#pragma once
// Helpers shared by the tests: a scratch folder removed after each test, file writers, the
// "expect an Error naming X" checks, and random inputs compared against naive loops.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

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

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/tensor.hpp"

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

// A whole file as a string (empty when it cannot be read: the caller's assertion says what was wanted).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// One run of the cudl CLI: its exit status (128 when it did not exit normally) and its output.
struct CliRun {
  int status = -1;
  std::string out, err;
};

// Runs the CLI (cli_path()) in `dir` with `args`, stdout and stderr captured in files there; with
// timeout_s > 0 under `timeout`, so a hang fails the test instead of stalling it.
inline CliRun run_cli(const TempDir& dir, const std::string& args, int timeout_s = 0) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const std::string limit = timeout_s > 0 ? "timeout " + std::to_string(timeout_s) + " " : "";
  const std::string cmd = "cd '" + dir.path().string() + "' && " + limit + "'" + cli_path() + "' " + args + " > '" +
                          out + "' 2> '" + err + "'";
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
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

// For a check that the CPU makes on the host, inside the call, but CUDA makes on the device (a
// kernel sets the context's fault word and the next synchronising read throws): the error may come
// from `call` or from `read` (e.g. `loss.item(ctx)`); either way it must be a cudl::Error whose
// message contains every fragment.
inline void expect_error_by_next_read(const std::function<void()>& call, const std::function<void()>& read,
                                      const std::vector<std::string>& fragments) {
  try {
    call();
    read();
    ADD_FAILURE() << "expected cudl::Error from the call or from the next read of its result";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

// What the error for a label outside [0, K) must say. Every backend: the op family ("accuracy",
// "softmax_cross_entropy"), the word "label" and "outside [0, " (the range; CUDA reports it from the
// device fault word, which cannot carry the row). The CPU, which checks on the host, also names the
// exact op, the row, the label and K: "labels[<row>]=<label>" and "K=<k>".
inline std::vector<std::string> label_error_fragments(bool on_cpu, const std::string& family, const std::string& cpu_op,
                                                      std::int64_t row, std::int64_t label, std::int64_t k) {
  std::vector<std::string> f = {family, "label", "outside [0, "};
  if (on_cpu) {
    f.push_back(cpu_op);
    f.push_back("labels[" + std::to_string(row) + "]=" + std::to_string(label));
    f.push_back("K=" + std::to_string(k));
  }
  return f;
}

// n values drawn uniformly from [lo, hi) by a generator seeded with `seed`.
inline std::vector<float> random_values(std::int64_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// n values whose float accumulation drifts: multiples of 1/1024 in [0, 1) (so every partial sum is
// exact in double), with ±2^24 at every 100th element, alternating in sign so that they cancel. A
// float partial sum near 2^24 has an ulp of 2, so every small value added to it is rounded away.
inline std::vector<float> drifting_values(std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> small(0, 1023);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(small(rng)) / 1024.0f;
  const std::int64_t bigs = ((n + 99) / 100) / 2 * 2;  // an even count: they cancel exactly
  for (std::int64_t b = 0; b < bigs; ++b)
    v[static_cast<std::size_t>(b * 100)] = b % 2 == 0 ? 16777216.0f : -16777216.0f;
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
