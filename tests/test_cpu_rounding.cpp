// The CPU backend rounds each product before the sum that uses it, in every copy of its cloned loops
// (kernels/cpu/simd_clones.hpp): GCC contracts a * b + c into an FMA in C++ unless told not to
// (-ffp-contract=off, CMakeLists.txt), and it did so in the AVX-512 copies of axpy and the tanh
// backward, so results depended on the host's instruction set and differed from the CUDA kernels
// (kernels/cuda/elementwise.cu, activations.cu), which round the product first as documented.
// The expected values here are formed one rounding at a time through volatile stores, which no
// compiler can fuse. On a host without AVX-512 the baseline copy runs and these pass either way.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace {

using namespace cudl;

// Enough elements that a fused and an unfused result differ somewhere (about a third of random
// float triples do), spread over several of the CPU's 4096-element chunks, with a tail.
constexpr std::int64_t kCount = 3 * 4096 + 17;

std::vector<float> random_floats(std::uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(kCount));
  for (float& x : v) x = dist(rng);
  return v;
}

// a * b, rounded to float and kept from fusing with whatever uses it.
float rounded_product(float a, float b) {
  volatile float p = a * b;
  return p;
}

// How many elements of got differ in their bits from want; the first few are reported.
int count_bit_differences(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  int differ = 0;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) == 0) continue;
    if (++differ <= 3) ADD_FAILURE() << what << " [" << i << "]: " << got[i] << " but unfused " << want[i];
  }
  return differ;
}

TEST(CpuRounding, AxpyRoundsTheProductBeforeTheSum) {
  Context ctx;
  const float alpha = -0.37f;
  const std::vector<float> x = random_floats(1, -1.0f, 1.0f), y0 = random_floats(2, -1.0f, 1.0f);
  Tensor tx = Tensor::from_host(x, {kCount}, ctx), ty = Tensor::from_host(y0, {kCount}, ctx);
  ctx.backend().axpy(ctx, alpha, tx, ty);
  std::vector<float> want(y0.size());
  for (std::size_t i = 0; i < want.size(); ++i) want[i] = y0[i] + rounded_product(alpha, x[i]);
  EXPECT_EQ(count_bit_differences(ty.to_vector(ctx), want, "axpy"), 0);
}

TEST(CpuRounding, TanhBackwardRoundsTheSquareBeforeTheDifference) {
  Context ctx;
  // y is tanh's output, so in (-1, 1); dy any gradient.
  const std::vector<float> y = random_floats(3, -0.999f, 0.999f), dy = random_floats(4, -2.0f, 2.0f);
  Tensor ty = Tensor::from_host(y, {kCount}, ctx), tdy = Tensor::from_host(dy, {kCount}, ctx);
  Tensor dx = Tensor::zeros({kCount}, ctx);
  ctx.backend().activation_backward(ctx, Activation::tanh, 0.0f, Tensor(), ty, tdy, dx);
  std::vector<float> want(y.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    volatile float one_minus = 1.0f - rounded_product(y[i], y[i]);
    want[i] = rounded_product(dy[i], one_minus);
  }
  EXPECT_EQ(count_bit_differences(dx.to_vector(ctx), want, "tanh backward"), 0);
}

}  // namespace
