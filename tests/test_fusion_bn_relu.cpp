// Backend::batchnorm_relu_forward_train and batchnorm_relu_backward against the unfused ops they
// replace (batchnorm_forward_train, a ReLU, the ReLU's backward, batchnorm_backward) on each
// backend, in f32 and the half dtypes: the same bits on the CPU (one code path, the ReLU folded
// into the one rounding), cuDNN's batch norm vs our kernels within accumulation error on CUDA. Also
// a NaN (0 out, as our ReLU gives), empty and channel-less inputs, bad arguments, and a finite-
// difference gradient check of the fused pair.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/gradcheck.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::BackendTest;

namespace {

CUDL_OP_COVERAGE(gradient, "batchnorm_relu");

constexpr float kEps = 1e-5f, kMomentum = 0.1f;

// One batch norm + ReLU's tensors on a device: inputs, outputs and the statistics it updates.
struct Case {
  Tensor x, gamma, beta, rm, rv, y, sm, si, dy, dx, dgamma, dbeta;
};

Case make_case(Context& ctx, const Shape& shape, DType dtype, const std::vector<float>& xs) {
  const std::int64_t c = shape[1];
  Case k;
  k.x = Tensor::from_host(xs, shape, ctx, dtype);
  k.gamma = Tensor::from_host(cudl::testing::random_values(c, 2, 0.5f, 1.5f), {c}, ctx);
  k.beta = Tensor::from_host(cudl::testing::random_values(c, 3, -0.5f, 0.5f), {c}, ctx);
  k.rm = Tensor::from_host(cudl::testing::random_values(c, 4), {c}, ctx);
  k.rv = Tensor::from_host(cudl::testing::random_values(c, 5, 0.5f, 2.0f), {c}, ctx);
  k.y = Tensor::zeros(shape, ctx, dtype);
  k.sm = Tensor::zeros({c}, ctx);
  k.si = Tensor::zeros({c}, ctx);
  k.dy = Tensor::from_host(cudl::testing::random_values(shape.numel(), 6), shape, ctx, dtype);
  k.dx = Tensor::zeros(shape, ctx, dtype);
  k.dgamma = Tensor::from_host(cudl::testing::random_values(c, 7), {c}, ctx);  // backward accumulates
  k.dbeta = Tensor::from_host(cudl::testing::random_values(c, 8), {c}, ctx);
  return k;
}

// The unfused pair, as the layers run it: batch norm, ReLU; ReLU's backward (from its input, the
// batch norm's output), batch norm's backward.
void run_unfused(Context& ctx, Case& k) {
  Backend& be = ctx.backend();
  Tensor bn = Tensor::empty(k.x.shape(), ctx, k.x.dtype());
  be.batchnorm_forward_train(ctx, k.x, k.gamma, k.beta, kEps, kMomentum, k.rm, k.rv, bn, k.sm, k.si);
  be.activation_forward(ctx, Activation::relu, 0.0f, bn, k.y);
  Tensor g = Tensor::empty(k.x.shape(), ctx, k.x.dtype());
  be.activation_backward(ctx, Activation::relu, 0.0f, bn, k.y, k.dy, g);
  be.batchnorm_backward(ctx, k.x, g, k.gamma, k.sm, k.si, kEps, k.dx, k.dgamma, k.dbeta);
}

void run_fused(Context& ctx, Case& k) {
  Backend& be = ctx.backend();
  be.batchnorm_relu_forward_train(ctx, k.x, k.gamma, k.beta, kEps, kMomentum, k.rm, k.rv, k.y, k.sm, k.si);
  be.batchnorm_relu_backward(ctx, k.x, k.y, k.dy, k.gamma, k.sm, k.si, kEps, k.dx, k.dgamma, k.dbeta);
}

// Exact (bit for bit, NaN equal to NaN) when atol and rtol are 0, else |a - b| <= atol + rtol |b|.
void expect_match(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int misses = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool same_bits = std::memcmp(&got[i], &want[i], sizeof(float)) == 0 ||
                           (atol + rtol > 0 && std::isnan(got[i]) && std::isnan(want[i]));
    const bool close = std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]);
    if (!(same_bits || (atol + rtol > 0 && close)) && ++misses <= 5)
      ADD_FAILURE() << what << " [" << i << "]: fused " << got[i] << " vs unfused " << want[i];
  }
  EXPECT_EQ(misses, 0) << what;
}

class BatchNormRelu : public BackendTest {
 protected:
  // Fused against unfused on this backend from the same inputs: every output and updated tensor.
  void compare(const Shape& shape, DType dtype, const std::vector<float>& xs, const std::string& what) {
    Case fused = make_case(ctx(), shape, dtype, xs), unfused = make_case(ctx(), shape, dtype, xs);
    run_fused(ctx(), fused);
    run_unfused(ctx(), unfused);
    // The CPU runs one code path for both: the same bits. CUDA's unfused batch norm is cuDNN's,
    // the fused one ours: the op table's accumulated tolerance, widened by the half format's
    // rounding of y and dx (one unit roundoff of each value; dx's terms are a few times |dx|).
    const bool exact = GetParam() == DeviceType::cpu;
    const float u = dtype == DType::bf16 ? 1.0f / 256 : dtype == DType::f16 ? 1.0f / 2048 : 0.0f;
    const float atol = exact ? 0.0f : 1e-4f, rtol = exact ? 0.0f : 1e-3f + 4 * u;
    const std::string label = what + " " + std::string(dtype_name(dtype));
    const auto cmp = [&](const Tensor Case::*t, const char* name) {
      expect_match(host(fused.*t), host(unfused.*t), atol, rtol, label + " " + name);
    };
    cmp(&Case::y, "y");
    cmp(&Case::sm, "save_mean");
    cmp(&Case::si, "save_invstd");
    cmp(&Case::rm, "running_mean");
    cmp(&Case::rv, "running_var");
    cmp(&Case::dx, "dx");
    cmp(&Case::dgamma, "dgamma");
    cmp(&Case::dbeta, "dbeta");
  }
};

TEST_P(BatchNormRelu, MatchesBatchNormThenReluInEveryDtype) {
  for (const Shape& shape : {Shape{4, 3, 5, 7}, Shape{16, 5}, Shape{2, 4, 3, 2, 3}, Shape{3, 6, 8, 8}})
    for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
      // Centred off zero so that both signs, and so both branches of the ReLU, occur in each channel.
      const std::vector<float> xs = cudl::testing::random_values(shape.numel(), 1, -1.0f, 2.0f);
      compare(shape, dtype, xs, fmt::format("{}", shape));
    }
}

// Our ReLU gives 0 for NaN (v > 0 ? v : 0), so a NaN that poisons a channel's statistics zeroes
// that channel's outputs in both; its gradients are NaN through x̂ in both (0 * NaN in the sums).
TEST_P(BatchNormRelu, ANanZeroesItsChannelAsTheUnfusedReluDoes) {
  const Shape shape{2, 3, 2, 2};
  std::vector<float> xs = cudl::testing::random_values(shape.numel(), 9, -1.0f, 2.0f);
  xs[5] = std::nanf("");  // sample 0, channel 1
  compare(shape, DType::f32, xs, "NaN");
  Case k = make_case(ctx(), shape, DType::f32, xs);
  run_fused(ctx(), k);
  const std::vector<float> y = host(k.y), sm = host(k.sm), rm = host(k.rm);
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t i = 0; i < 4; ++i) EXPECT_EQ(y[static_cast<std::size_t>((n * 3 + 1) * 4 + i)], 0.0f);
  EXPECT_TRUE(std::isnan(sm[1]));
  EXPECT_TRUE(std::isnan(rm[1]));
  EXPECT_FALSE(std::isnan(sm[0]) || std::isnan(sm[2]));
  EXPECT_FALSE(std::isnan(y[0]));
}

TEST_P(BatchNormRelu, EmptyAndChannelLessInputs) {
  Backend& be = backend();
  // No channels: nothing to normalise, nothing written or accumulated.
  Case none = make_case(ctx(), Shape{2, 0, 3, 3}, DType::f32, {});
  run_fused(ctx(), none);
  EXPECT_EQ(none.y.numel(), 0);
  // An empty batch: training needs two values per channel (as batchnorm_forward_train); backward
  // has nothing to differentiate and leaves the accumulated gradients as they were.
  Case empty = make_case(ctx(), Shape{0, 3, 4, 4}, DType::f32, {});
  cudl::testing::expect_error(
      [&] {
        be.batchnorm_relu_forward_train(ctx(), empty.x, empty.gamma, empty.beta, kEps, kMomentum, empty.rm, empty.rv,
                                        empty.y, empty.sm, empty.si);
      },
      {"batchnorm_relu_forward_train", "training needs more than 1"});
  const std::vector<float> dgamma = host(empty.dgamma);
  be.batchnorm_relu_backward(ctx(), empty.x, empty.y, empty.dy, empty.gamma, empty.sm, empty.si, kEps, empty.dx,
                             empty.dgamma, empty.dbeta);
  EXPECT_EQ(host(empty.dgamma), dgamma);
}

TEST_P(BatchNormRelu, BadArgumentsThrowNamingTheOp) {
  const Shape shape{2, 3, 2, 2};
  Case k = make_case(ctx(), shape, DType::f32, cudl::testing::random_values(shape.numel(), 10));
  Tensor half_y = Tensor::zeros(shape, ctx(), DType::bf16), short_gamma = Tensor::zeros({2}, ctx());
  cudl::testing::expect_error(
      [&] {
        backend().batchnorm_relu_backward(ctx(), k.x, half_y, k.dy, k.gamma, k.sm, k.si, kEps, k.dx, k.dgamma, k.dbeta);
      },
      {"batchnorm_relu_backward", "y"});
  cudl::testing::expect_error(
      [&] {
        backend().batchnorm_relu_forward_train(ctx(), k.x, short_gamma, k.beta, kEps, kMomentum, k.rm, k.rv, k.y, k.sm,
                                               k.si);
      },
      {"batchnorm_relu_forward_train", "gamma"});
  cudl::testing::expect_error(
      [&] {
        backend().batchnorm_relu_forward_train(ctx(), k.x, k.gamma, k.beta, kEps, 2.0f, k.rm, k.rv, k.y, k.sm, k.si);
      },
      {"batchnorm_relu_forward_train", "momentum"});
}

CUDL_INSTANTIATE_BACKENDS(BatchNormRelu);

// loss = Σ w·relu(bn(x)) through the fused forward, against its backward: dx (with the two terms
// through the batch statistics), dgamma and dbeta. The data keep every normalised value at least
// 0.05 from the ReLU's kink, so the central differences (step 5e-3) never straddle it.
TEST(GradientNorm, BatchNormReluInputGammaBeta) {
  Context ctx;
  Backend& be = ctx.backend();
  const Shape shape{3, 2, 3, 2};
  // Each channel holds ±0.3 k for k = 1..9 in a mixed order (channel 1 shifted by 0.5), so x̂ lies on
  // a grid of ±0.178 k, and beta puts the ReLU's kink between grid points.
  std::vector<float> xs(static_cast<std::size_t>(shape.numel()));
  for (std::int64_t n = 0; n < 3; ++n)
    for (std::int64_t c = 0; c < 2; ++c)
      for (std::int64_t i = 0; i < 6; ++i) {
        const std::int64_t j = (n * 6 + i) * 7 % 18;
        const float k = static_cast<float>(j / 2 + 1) * (j % 2 == 1 ? -1.0f : 1.0f);
        xs[static_cast<std::size_t>((n * 2 + c) * 6 + i)] = 0.3f * k + (c == 1 ? 0.5f : 0.0f);
      }
  Tensor x = Tensor::from_host(xs, shape, ctx);
  Tensor gamma = Tensor::from_host(std::vector<float>{1.3f, -0.7f}, {2}, ctx);
  Tensor beta = Tensor::from_host(std::vector<float>{0.1f, 0.06f}, {2}, ctx);
  Tensor rm = Tensor::zeros({2}, ctx), rv = Tensor::full({2}, 1.0f, ctx);
  Tensor y = Tensor::empty(shape, ctx), sm = Tensor::empty({2}, ctx), si = Tensor::empty({2}, ctx);
  // The kink margin: batch norm alone (the same statistics) is at least 0.05 from 0 everywhere, 10
  // times what a step moves any output by.
  Tensor bn = Tensor::empty(shape, ctx);
  be.batchnorm_forward_train(ctx, x, gamma, beta, kEps, 0.1f, rm, rv, bn, sm, si);
  int positive = 0;
  for (float v : bn.to_vector(ctx)) {
    ASSERT_GT(std::fabs(v), 0.05f) << "test data too close to the ReLU's kink";
    positive += v > 0 ? 1 : 0;
  }
  ASSERT_GT(positive, 0);
  ASSERT_LT(positive, shape.numel());  // both sides of the kink are exercised
  const std::vector<float> w = cudl::testing::random_values(shape.numel(), 14);
  auto loss = [&] {
    be.batchnorm_relu_forward_train(ctx, x, gamma, beta, kEps, 0.1f, rm, rv, y, sm, si);
    return cudl::testing::weighted_sum(y.to_vector(ctx), w);
  };
  loss();  // saved statistics and output of the unperturbed input
  Tensor dy = Tensor::from_host(w, shape, ctx), dx = Tensor::empty(shape, ctx);
  Tensor dgamma = Tensor::zeros({2}, ctx), dbeta = Tensor::zeros({2}, ctx);
  be.batchnorm_relu_backward(ctx, x, y, dy, gamma, sm, si, kEps, dx, dgamma, dbeta);
  cudl::testing::GradCheckOptions opts;
  opts.step = 5e-3f;
  cudl::testing::expect_gradient_matches(ctx, x, dx, loss, "batchnorm_relu dx", opts);
  cudl::testing::expect_gradient_matches(ctx, gamma, dgamma, loss, "batchnorm_relu dgamma", opts);
  cudl::testing::expect_gradient_matches(ctx, beta, dbeta, loss, "batchnorm_relu dbeta", opts);
}

}  // namespace
