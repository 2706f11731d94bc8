// The CPU backend's convolution and GEMM paths as a setting of each Context (engine/cpu_policy.hpp):
// the setters reach the kernels (one program runs the paths side by side and they agree), and
// CUDL_CPU_CONV / CUDL_CPU_GEMM only set the default of the contexts created after them.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

// Sets (or unsets, with nullptr) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

Tensor tensor(Context& ctx, const std::vector<float>& values, Shape shape) {
  return Tensor::from_host(std::span<const float>(values), shape, ctx);
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, double rtol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], 1e-5 + rtol * std::abs(b[i])) << what << " at " << i;
}

}  // namespace

TEST(CpuPolicy, DefaultsAreTheFastestPathsAndSettersChangeOneContext) {
  const ScopedEnv conv("CUDL_CPU_CONV", nullptr), gemm("CUDL_CPU_GEMM", nullptr);
  Context a{Device::cpu()}, b{Device::cpu()};
  EXPECT_EQ(a.cpu_conv(), CpuConv::fastest);
  EXPECT_EQ(a.cpu_gemm(), CpuGemm::onednn);
  b.set_cpu_conv(CpuConv::im2col);
  b.set_cpu_gemm(CpuGemm::openblas);
  EXPECT_EQ(b.cpu_conv(), CpuConv::im2col);
  EXPECT_EQ(b.cpu_gemm(), CpuGemm::openblas);
  EXPECT_EQ(a.cpu_conv(), CpuConv::fastest);  // another context keeps its own
  EXPECT_EQ(a.cpu_gemm(), CpuGemm::onednn);
}

TEST(CpuPolicy, EnvironmentSetsTheDefaultOfContextsCreatedAfterIt) {
  Context before{Device::cpu()};
  const CpuPolicy old = before.cpu_policy();
  {
    const ScopedEnv conv("CUDL_CPU_CONV", "direct"), gemm("CUDL_CPU_GEMM", "openblas");
    Context after{Device::cpu()};
    EXPECT_EQ(after.cpu_conv(), CpuConv::direct);
    EXPECT_EQ(after.cpu_gemm(), CpuGemm::openblas);
    EXPECT_EQ(before.cpu_conv(), old.conv);
    EXPECT_EQ(before.cpu_gemm(), old.gemm);
  }
  {
    const ScopedEnv conv("CUDL_CPU_CONV", "winograd");
    expect_error([] { Context c{Device::cpu()}; },
                 {"CUDL_CPU_CONV: unknown value 'winograd': expected fastest, direct or im2col"});
  }
  {
    const ScopedEnv gemm("CUDL_CPU_GEMM", "mkl");
    expect_error([] { Context c{Device::cpu()}; }, {"CUDL_CPU_GEMM: unknown value 'mkl': expected onednn or openblas"});
  }
  for (CpuConv c : {CpuConv::fastest, CpuConv::direct, CpuConv::im2col}) EXPECT_EQ(parse_cpu_conv(cpu_conv_name(c)), c);
  for (CpuGemm g : {CpuGemm::onednn, CpuGemm::openblas}) EXPECT_EQ(parse_cpu_gemm(cpu_gemm_name(g)), g);
}

TEST(CpuPolicy, ConvolutionPathsAgreeAndTheSettingReachesTheKernel) {
  // A 3x3 stride-1 convolution with a 6x6 output and 16 channels: a Winograd candidate under
  // fastest, oneDNN's direct kernels under direct, im2col + OpenBLAS under im2col.
  Context ctx{Device::cpu()};
  const Shape xs{2, 16, 6, 6}, ws{16, 16, 3, 3}, ys{2, 16, 6, 6};
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  const Tensor x = tensor(ctx, random_values(xs.numel(), 1), xs);
  Tensor w = tensor(ctx, random_values(ws.numel(), 2), ws);
  const auto run = [&](Context& c) {
    Tensor y = Tensor::zeros(ys, c);
    c.backend().conv2d_forward(c, x, w, p, y);
    return y.to_vector(c);
  };
  std::vector<std::vector<float>> results;
  for (CpuConv conv : {CpuConv::im2col, CpuConv::direct, CpuConv::fastest}) {
    Context c{Device::cpu()};
    c.set_cpu_conv(conv);
    results.push_back(run(c));
  }
  expect_close(results[1], results[0], 1e-4, "direct against im2col");
  expect_close(results[2], results[0], 1e-4, "fastest against im2col");

  if (!cpu::onednn_conv_enabled(CpuConv::fastest)) GTEST_SKIP() << "built without oneDNN: every policy is im2col";
  // Under a hold, oneDNN convolves a re-laid-out copy of the weights, so a write to them (breaking
  // the hold's promise) is not seen; im2col reads the weights themselves and sees it. Which one
  // happens shows which path the context's setting chose.
  const std::vector<float> other = random_values(ws.numel(), 3);
  for (CpuConv conv : {CpuConv::fastest, CpuConv::im2col}) {
    Context c{Device::cpu()};
    c.set_cpu_conv(conv);
    const std::vector<float> fresh = run(c);
    const std::vector<float> saved = w.to_vector(c);
    const ConstantHold hold = c.backend().hold_constant(c, w);
    (void)run(c);  // makes the held copy, where there is one
    c.backend().copy(c, tensor(c, other, ws), w);
    const std::vector<float> after_write = run(c);
    c.backend().copy(c, tensor(c, saved, ws), w);
    if (conv == CpuConv::im2col) {
      EXPECT_NE(after_write, fresh) << "im2col reads the weights as they are";
    } else {
      EXPECT_EQ(after_write, fresh) << "oneDNN convolves its held copy";
    }
  }
}

TEST(CpuPolicy, GemmLibrariesAgree) {
  Context onednn{Device::cpu()}, openblas{Device::cpu()};
  onednn.set_cpu_gemm(CpuGemm::onednn);
  openblas.set_cpu_gemm(CpuGemm::openblas);
  const auto run = [](Context& c) {
    const Tensor a = tensor(c, random_values(37 * 53, 4), {37, 53});
    const Tensor b = tensor(c, random_values(53 * 29, 5), {53, 29});
    Tensor out = Tensor::zeros({37, 29}, c);
    c.backend().gemm(c, false, false, 1.0f, a, b, 0.0f, out);
    return out.to_vector(c);
  };
  expect_close(run(onednn), run(openblas), 1e-5, "oneDNN against OpenBLAS");
}

TEST(CpuPolicy, InfoPrintsThePolicyANewContextStartsWith) {
  TempDir dir;
  const std::string out = dir.file("info.txt"), err = dir.file("err.txt");
  const auto info = [&](const std::string& env) {
    const int status = std::system(fmt::format("env {} '{}' info > '{}' 2> '{}'", env, cli_path(), out, err).c_str());
    return std::make_pair(status, slurp(out) + slurp(err));
  };
  auto [status, text] = info("-u CUDL_CPU_CONV -u CUDL_CPU_GEMM");
  EXPECT_EQ(status, 0) << text;
  EXPECT_TRUE(contains(text, "CPU policy: convolutions fastest, GEMM onednn")) << text;
  std::tie(status, text) = info("CUDL_CPU_CONV=im2col CUDL_CPU_GEMM=openblas");
  EXPECT_EQ(status, 0) << text;
  EXPECT_TRUE(contains(text, "CPU policy: convolutions im2col, GEMM openblas")) << text;
  std::tie(status, text) = info("CUDL_CPU_CONV=fast");
  EXPECT_NE(status, 0) << text;
  EXPECT_TRUE(contains(text, "cudl: error: CUDL_CPU_CONV: unknown value 'fast': expected fastest, direct or im2col"))
      << text;
}
