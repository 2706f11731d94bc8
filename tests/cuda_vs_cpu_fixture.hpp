#pragma once
// The fixture of the CUDA-vs-CPU suites (test_cuda_vs_cpu*.cpp, test_cuda_audit_*.cpp,
// test_cuda_channels_last.cpp, test_ops_topk.cpp): the same values on a CPU and a CUDA context,
// compared bit for bit or as |cuda - cpu| <= atol + rtol * |cpu|. A template over the gtest base,
// so that plain (TEST_F) and parameterised (TEST_P, a dtype) suites share it. Each test skips with
// "no CUDA device" where there is none; the suite names contain "Cuda", so the GPU kit's CUDA
// filter (*cuda*:*Cuda*:*CUDA*) runs them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/half.hpp"
#include "cudl/engine/op_table.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/backend_fixture.hpp"

namespace cudl::testing {

// One tensor on each side, holding the same values.
struct Both {
  Tensor c, g;
};
using Side = Tensor Both::*;

// What expect_close makes of NaN. `fails`: any NaN is a difference (suites whose data is finite,
// where a NaN can only be a bug). `matches_nan`: NaN on both sides agrees whatever its payload
// (suites that feed NaN and infinities on purpose; a NaN made on the GPU need not have the CPU's bits).
enum class NanRule { fails, matches_nan };

template <class GtestBase = ::testing::Test>
class CudaVsCpuTest : public GtestBase {
 protected:
  explicit CudaVsCpuTest(NanRule nan = NanRule::fails) : nan_(nan) {}

  void SetUp() override {
    CUDL_REQUIRE_CUDA();
    cpu_ = std::make_unique<Context>(Device::cpu());
    gpu_ = std::make_unique<Context>(Device::cuda(0));  // strict fp32 (the default)
  }

  Context& cpu() { return *cpu_; }
  Context& gpu() { return *gpu_; }

  // Runs f(backend, context, side) on the CPU, then on CUDA.
  template <class F>
  void on_both(F&& f) {
    f(cpu_->backend(), cpu(), &Both::c);
    f(gpu_->backend(), gpu(), &Both::g);
  }

  // Seeded values in [lo, hi), rounded to `dtype` so that both sides hold the same numbers.
  static std::vector<float> values(std::int64_t n, std::uint32_t seed, DType dtype = DType::f32, float lo = -1.0f,
                                   float hi = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) {
      x = dist(rng);
      if (dtype == DType::bf16) x = to_float(to_bf16(x));
      if (dtype == DType::f16) x = to_float(to_f16(x));
    }
    return v;
  }
  // Multiples of 1/1024 in [-1, 1]: a handful of them add up exactly in float and double.
  static std::vector<float> dyadic(std::int64_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> dist(-1024, 1024);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = static_cast<float>(dist(rng)) / 1024.0f;
    return v;
  }

  Both from(const std::vector<float>& v, const Shape& s, DType dtype = DType::f32) {
    return {Tensor::from_host(v, s, cpu(), dtype), Tensor::from_host(v, s, gpu(), dtype)};
  }
  Both zeros(const Shape& s, DType dtype = DType::f32) {
    return {Tensor::zeros(s, cpu(), dtype), Tensor::zeros(s, gpu(), dtype)};
  }

  // |cuda - cpu| <= atol + rtol * |cpu| elementwise, NaN by the fixture's rule.
  void expect_close(const Both& t, OpTolerance tol, const std::string& what) {
    ASSERT_EQ(t.c.shape(), t.g.shape()) << what;
    expect_close_values(t.c.to_vector(cpu()), t.g.to_vector(gpu()), tol, what);
  }
  void expect_close_values(const std::vector<float>& ref, const std::vector<float>& got, OpTolerance tol,
                           const std::string& what) const {
    ASSERT_EQ(ref.size(), got.size()) << what;
    int failures = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const bool both_nan = nan_ == NanRule::matches_nan && std::isnan(ref[i]) && std::isnan(got[i]);
      // got == ref: equal infinities (whose difference is NaN) agree too.
      const bool ok =
          both_nan || got[i] == ref[i] || std::fabs(got[i] - ref[i]) <= tol.atol + tol.rtol * std::fabs(ref[i]);
      if (!ok && ++failures <= 5)
        ADD_FAILURE() << what << " [" << i << "]: cuda " << got[i] << " vs cpu " << ref[i] << " (atol " << tol.atol
                      << ", rtol " << tol.rtol << ")";
    }
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << ref.size() << " elements differ";
  }

  // Element-for-element identical bits (a NaN must carry the CPU's payload).
  void expect_bits_equal(const Both& t, const std::string& what) {
    ASSERT_EQ(t.c.shape(), t.g.shape()) << what;
    const std::vector<float> ref = t.c.to_vector(cpu()), got = t.g.to_vector(gpu());
    ASSERT_EQ(ref.size(), got.size()) << what;
    int failures = 0;
    for (std::size_t i = 0; i < ref.size(); ++i)
      if (std::memcmp(&ref[i], &got[i], sizeof(float)) != 0 && ++failures <= 5)
        ADD_FAILURE() << what << " [" << i << "]: cuda " << got[i] << " vs cpu " << ref[i] << " (must be identical)";
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << ref.size() << " elements differ";
  }

  void expect_ints_equal(const Both& t, const std::string& what) {
    ASSERT_EQ(t.c.shape(), t.g.shape()) << what;
    EXPECT_EQ(t.c.to_int_vector(cpu()), t.g.to_int_vector(gpu())) << what;
  }

 private:
  NanRule nan_;
  std::unique_ptr<Context> cpu_, gpu_;
};

}  // namespace cudl::testing
