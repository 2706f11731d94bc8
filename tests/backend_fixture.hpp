#pragma once
// Tests instantiated per backend: each TEST_P runs once on the CPU and once on CUDA. The CUDA
// instance skips with the reason "no CUDA device" when the build or the machine has none, so a
// skipped GPU test is visible in the output and never passes silently.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {
// Readable parameter values in ctest's test names and in failure messages.
inline void PrintTo(DeviceType d, std::ostream* os) { *os << (d == DeviceType::cpu ? "cpu" : "cuda"); }
}  // namespace cudl

namespace cudl::testing {

inline bool cuda_available() { return cuda_compiled() && cuda_device_count() > 0; }

// Skips the current test unless a CUDA device is usable.
#define CUDL_REQUIRE_CUDA()                                                          \
  do {                                                                               \
    if (!::cudl::cuda_compiled()) GTEST_SKIP() << "no CUDA device (CPU-only build)"; \
    if (!::cudl::testing::cuda_available()) GTEST_SKIP() << "no CUDA device";        \
  } while (0)

class BackendTest : public ::testing::TestWithParam<DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == DeviceType::cuda) {
      if (!cuda_compiled()) GTEST_SKIP() << "no CUDA device (CPU-only build)";
      if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
      ctx_ = std::make_unique<Context>(Device::cuda(0));
    } else {
      ctx_ = std::make_unique<Context>(Device::cpu());
    }
  }
  Context& ctx() { return *ctx_; }
  Backend& backend() { return ctx_->backend(); }
  // Host data onto the backend under test, and back.
  Tensor make(const std::vector<float>& values, const Shape& shape) { return Tensor::from_host(values, shape, ctx()); }
  Tensor make_int(const std::vector<std::int32_t>& values, const Shape& shape) {
    return Tensor::from_host(std::span<const std::int32_t>(values), shape, ctx());
  }
  std::vector<float> host(const Tensor& t) { return t.to_vector(ctx()); }

  std::unique_ptr<Context> ctx_;
};

inline std::string backend_param_name(const ::testing::TestParamInfo<DeviceType>& info) {
  return info.param == DeviceType::cpu ? "cpu" : "cuda";
}

}  // namespace cudl::testing

// Instantiate a BackendTest-derived fixture for both backends.
#define CUDL_INSTANTIATE_BACKENDS(Fixture)                                                                          \
  INSTANTIATE_TEST_SUITE_P(Backends, Fixture, ::testing::Values(::cudl::DeviceType::cpu, ::cudl::DeviceType::cuda), \
                           ::cudl::testing::backend_param_name)
