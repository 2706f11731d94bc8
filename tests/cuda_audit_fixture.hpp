#pragma once
// The fixture of the CUDA kernel audit's tests (test_cuda_audit_*.cpp): the same values on a CPU
// and a CUDA context, compared bit for bit or within a stated tolerance. Each test skips with "no
// CUDA device" where there is none; the suite names contain "Cuda", so the GPU kit's CUDA filter
// (*cuda*:*Cuda*:*CUDA*) runs them.
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
#include "cudl/engine/tensor.hpp"
#include "tests/backend_fixture.hpp"

namespace cudl::testing {

// One tensor on each side, holding the same values.
struct Both {
  Tensor c, g;
};
using Side = Tensor Both::*;

struct AuditTol {
  float atol, rtol;
};

class CudaAuditTest : public ::testing::Test {
 protected:
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

  // Element-for-element identical values (NaN never occurs in these tests).
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

  // |cuda - cpu| <= atol + rtol * |cpu| elementwise.
  void expect_close(const Both& t, AuditTol tol, const std::string& what) {
    ASSERT_EQ(t.c.shape(), t.g.shape()) << what;
    const std::vector<float> ref = t.c.to_vector(cpu()), got = t.g.to_vector(gpu());
    ASSERT_EQ(ref.size(), got.size()) << what;
    int failures = 0;
    for (std::size_t i = 0; i < ref.size(); ++i)
      if (!(got[i] == ref[i] || std::fabs(got[i] - ref[i]) <= tol.atol + tol.rtol * std::fabs(ref[i])) &&
          ++failures <= 5)
        ADD_FAILURE() << what << " [" << i << "]: cuda " << got[i] << " vs cpu " << ref[i] << " (atol " << tol.atol
                      << ", rtol " << tol.rtol << ")";
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << ref.size() << " elements differ";
  }

  void expect_ints_equal(const Both& t, const std::string& what) {
    EXPECT_EQ(t.c.to_int_vector(cpu()), t.g.to_int_vector(gpu())) << what;
  }

 private:
  std::unique_ptr<Context> cpu_, gpu_;
};

}  // namespace cudl::testing
