// top_k (engine/backend.hpp; kernels/cpu/topk.cpp, kernels/cuda/topk.cu): each backend against a
// std::partial_sort reference written with float comparisons (not the backends' bit keys), with
// ties, NaN, signed zeros and infinities; the refusals; and CUDA against the CPU, bit for bit, in
// f32, bf16 and f16 (skipped visibly without a GPU).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "cudl/engine/op_table.hpp"
#include "cudl/models/zoo/top_classes.hpp"
#include "tests/awkward_floats.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/cuda_vs_cpu_fixture.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::awkward_values;
using cudl::testing::BackendTest;
using cudl::testing::bits_of;
using cudl::testing::expect_error;

CUDL_OP_COVERAGE(cuda_vs_cpu, "top_k");
CUDL_OP_COVERAGE(cuda_vs_cpu_half, "top_k");

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// The documented order: a NaN after every number (NaNs among themselves by column), otherwise the
// larger value first and equal values (+0 == -0) by lower column.
bool ranks_before(const std::vector<float>& row, int i, int j) {
  const float a = row[static_cast<std::size_t>(i)], b = row[static_cast<std::size_t>(j)];
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) == std::isnan(b) ? i < j : std::isnan(b);
  if (a != b) return a > b;
  return i < j;
}

std::vector<std::int32_t> reference_top_k(const std::vector<float>& x, std::int64_t n, std::int64_t cols,
                                          std::int64_t k) {
  std::vector<std::int32_t> out;
  for (std::int64_t r = 0; r < n; ++r) {
    const std::vector<float> row(x.begin() + r * cols, x.begin() + (r + 1) * cols);
    std::vector<int> order(static_cast<std::size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int i, int j) { return ranks_before(row, i, j); });
    out.insert(out.end(), order.begin(), order.begin() + k);
  }
  return out;
}

class TopKOps : public BackendTest {};

TEST_P(TopKOps, HandCaseTiesNaNAndSignedZero) {
  Tensor x = make({1, 3, 3, 0,        //
                   kNaN, 2, kNaN, 2,  //
                   -0.0f, 0, -kInf, kNaN},
                  {3, 4});
  Tensor idx = Tensor::empty({3, 3}, ctx(), DType::i32), val = Tensor::empty({3, 3}, ctx());
  backend().top_k(ctx(), x, idx, val);
  // Row 0: the tie 3, 3 by column; row 1: NaN after the numbers; row 2: -0 == +0, so column 0 first.
  EXPECT_EQ(idx.to_int_vector(ctx()), (std::vector<std::int32_t>{1, 2, 0, 1, 3, 0, 0, 1, 2}));
  const std::vector<float> v = host(val);
  EXPECT_EQ(bits_of(v), bits_of({3, 3, 1, 2, 2, kNaN, -0.0f, 0, -kInf}));
  // The first column is argmax_rows' answer.
  Tensor arg = Tensor::empty({3}, ctx(), DType::i32);
  backend().argmax_rows(ctx(), x, arg);
  EXPECT_EQ(arg.to_int_vector(ctx()), (std::vector<std::int32_t>{1, 1, 0}));
}

TEST_P(TopKOps, MatchesPartialSortReference) {
  for (const Shape& s : {Shape{64, 10}, Shape{9, 1000}, Shape{5, 1}, Shape{3, 4099}}) {
    const std::vector<float> xs = awkward_values(s.numel(), static_cast<std::uint32_t>(s[1]));
    Tensor x = make(xs, s);
    for (std::int64_t k : {std::int64_t{1}, std::min<std::int64_t>(5, s[1]), s[1]}) {
      Tensor idx = Tensor::empty({s[0], k}, ctx(), DType::i32), val = Tensor::empty({s[0], k}, ctx());
      backend().top_k(ctx(), x, idx, val);
      const std::vector<std::int32_t> got = idx.to_int_vector(ctx());
      EXPECT_EQ(got, reference_top_k(xs, s[0], s[1], k)) << fmt::format("{}", s) << " k=" << k;
      std::vector<float> expected_values;
      for (std::size_t i = 0; i < got.size(); ++i)
        expected_values.push_back(
            xs[i / static_cast<std::size_t>(k) * static_cast<std::size_t>(s[1]) + static_cast<std::size_t>(got[i])]);
      EXPECT_EQ(bits_of(host(val)), bits_of(expected_values)) << fmt::format("{}", s) << " k=" << k;
    }
  }
}

TEST_P(TopKOps, ValuesMayBeLeftOutAndHalfInputsRankAsTheirF32Widening) {
  const std::vector<float> xs = awkward_values(7 * 33, 5);
  Tensor idx = Tensor::empty({7, 4}, ctx(), DType::i32), no_values;
  backend().top_k(ctx(), make(xs, {7, 33}), idx, no_values);
  EXPECT_EQ(idx.to_int_vector(ctx()), reference_top_k(xs, 7, 33, 4));
  // Multiples of 0.5, ±inf, NaN and -0 are exact in both half formats.
  for (DType t : {DType::bf16, DType::f16}) {
    Tensor xh = Tensor::from_host(xs, {7, 33}, ctx(), t);
    Tensor val = Tensor::empty({7, 4}, ctx());
    backend().top_k(ctx(), xh, idx, val);
    EXPECT_EQ(idx.to_int_vector(ctx()), reference_top_k(xs, 7, 33, 4)) << dtype_name(t);
  }
}

TEST_P(TopKOps, EmptyBatchAndRefusals) {
  Tensor none = Tensor::empty({0, 2}, ctx(), DType::i32), no_values_either = Tensor::empty({0, 2}, ctx());
  EXPECT_NO_THROW(backend().top_k(ctx(), Tensor::empty({0, 5}, ctx()), none, no_values_either));
  Tensor x = make({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor too_many = Tensor::empty({2, 4}, ctx(), DType::i32), no_values;
  expect_error([&] { backend().top_k(ctx(), x, too_many, no_values); }, {"top_k", "k=4", "[1, K=3]"});
  Tensor zero_k = Tensor::empty({2, 0}, ctx(), DType::i32);
  expect_error([&] { backend().top_k(ctx(), x, zero_k, no_values); }, {"top_k", "k=0"});
  Tensor wrong_rows = Tensor::empty({3, 2}, ctx(), DType::i32);
  expect_error([&] { backend().top_k(ctx(), x, wrong_rows, no_values); }, {"top_k", "indices", "2 rows"});
  Tensor f32_indices = Tensor::empty({2, 2}, ctx());
  expect_error([&] { backend().top_k(ctx(), x, f32_indices, no_values); }, {"top_k", "indices"});
  Tensor idx = Tensor::empty({2, 2}, ctx(), DType::i32), wrong_values = Tensor::empty({2, 3}, ctx());
  expect_error([&] { backend().top_k(ctx(), x, idx, wrong_values); }, {"top_k", "values"});
}

// classify's and predict's ranking (models/zoo/top_classes.hpp): softmax, then top_k of the
// probabilities, and their sum as the one number that says whether any of them is NaN.
TEST_P(TopKOps, TopClassesRanksProbabilitiesAndFlagsNaN) {
  const TopClasses top = top_classes(ctx(), make({0, 2, 1, 2, -1}, {1, 5}), 3);
  ASSERT_EQ(top.ranked.size(), 3u);
  EXPECT_EQ(top.ranked[0].index, 1);  // the tie 2, 2 by lower index
  EXPECT_EQ(top.ranked[1].index, 3);
  EXPECT_EQ(top.ranked[2].index, 2);
  const double e = std::exp(1.0), z = 1 + 2 * e * e + e + 1 / e;
  EXPECT_NEAR(top.ranked[0].probability, e * e / z, 1e-6);
  EXPECT_NEAR(top.ranked[2].probability, e / z, 1e-6);
  EXPECT_NEAR(top.total, 1.0, 1e-6);
  EXPECT_EQ(top_classes(ctx(), make({0, 2}, {1, 2}), 10).ranked.size(), 2u);  // k clamped to K
  EXPECT_TRUE(std::isnan(top_classes(ctx(), make({0, kNaN, 1}, {1, 3}), 1).total));
  expect_error([&] { (void)top_classes(ctx(), make({0, 1, 2, 3}, {2, 2}), 1); }, {"top classes", "[1, K]"});
}

CUDL_INSTANTIATE_BACKENDS(TopKOps);

// CUDA against the CPU on the op table's shapes: identical indices and value bits.
class TopKCudaVsCpu : public cudl::testing::CudaVsCpuTest<::testing::TestWithParam<DType>> {};

TEST_P(TopKCudaVsCpu, SameIndicesAndValues) {
  const DType t = GetParam();
  for (const Shape& s : op_spec("top_k").shapes) {
    const std::vector<float> xs = awkward_values(s.numel(), static_cast<std::uint32_t>(s.numel()));
    for (std::int64_t k : {std::int64_t{1}, std::min<std::int64_t>(5, s[1]), s[1]}) {
      std::vector<std::int32_t> idx[2];
      std::vector<float> val[2];
      Context* sides[2] = {&cpu(), &gpu()};
      for (int side = 0; side < 2; ++side) {
        Context& ctx = *sides[side];
        Tensor x = Tensor::from_host(xs, s, ctx, t);
        Tensor i = Tensor::empty({s[0], k}, ctx, DType::i32), v = Tensor::empty({s[0], k}, ctx);
        ctx.backend().top_k(ctx, x, i, v);
        idx[side] = i.to_int_vector(ctx);
        val[side] = v.to_vector(ctx);
      }
      EXPECT_EQ(idx[0], idx[1]) << dtype_name(t) << " " << fmt::format("{}", s) << " k=" << k;
      EXPECT_EQ(bits_of(val[0]), bits_of(val[1])) << dtype_name(t) << " " << fmt::format("{}", s) << " k=" << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, TopKCudaVsCpu, ::testing::Values(DType::f32, DType::bf16, DType::f16),
                         [](const ::testing::TestParamInfo<DType>& p) { return std::string(dtype_name(p.param)); });

}  // namespace
