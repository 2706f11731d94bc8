// The bench's library peers (kernels/cuda/peers.hpp): CUB's sum agrees with cudl's to float
// accumulation, and a peer is refused on a CPU context in one line. CUDA builds only; the sum
// comparison skips visibly without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/test_util.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/kernels/cuda/peers.hpp"

namespace {

using namespace cudl;

TEST(BenchPeers, CubSumRefusesACpuContext) {
  Context cpu{Device::cpu()};
  Tensor x = Tensor::zeros({4}, cpu), out = Tensor::empty({1}, cpu);
  cudl::testing::expect_error([&] { cub_sum(cpu, x, out); }, {"cub_sum", "CUDA peer", "cpu"});
}

TEST(BenchPeers, CubSumAgreesWithOurSum) {
  CUDL_REQUIRE_CUDA();
  Context gpu{Device::cuda(0)};
  std::vector<float> v(1 << 20);
  double exact = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = std::sin(static_cast<float>(i));
    exact += v[i];
  }
  Tensor x = Tensor::from_host(v, {static_cast<std::int64_t>(v.size())}, gpu);
  Tensor ours = Tensor::empty({1}, gpu), cub = Tensor::empty({1}, gpu);
  gpu.backend().sum(gpu, x, ours);
  cub_sum(gpu, x, cub);
  EXPECT_NEAR(ours.item(gpu), exact, 1e-3);
  // A float accumulator over 2^20 terms of magnitude <= 1: well within 1e-2 of the exact sum.
  EXPECT_NEAR(cub.item(gpu), exact, 1e-2);
}

}  // namespace
#endif
