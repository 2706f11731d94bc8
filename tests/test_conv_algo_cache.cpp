// The on-disk cache of measured cuDNN algorithms (engine/io/conv_algo_cache.hpp), on the CPU: a
// round trip, keys that tell shapes, dtypes, groups and modes apart, and every file it must not
// trust (another GPU or cuDNN, another format version, truncated, corrupt) ignored with one
// warning, and a folder it cannot write leaving the run going with one warning.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/conv_algo_cache.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::slurp;
using cudl::testing::TempDir;
using cudl::testing::write_string;

const std::string kH200 = conv_algo_environment("NVIDIA H200", 9, 0, 91000);

ConvAlgoKey forward_key() {
  ConvAlgoKey k;
  k.direction = "conv2d_forward";
  k.x = Shape{64, 64, 224, 224};
  k.w = Shape{64, 64, 3, 3};
  k.y = Shape{64, 64, 224, 224};
  k.pad_h = k.pad_w = 1;
  k.math = "fp32";
  return k;
}

struct Warnings {
  std::vector<std::string> lines;
  ConvAlgoCache::Warn sink() {
    return [this](const std::string& l) { lines.push_back(l); };
  }
};

TEST(ConvAlgoCache, StoredChoicesAreFoundByALaterRun) {
  TempDir dir;
  const auto file = dir.path() / "sub" / "conv_algorithms.txt";  // the folder is created on store
  const std::string fwd = conv_algo_key_text(forward_key());
  ConvAlgoKey bwd = forward_key();
  bwd.direction = "conv2d_backward_filter";
  const std::string bwd_text = conv_algo_key_text(bwd);
  Warnings w;
  {
    ConvAlgoCache cache(file, kH200, w.sink());
    EXPECT_EQ(cache.size(), 0u);
    EXPECT_FALSE(cache.find(fwd));
    cache.store(fwd, {6, 3, 123456789012});  // a workspace past 32 bits survives
    cache.store(bwd_text, {1, 0, 0});
    cache.store(fwd, {1, 3, 4096});  // replaced, not duplicated
  }
  ConvAlgoCache later(file, kH200, w.sink());
  EXPECT_TRUE(w.lines.empty()) << w.lines.front();
  ASSERT_EQ(later.size(), 2u);
  const auto a = later.find(fwd);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->algo, 1);
  EXPECT_EQ(a->math, 3);
  EXPECT_EQ(a->workspace_bytes, 4096u);
  ASSERT_TRUE(later.find(bwd_text));
  EXPECT_EQ(later.find(bwd_text)->algo, 1);
  // Human-readable: the environment and the key are in the file as written.
  const std::string text = slurp(file.string());
  EXPECT_TRUE(contains(text, "environment NVIDIA H200 | cc 9.0 | cuDNN 91000")) << text;
  EXPECT_TRUE(contains(text, fwd + " = 1 3 4096")) << text;
}

TEST(ConvAlgoCache, KeysTellEveryInputOfTheChoiceApart) {
  const std::string base = conv_algo_key_text(forward_key());
  EXPECT_EQ(base,
            "conv2d_forward f32 NCHW x=[64,64,224,224] w=[64,64,3,3] y=[64,64,224,224] pad=1,1 stride=1,1 "
            "dilation=1,1 groups=1 fp32 deterministic");
  std::vector<ConvAlgoKey> variants(7, forward_key());
  variants[0].dtype = DType::bf16;
  variants[1].groups = 2;
  variants[2].layout = "NHWC";
  variants[3].math = "tf32";
  variants[4].deterministic = false;
  variants[5].x = Shape{32, 64, 224, 224};
  variants[6].stride_w = 2;
  for (const ConvAlgoKey& k : variants) EXPECT_NE(conv_algo_key_text(k), base) << conv_algo_key_text(k);
}

// The data tensors' formats are part of the key: NCHW keys read as before formats existed, NHWC and
// each mix of the two (a network's first layer reads NCHW and writes NHWC) get their own entries.
TEST(ConvAlgoCache, KeysTellTheDataLayoutsApart) {
  constexpr MemoryFormat nchw = MemoryFormat::contiguous, nhwc = MemoryFormat::channels_last;
  EXPECT_EQ(conv_algo_layout(nchw, nchw), "NCHW");
  EXPECT_EQ(conv_algo_layout(nhwc, nhwc), "NHWC");
  EXPECT_EQ(conv_algo_layout(nchw, nhwc), "xNCHW-yNHWC");
  EXPECT_EQ(conv_algo_layout(nhwc, nchw), "xNHWC-yNCHW");
  std::vector<std::string> texts;
  for (MemoryFormat x : {nchw, nhwc})
    for (MemoryFormat y : {nchw, nhwc}) {
      ConvAlgoKey k = forward_key();
      k.layout = conv_algo_layout(x, y);
      texts.push_back(conv_algo_key_text(k));
    }
  EXPECT_EQ(texts[0], conv_algo_key_text(forward_key()));
  for (std::size_t i = 0; i < texts.size(); ++i)
    for (std::size_t j = i + 1; j < texts.size(); ++j) EXPECT_NE(texts[i], texts[j]) << texts[i];
  // One token: the key stays "direction dtype layout x=..." as the file's readers expect.
  EXPECT_TRUE(contains(texts[1], "conv2d_forward f32 xNCHW-yNHWC x=[64,64,224,224]")) << texts[1];
}

// A valid file for kH200 with one entry, then `edit` applied to its text.
std::string written_then(const TempDir& dir, const std::function<std::string(std::string)>& edit) {
  const auto file = dir.path() / "conv_algorithms.txt";
  {
    ConvAlgoCache cache(file, kH200, [](const std::string&) {});
    cache.store(conv_algo_key_text(forward_key()), {6, 3, 4096});
  }
  write_string(file.string(), edit(slurp(file.string())));
  return file.string();
}

void expect_ignored(const std::function<std::string(std::string)>& edit, const std::string& why,
                    const std::string& environment = kH200) {
  TempDir dir;
  const std::string file = written_then(dir, edit);
  Warnings w;
  ConvAlgoCache cache(file, environment, w.sink());
  EXPECT_EQ(cache.size(), 0u) << why;
  EXPECT_FALSE(cache.find(conv_algo_key_text(forward_key()))) << why;
  ASSERT_EQ(w.lines.size(), 1u) << why;
  EXPECT_TRUE(contains(w.lines[0], file)) << w.lines[0];
  EXPECT_TRUE(contains(w.lines[0], why)) << w.lines[0];
  EXPECT_TRUE(contains(w.lines[0], "measuring again")) << w.lines[0];
  EXPECT_EQ(w.lines[0].find('\n'), std::string::npos) << w.lines[0];
  // The next store replaces it with a valid file for this environment.
  cache.store("k", {1, 0, 0});
  Warnings again;
  ConvAlgoCache reread(file, environment, again.sink());
  EXPECT_TRUE(again.lines.empty()) << why;
  EXPECT_EQ(reread.size(), 1u) << why;
}

TEST(ConvAlgoCache, AFileFromAnotherGpuOrCudnnIsNotTrusted) {
  const auto same = [](std::string t) { return t; };
  expect_ignored(same, "another GPU or cuDNN", conv_algo_environment("NVIDIA H100 80GB HBM3", 9, 0, 91000));
  expect_ignored(same, "another GPU or cuDNN", conv_algo_environment("NVIDIA H200", 9, 0, 90100));
  expect_ignored(same, "another GPU or cuDNN", conv_algo_environment("NVIDIA H200", 10, 0, 91000));
}

TEST(ConvAlgoCache, ATruncatedCorruptOrForeignFileIsIgnoredWithOneWarning) {
  // Cut before the end line (a write that died mid-way without the atomic rename).
  expect_ignored([](std::string t) { return t.substr(0, t.rfind("end ")); }, "truncated");
  // One digit of the algorithm changed: the checksum catches it.
  expect_ignored(
      [](std::string t) {
        t[t.find(" = 6 ") + 3] = '5';
        return t;
      },
      "corrupt");
  // An entry dropped: the count catches it.
  expect_ignored(
      [](std::string t) {
        const std::size_t at = t.find("conv2d_forward");
        return t.erase(at, t.find('\n', at) + 1 - at);
      },
      "corrupt");
  expect_ignored([](std::string) { return std::string("\x89PNG\r\n\x1a\n garbage\nmore\nlines\n"); },
                 "not a cudl algorithm cache");
  expect_ignored([](std::string) { return std::string(); }, "not a cudl algorithm cache");
  expect_ignored(
      [](std::string t) {
        t.replace(0, t.find('\n'), "cudl conv algorithm cache 2");
        return t;
      },
      "another cudl version");
}

// The file's checksum as the format defines it (FNV-1a 64 of every line before the end line).
std::string with_end_line(const std::string& body, std::size_t entries) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : body) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return body + fmt::format("end {} {:x}\n", entries, h);
}

// A file whose count and checksum are right but whose second line is no environment line (written
// by hand, or by another tool): one warning, as for any corrupt file, not an exception out of the
// reader (a line shorter than "environment " once threw std::out_of_range from the message).
TEST(ConvAlgoCache, AFileWithAValidChecksumButNoEnvironmentLineIsIgnored) {
  for (const std::string second : {"env", "", "environmentNVIDIA H200"}) {
    expect_ignored(
        [&](std::string) {
          return with_end_line(fmt::format("cudl conv algorithm cache 1\n{}\n{} = 6 3 4096\n", second,
                                           conv_algo_key_text(forward_key())),
                               1);
        },
        "not its environment line");
  }
  // The helper writes what the reader accepts: the same text with the real environment line is read.
  TempDir dir;
  const std::string file = (dir.path() / "conv_algorithms.txt").string();
  write_string(file, with_end_line(fmt::format("cudl conv algorithm cache 1\nenvironment {}\n{} = 6 3 4096\n", kH200,
                                               conv_algo_key_text(forward_key())),
                                   1));
  Warnings w;
  ConvAlgoCache cache(file, kH200, w.sink());
  EXPECT_TRUE(w.lines.empty()) << w.lines.front();
  ASSERT_TRUE(cache.find(conv_algo_key_text(forward_key())));
  EXPECT_EQ(cache.find(conv_algo_key_text(forward_key()))->algo, 6);
}

// One cache per device serves every context on it (kernels/cudnn/conv.cpp), so contexts searching
// on several threads store and find at once: every entry lands, in memory and in the file.
TEST(ConvAlgoCache, ThreadsStoringAtOnceLoseNoEntry) {
  TempDir dir;
  const auto file = dir.path() / "conv_algorithms.txt";
  constexpr int kThreads = 4, kEach = 25;
  {
    ConvAlgoCache cache(file, kH200, [](const std::string& l) { ADD_FAILURE() << l; });
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&cache, t] {
        for (int i = 0; i < kEach; ++i) {
          const std::string key = fmt::format("thread {} key {}", t, i);
          cache.store(key, {t, i, static_cast<std::size_t>(i)});
          EXPECT_TRUE(cache.find(key));
        }
      });
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(cache.size(), static_cast<std::size_t>(kThreads * kEach));
  }
  ConvAlgoCache reread(file, kH200);
  ASSERT_EQ(reread.size(), static_cast<std::size_t>(kThreads * kEach));
  const auto a = reread.find("thread 3 key 24");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->algo, 3);
  EXPECT_EQ(a->math, 24);
}

TEST(ConvAlgoCache, AnUnwritableFolderWarnsOnceAndKeepsTheChoicesInMemory) {
  TempDir dir;
  write_string(dir.file("not-a-folder"), "x");  // a file where the cache folder should be
  const auto file = dir.path() / "not-a-folder" / "cudl" / "conv_algorithms.txt";
  Warnings w;
  ConvAlgoCache cache(file, kH200, w.sink());
  cache.store("a", {1, 0, 0});
  cache.store("b", {2, 0, 0});
  ASSERT_EQ(w.lines.size(), 1u);
  EXPECT_TRUE(contains(w.lines[0], "algorithm cache not saved")) << w.lines[0];
  EXPECT_TRUE(contains(w.lines[0], "not-a-folder")) << w.lines[0];
  EXPECT_EQ(cache.find("a")->algo, 1);
  EXPECT_EQ(cache.find("b")->algo, 2);
}

TEST(ConvAlgoCache, LivesUnderXdgCacheHomeOrHomeDotCache) {
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const char* old_home = std::getenv("HOME");
  const std::string saved_xdg = old_xdg ? old_xdg : "", saved_home = old_home ? old_home : "";
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg-test", 1);
  EXPECT_EQ(default_conv_algo_cache_file(), std::filesystem::path("/tmp/xdg-test/cudl/conv_algorithms.txt"));
  ::setenv("XDG_CACHE_HOME", "relative/ignored", 1);  // XDG: a relative path is invalid
  ::setenv("HOME", "/home/someone", 1);
  EXPECT_EQ(default_conv_algo_cache_file(), std::filesystem::path("/home/someone/.cache/cudl/conv_algorithms.txt"));
  ::unsetenv("XDG_CACHE_HOME");
  ::unsetenv("HOME");
  EXPECT_TRUE(default_conv_algo_cache_file().empty());
  // No folder: the cache still works in memory and writes nothing.
  ConvAlgoCache in_memory(default_conv_algo_cache_file(), kH200, [](const std::string& l) { ADD_FAILURE() << l; });
  in_memory.store("k", {3, 0, 0});
  EXPECT_EQ(in_memory.find("k")->algo, 3);
  if (old_xdg) ::setenv("XDG_CACHE_HOME", saved_xdg.c_str(), 1);
  if (old_home) ::setenv("HOME", saved_home.c_str(), 1);
}

TEST(ConvAlgoCache, TheDefaultsAreMeasuredDeterministicAndFused) {
  // A user who passes no flags gets the measured search (from this cache), cuDNN's deterministic
  // algorithms only, and conv+bias+ReLU fusion.
  const Context ctx(Device::cpu());
  EXPECT_EQ(ctx.conv_search(), ConvSearch::measured);
  EXPECT_TRUE(ctx.deterministic());
  EXPECT_TRUE(ctx.fuse_layers());
  TempDir dir;
  const auto help = cudl::testing::run_cli(dir, "train --help");
  ASSERT_EQ(help.status, 0) << help.err;
  EXPECT_TRUE(contains(help.out, "cudnn.benchmark), saved in an on-disk cache")) << help.out;
  EXPECT_TRUE(contains(help.out, "--conv-algo ENUM=measured")) << help.out;  // the default as CLI11 prints it
}

}  // namespace
