// Seeded random fills and dropout: reproducible for a (seed, offset), statistically sound.
#include <cmath>
#include <string>
#include <vector>

#include "cudl/engine/half.hpp"
#include "cudl/engine/philox.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"

using namespace cudl;
using cudl::testing::BackendTest;

// The ops this file gradient-checks (Gradient* tests), by the op table's names.
CUDL_OP_COVERAGE(gradient, "dropout");

class RandomOps : public BackendTest {};

namespace {

// v rounded to dtype t (to nearest even), as a float.
float round_to(DType t, float v) {
  if (t == DType::bf16) return to_float(to_bf16(v));
  if (t == DType::f16) return to_float(to_f16(v));
  return v;
}

}  // namespace

TEST_P(RandomOps, FillUniformIsReproducibleAndInRange) {
  const int n = 10000;
  Tensor a = Tensor::empty({n}, ctx()), b = Tensor::empty({n}, ctx()), c = Tensor::empty({n}, ctx());
  backend().fill_uniform(ctx(), a, -2.0f, 3.0f, 42, 0);
  backend().fill_uniform(ctx(), b, -2.0f, 3.0f, 42, 0);
  backend().fill_uniform(ctx(), c, -2.0f, 3.0f, 43, 0);
  std::vector<float> ah = host(a);
  EXPECT_EQ(ah, host(b));
  EXPECT_NE(ah, host(c));
  double mean = 0;
  for (int i = 0; i < n; ++i) {
    const float v = ah[static_cast<std::size_t>(i)];
    ASSERT_GE(v, -2.0f);
    ASSERT_LE(v, 3.0f);
    // Element i draws from counter offset + i alone (the CPU and CUDA backends agree bit for bit).
    ASSERT_EQ(v, -2.0f + 5.0f * philox::uniform(static_cast<std::uint64_t>(i), 42)) << i;
    mean += v;
  }
  EXPECT_NEAR(mean / n, 0.5, 0.05);
  // An offset shifts the stream: element i at offset 7 is element i + 7 at offset 0.
  Tensor shifted = Tensor::empty({n - 7}, ctx());
  backend().fill_uniform(ctx(), shifted, -2.0f, 3.0f, 42, 7);
  std::vector<float> sh = host(shifted);
  EXPECT_TRUE(std::equal(sh.begin(), sh.end(), ah.begin() + 7));
}

TEST_P(RandomOps, FillNormalMoments) {
  const int n = 50000;
  Tensor x = Tensor::empty({n}, ctx());
  backend().fill_normal(ctx(), x, 1.0f, 2.0f, 7, 123);
  std::vector<float> xh = host(x);
  double m = 0, m2 = 0;
  for (float v : xh) m += v;
  m /= n;
  for (float v : xh) m2 += (v - m) * (v - m);
  const double sd = std::sqrt(m2 / (n - 1));
  EXPECT_NEAR(m, 1.0, 0.05);  // ~5 standard errors
  EXPECT_NEAR(sd, 2.0, 0.04);
  Tensor again = Tensor::empty({n}, ctx());
  backend().fill_normal(ctx(), again, 1.0f, 2.0f, 7, 123);
  EXPECT_EQ(host(again), xh);
}

TEST_P(RandomOps, DropoutMaskIsSeededScaledAndKeepsAboutOneMinusP) {
  const int n = 20000;
  const float p = 0.3f, keep = 1.0f / (1.0f - p);
  std::vector<float> xs(n);
  for (int i = 0; i < n; ++i) xs[static_cast<std::size_t>(i)] = static_cast<float>(i % 13) - 6.0f;
  Tensor x = make(xs, {n});
  Tensor y = Tensor::empty({n}, ctx()), mask = Tensor::empty({n}, ctx());
  Tensor y2 = Tensor::empty({n}, ctx()), mask2 = Tensor::empty({n}, ctx()), mask3 = Tensor::empty({n}, ctx());
  backend().dropout_forward(ctx(), x, p, 99, 1000, y, mask);
  backend().dropout_forward(ctx(), x, p, 99, 1000, y2, mask2);
  backend().dropout_forward(ctx(), x, p, 99, 5000, y2, mask3);
  std::vector<float> mh = host(mask), yh = host(y);
  EXPECT_EQ(mh, host(mask2));
  EXPECT_NE(mh, host(mask3));
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    ASSERT_TRUE(mh[k] == 0.0f || mh[k] == keep) << "mask[" << i << "]=" << mh[k];
    ASSERT_EQ(yh[k], xs[k] * mh[k]);
    kept += mh[k] != 0.0f;
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 1.0 - p, 0.015);
}

// Element i draws philox::grouped_uniform(offset + i, seed) (four elements per Philox call), the
// CPU and CUDA backends alike: checked element by element at an offset that is not a multiple of
// four, over lengths that end mid-group and cross the CPU's 4096-element chunks, in every dtype
// (the mask is 1/(1-p) rounded to it, y is x times the exact factor rounded once).
TEST_P(RandomOps, DropoutDrawsTheGroupedStreamAtEachElementsCounter) {
  const float p = 0.4f, keep = 1.0f / (1.0f - p);
  const std::uint64_t seed = 2024;
  for (const DType dt : {DType::f32, DType::bf16, DType::f16}) {
    for (const std::int64_t n : {std::int64_t{3}, std::int64_t{9001}}) {
      for (const std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{1001}, std::uint64_t{4098}}) {
        SCOPED_TRACE(fmt::format("{} n={} offset={}", dtype_name(dt), n, offset));
        std::vector<float> xs(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i) xs[static_cast<std::size_t>(i)] = 0.25f * static_cast<float>(i % 7 + 1);
        Tensor x = Tensor::from_host(xs, {n}, ctx(), dt);
        Tensor y = Tensor::empty({n}, ctx(), dt), mask = Tensor::empty({n}, ctx(), dt);
        backend().dropout_forward(ctx(), x, p, seed, offset, y, mask);
        const std::vector<float> mh = host(mask), yh = host(y);
        const float keep_t = round_to(dt, keep);
        for (std::int64_t i = 0; i < n; ++i) {
          const auto k = static_cast<std::size_t>(i);
          const bool kept = philox::grouped_uniform(offset + static_cast<std::uint64_t>(i), seed) >= p;
          ASSERT_EQ(mh[k], kept ? keep_t : 0.0f) << "mask[" << i << "]";
          ASSERT_EQ(yh[k], kept ? round_to(dt, xs[k] * keep) : 0.0f) << "y[" << i << "]";
        }
      }
    }
  }
}

TEST_P(RandomOps, DropoutWithPZeroKeepsEverythingAndBadPThrows) {
  Tensor x = make({1, -2, 3}, {3}), y = Tensor::empty({3}, ctx()), mask = Tensor::empty({3}, ctx());
  backend().dropout_forward(ctx(), x, 0.0f, 1, 0, y, mask);
  EXPECT_EQ(host(mask), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(host(y), (std::vector<float>{1, -2, 3}));
  for (float bad : {1.0f, -0.1f, 1.5f}) {
    try {
      backend().dropout_forward(ctx(), x, bad, 1, 0, y, mask);
      FAIL() << "expected an Error for p=" << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("dropout_forward"), std::string::npos) << e.what();
    }
  }
}

TEST_P(RandomOps, MulIsElementwiseAndChecksShapes) {
  Tensor a = make({1, 2, 3}, {3}), b = make({4, -5, 0.5f}, {3}), out = Tensor::empty({3}, ctx());
  backend().mul(ctx(), a, b, out);
  EXPECT_EQ(host(out), (std::vector<float>{4, -10, 1.5f}));
  Tensor wrong = Tensor::empty({2}, ctx());
  EXPECT_THROW(backend().mul(ctx(), a, wrong, out), Error);
}

CUDL_INSTANTIATE_BACKENDS(RandomOps);

TEST(GradientDropout, InputGradientThroughTheMask) {
  Context ctx;
  Backend& b = ctx.backend();
  std::vector<float> xs, ws;
  for (int i = 0; i < 40; ++i) {
    xs.push_back(std::sin(static_cast<float>(i)));
    ws.push_back(std::cos(static_cast<float>(i) * 0.3f));
  }
  Tensor x = Tensor::from_host(xs, {4, 10}, ctx), dy = Tensor::from_host(ws, {4, 10}, ctx);
  Tensor y = Tensor::empty(x.shape(), ctx), mask = Tensor::empty(x.shape(), ctx), dx = Tensor::empty(x.shape(), ctx);
  b.dropout_forward(ctx, x, 0.5f, 11, 0, y, mask);
  b.mul(ctx, dy, mask, dx);
  auto loss = [&] {
    b.dropout_forward(ctx, x, 0.5f, 11, 0, y, mask);
    return cudl::testing::weighted_sum(y.to_vector(ctx), ws);
  };
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "dropout");
}
