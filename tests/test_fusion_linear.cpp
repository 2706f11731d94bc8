// Linear + bias + ReLU fusion, the op: Backend::linear_bias_relu_forward against the three unfused
// ops it replaces (gemm with wᵀ, bias_add, ReLU) on the CPU under both GEMM policies (a oneDNN
// matmul with a ReLU post-op, or the composition over OpenBLAS), in f32 and the half dtypes, with
// NaN and empty operands; and on CUDA (cuBLASLt's RELU_BIAS epilogue) against the CPU. The network
// side is tests/test_network_fusion_linear.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::random_values;

CUDL_OP_COVERAGE(cuda_vs_cpu, "linear_bias_relu");
CUDL_OP_COVERAGE(cuda_vs_cpu_half, "linear_bias_relu");

struct LinearCase {
  std::int64_t n, in, out;
};

// An MLP layer's proportions, a VGG classifier's (wide in, narrower out), odd sizes (no
// vector-width multiple), and below the CPU's 8-row threshold for the one-primitive path (one row,
// a few) and the empty batch.
std::vector<LinearCase> linear_cases() {
  return {{8, 98, 32}, {16, 512, 64}, {9, 37, 19}, {1, 37, 19}, {5, 13, 3}, {0, 16, 8}};
}

// Equal as floats, NaN equal to NaN; else within atol + rtol |want|. Reports the first few misses.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int misses = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool same_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!same_nan && !(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i])) && ++misses <= 5)
      ADD_FAILURE() << what << " [" << i << "]: " << got[i] << " vs " << want[i];
  }
  EXPECT_EQ(misses, 0) << what;
}

// relu(x wᵀ + bias) through the three unfused ops, as Linear then ReLU run them.
Tensor unfused(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor y = Tensor::empty(Shape{x.dim(0), w.dim(0)}, ctx, x.dtype());
  ctx.backend().gemm(ctx, false, true, 1.0f, x, w, 0.0f, y);
  if (bias.defined()) ctx.backend().bias_add(ctx, y, bias);
  Tensor r = Tensor::empty(y.shape(), ctx, y.dtype());
  ctx.backend().activation_forward(ctx, Activation::relu, 0.0f, y, r);
  return r;
}

Tensor fused(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor y = Tensor::empty(Shape{x.dim(0), w.dim(0)}, ctx, x.dtype());
  ctx.backend().linear_bias_relu_forward(ctx, x, w, bias, y);
  return y;
}

struct Operands {
  std::vector<float> x, w, b;
};

Operands operands(const LinearCase& c, unsigned seed) {
  return {random_values(c.n * c.in, seed), random_values(c.out * c.in, seed + 1), random_values(c.out, seed + 2)};
}

TEST(FusedLinearBiasRelu, MatchesTheUnfusedOpsUnderBothCpuGemmPolicies) {
  for (CpuGemm policy : {CpuGemm::onednn, CpuGemm::openblas}) {
    Context ctx(Device::cpu());
    ctx.set_cpu_gemm(policy);
    unsigned seed = 1;
    for (const LinearCase& c : linear_cases()) {
      for (bool with_bias : {true, false}) {
        const std::string what =
            fmt::format("{} n={} in={} out={} bias={}", cpu_gemm_name(policy), c.n, c.in, c.out, with_bias);
        const Operands v = operands(c, seed += 3);
        const Tensor x = Tensor::from_host(v.x, Shape{c.n, c.in}, ctx);
        const Tensor w = Tensor::from_host(v.w, Shape{c.out, c.in}, ctx);
        const Tensor b = with_bias ? Tensor::from_host(v.b, Shape{c.out}, ctx) : Tensor();
        const std::vector<float> got = fused(ctx, x, w, b).to_vector(ctx);
        const std::vector<float> want = unfused(ctx, x, w, b).to_vector(ctx);
        expect_close(got, want, 1e-5f, 1e-4f, what);
        if (c.n == 0) continue;
        // The ReLU was applied where the unfused result has zeros, among values of both signs.
        const auto zeros = std::count(want.begin(), want.end(), 0.0f);
        EXPECT_GT(zeros, 0) << what;
        EXPECT_LT(zeros, static_cast<std::ptrdiff_t>(want.size())) << what;
        for (std::size_t i = 0; i < got.size(); ++i) {
          if (want[i] == 0.0f) {
            EXPECT_EQ(got[i], 0.0f) << what << " [" << i << "]";
          }
        }
      }
    }
  }
}

TEST(FusedLinearBiasRelu, NanRowsAndAnEmptyInnerDimensionMeanWhatTheUnfusedOpsMean) {
  for (CpuGemm policy : {CpuGemm::onednn, CpuGemm::openblas}) {
    Context ctx(Device::cpu());
    ctx.set_cpu_gemm(policy);
    // A NaN in row 1 of x makes that row's products NaN; the ReLU then gives what the unfused
    // ReLU gives for NaN (0), the other rows are untouched.
    const LinearCase c{9, 24, 10};
    Operands v = operands(c, 7);
    v.x[1 * c.in + 5] = std::numeric_limits<float>::quiet_NaN();
    const Tensor x = Tensor::from_host(v.x, Shape{c.n, c.in}, ctx);
    const Tensor w = Tensor::from_host(v.w, Shape{c.out, c.in}, ctx);
    const Tensor b = Tensor::from_host(v.b, Shape{c.out}, ctx);
    const std::vector<float> want = unfused(ctx, x, w, b).to_vector(ctx);
    expect_close(fused(ctx, x, w, b).to_vector(ctx), want, 1e-5f, 1e-4f, std::string(cpu_gemm_name(policy)) + " NaN");
    for (std::int64_t j = 0; j < c.out; ++j) EXPECT_EQ(want[static_cast<std::size_t>(c.out + j)], 0.0f) << j;

    // in = 0: the product is empty and y = relu(bias).
    const Tensor x0 = Tensor::zeros({2, 0}, ctx), w0 = Tensor::zeros({4, 0}, ctx);
    const Tensor b0 = Tensor::from_host(std::vector<float>{1.5f, -2.0f, 0.0f, 3.0f}, Shape{4}, ctx);
    EXPECT_EQ(fused(ctx, x0, w0, b0).to_vector(ctx),
              (std::vector<float>{1.5f, 0.0f, 0.0f, 3.0f, 1.5f, 0.0f, 0.0f, 3.0f}));
  }
}

TEST(FusedLinearBiasRelu, HalfPrecisionAccumulatesInF32AndRoundsOnce) {
  Context ctx(Device::cpu());
  for (DType t : {DType::bf16, DType::f16}) {
    for (const LinearCase& c : linear_cases()) {
      const Operands v = operands(c, 21);
      const Tensor x = Tensor::from_host(v.x, Shape{c.n, c.in}, ctx, t);
      const Tensor w = Tensor::from_host(v.w, Shape{c.out, c.in}, ctx, t);
      const Tensor b = Tensor::from_host(v.b, Shape{c.out}, ctx);  // f32, as bias_add's
      const Tensor got = fused(ctx, x, w, b);
      EXPECT_EQ(got.dtype(), t);
      // The unfused ops round the product, then the sum with the bias; the fused op rounds once.
      // Both are within two half-precision roundings of the f32 result.
      const float eps = t == DType::bf16 ? 1.0f / 128 : 1.0f / 1024;
      const std::string what = fmt::format("{} n={} in={} out={}", dtype_name(t), c.n, c.in, c.out);
      expect_close(got.to_vector(ctx), unfused(ctx, x, w, b).to_vector(ctx), 2 * eps, 2 * eps, what);
      const Tensor exact = fused(ctx, x.cast(ctx, DType::f32), w.cast(ctx, DType::f32), b);
      expect_close(got.to_vector(ctx), exact.to_vector(ctx), eps, eps, what + " against f32");
    }
  }
}

TEST(FusedLinearBiasRelu, BadArgumentsNameTheFusedOp) {
  Context ctx(Device::cpu());
  const Tensor x = Tensor::zeros({2, 5}, ctx), w = Tensor::zeros({3, 5}, ctx);
  Tensor y = Tensor::zeros({2, 3}, ctx);
  cudl::testing::expect_error([&] { ctx.backend().linear_bias_relu_forward(ctx, x, w, Tensor::zeros({4}, ctx), y); },
                              {"linear_bias_relu_forward", "bias=[4]", "3 outputs"});
  cudl::testing::expect_error(
      [&] {
        ctx.backend().linear_bias_relu_forward(ctx, x, Tensor::zeros({3, 4}, ctx), Tensor(), y);
      },
      {"linear_bias_relu_forward", "w=[3,4]", "[out, 5]"});
  Tensor wrong = Tensor::zeros({2, 4}, ctx);
  cudl::testing::expect_error([&] { ctx.backend().linear_bias_relu_forward(ctx, x, w, Tensor(), wrong); },
                              {"linear_bias_relu_forward", "y"});
  const Tensor xh = Tensor::zeros({2, 5}, ctx, DType::bf16);
  cudl::testing::expect_error([&] { ctx.backend().linear_bias_relu_forward(ctx, xh, w, Tensor(), y); },
                              {"linear_bias_relu_forward", "w"});
}

// The CUDA op (cuBLASLt, or the unfused ops where it refuses) against the CPU's, which the tests
// above tie to the unfused ops: skips visibly without a GPU; tools/gpu-check.sh's filter (*Cuda*)
// runs it. Strict fp32 (no TF32) so that the f32 rows compare at the accumulated tolerance.
TEST(FusionLinearCudaVsCpu, FusedLinearBiasReluMatchesTheCpu) {
  CUDL_REQUIRE_CUDA();
  Context cpu(Device::cpu());
  Context gpu(Device::cuda(0));
  gpu.set_math_mode(MathMode::strict_fp32);
  unsigned seed = 60;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    for (const LinearCase& c : linear_cases()) {
      for (bool with_bias : {true, false}) {
        const std::string what =
            fmt::format("{} n={} in={} out={} bias={}", dtype_name(t), c.n, c.in, c.out, with_bias);
        Operands v = operands(c, seed += 3);
        if (c.n > 1) v.x[static_cast<std::size_t>(c.in + 1)] = std::numeric_limits<float>::quiet_NaN();  // row 1
        const auto on = [&](Context& ctx) {
          const Tensor b = with_bias ? Tensor::from_host(v.b, Shape{c.out}, ctx) : Tensor();
          return fused(ctx, Tensor::from_host(v.x, Shape{c.n, c.in}, ctx, t),
                       Tensor::from_host(v.w, Shape{c.out, c.in}, ctx, t), b)
              .to_vector(ctx);
        };
        const float tol = t == DType::f32 ? 1e-4f : t == DType::bf16 ? 2.0f / 128 : 2.0f / 1024;
        expect_close(on(gpu), on(cpu), tol, t == DType::f32 ? 1e-3f : tol, what);
      }
    }
  }
}

// As a network hands them over: x, w and bias as views into one block at float offsets (a Linear's
// weight and bias live in the parameter block wherever the layers before put them), so 4-, 8- and
// 12-byte aligned operands. cuBLASLt is told A-D's alignments; a bias under 16 bytes runs unfused
// (kernels/cublas/linear_fused.cpp). Either way the result is the CPU's, and no fault is left behind
// for the next call (the synchronising read at the end reports one).
TEST(FusionLinearCudaVsCpu, OperandsAtAnyFloatOffsetMatchTheCpu) {
  CUDL_REQUIRE_CUDA();
  Context cpu(Device::cpu());
  Context gpu(Device::cuda(0));
  gpu.set_math_mode(MathMode::strict_fp32);
  const LinearCase c{9, 37, 19};
  unsigned seed = 90;
  for (std::int64_t offset = 0; offset < 4; ++offset) {
    const Operands v = operands(c, seed += 3);
    const std::string what = fmt::format("float offset {}", offset);
    // One block per context holding bias, then w, then x, each starting `offset` floats past 16 bytes.
    const auto on = [&](Context& ctx) {
      std::vector<float> block;
      std::vector<std::int64_t> at;
      for (const std::vector<float>* part : {&v.b, &v.w, &v.x}) {
        block.resize((block.size() + 3) / 4 * 4 + static_cast<std::size_t>(offset), 0.0f);
        at.push_back(static_cast<std::int64_t>(block.size()));
        block.insert(block.end(), part->begin(), part->end());
      }
      const Tensor all = Tensor::from_host(block, Shape{static_cast<std::int64_t>(block.size())}, ctx);
      const Tensor b = all.view(at[0], Shape{c.out}), w = all.view(at[1], Shape{c.out, c.in}),
                   x = all.view(at[2], Shape{c.n, c.in});
      return fused(ctx, x, w, b).to_vector(ctx);
    };
    expect_close(on(gpu), on(cpu), 1e-4f, 1e-3f, what);
  }
  EXPECT_NO_THROW(gpu.synchronize());
}

}  // namespace
