// match_histograms (engine/backend.hpp; kernels/cpu/histogram.cpp, kernels/cuda/histogram.cu): each
// backend against a reference written with float comparisons and a stable sort (not the backends'
// bit keys), with ties, NaN, signed zeros and infinities, equal and unequal row lengths, in place;
// the refusals; and CUDA against the CPU bit for bit (skipped visibly without a GPU).
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
#include "tests/awkward_floats.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::awkward_values;
using cudl::testing::BackendTest;
using cudl::testing::bits_of;
using cudl::testing::expect_error;

CUDL_OP_COVERAGE(cuda_vs_cpu, "match_histograms");

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// The documented order: NaN below every number, equal values (+0 == -0) by lower column.
std::vector<std::size_t> ascending_order(const float* row, std::size_t n) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) {
    const bool ni = std::isnan(row[i]), nj = std::isnan(row[j]);
    if (ni || nj) return ni && !nj;
    return row[i] < row[j];
  });
  return order;
}

std::vector<float> reference_match(const std::vector<float>& source, const std::vector<float>& reference,
                                   std::size_t rows) {
  const std::size_t n = source.size() / rows, m = reference.size() / rows;
  std::vector<float> out(source.size());
  for (std::size_t r = 0; r < rows; ++r) {
    const std::vector<std::size_t> s = ascending_order(source.data() + r * n, n);
    const std::vector<std::size_t> q = ascending_order(reference.data() + r * m, m);
    for (std::size_t rank = 0; rank < n; ++rank) {
      const std::size_t i = r * n + s[rank];
      // The rank's quantile, (rank + 1/2) / n of the reference row's length, rounded down.
      const auto quantile = static_cast<std::size_t>(std::floor((static_cast<double>(rank) + 0.5) * m / n));
      out[i] = std::isnan(source[i]) ? source[i] : reference[r * m + q[quantile]];
    }
  }
  return out;
}

class HistogramOps : public BackendTest {};

TEST_P(HistogramOps, HandCaseEqualLengthsGiveTheReferenceValuesInTheSourcesOrder) {
  // Row 0: source ranks 2 < 3 < 7 < 9, so the reference's sorted values land in that order. Row 1:
  // the tie 5, 5 by column, -0 == +0 by column, NaN stays NaN (and is ranked lowest).
  Tensor source = make({7, 2, 9, 3,  //
                        5, kNaN, 5, -0.0f},
                       {2, 4});
  Tensor reference = make({40, 10, 30, 20,  //
                           -1, 0.0f, 8, 6},
                          {2, 4});
  Tensor out = Tensor::empty({2, 4}, ctx());
  backend().match_histograms(ctx(), source, reference, out);
  // Row 1's ranks: NaN(col 1) 0, -0(col 3) 1, 5(col 0) 2, 5(col 2) 3; the reference sorted: -1, 0, 6, 8.
  EXPECT_EQ(bits_of(host(out)), bits_of({30, 10, 40, 20, 6, kNaN, 8, 0.0f}));
}

TEST_P(HistogramOps, MatchesTheStableSortReference) {
  struct Case {
    std::int64_t rows, n, m;
  };
  for (const Case& c :
       {Case{3, 1000, 1000}, Case{3, 4099, 257}, Case{2, 33, 1001}, Case{1, 1, 1}, Case{4, 1, 9}, Case{1, 9, 1}}) {
    const std::vector<float> s = awkward_values(c.rows * c.n, 11);
    const std::vector<float> r = awkward_values(c.rows * c.m, 12);
    Tensor out = Tensor::empty({c.rows, c.n}, ctx());
    backend().match_histograms(ctx(), make(s, {c.rows, c.n}), make(r, {c.rows, c.m}), out);
    EXPECT_EQ(bits_of(host(out)), bits_of(reference_match(s, r, static_cast<std::size_t>(c.rows))))
        << c.rows << "x" << c.n << " to " << c.rows << "x" << c.m;
  }
}

TEST_P(HistogramOps, DistinctValuesGetExactlyTheReferenceDistributionInPlace) {
  // Distinct values, equal lengths: out is a permutation of the reference row, ordered as source.
  const std::size_t n = 5000;
  std::vector<float> s(n), r(n);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (std::size_t i = 0; i < n; ++i) {
    s[i] = normal(rng);
    r[i] = uniform(rng);
  }
  Tensor x = make(s, {1, static_cast<std::int64_t>(n)});
  backend().match_histograms(ctx(), x, make(r, {1, static_cast<std::int64_t>(n)}), x);  // in place
  std::vector<float> got = host(x), sorted_got = got, sorted_r = r;
  std::sort(sorted_got.begin(), sorted_got.end());
  std::sort(sorted_r.begin(), sorted_r.end());
  EXPECT_EQ(sorted_got, sorted_r);
  for (std::size_t i = 1; i < n; ++i)
    ASSERT_EQ(s[i - 1] < s[i], got[i - 1] < got[i]) << "order of source kept at " << i;
}

TEST_P(HistogramOps, EmptySourceAndRefusals) {
  Tensor empty = Tensor::empty({3, 0}, ctx());
  EXPECT_NO_THROW(backend().match_histograms(ctx(), empty, Tensor::empty({3, 0}, ctx()), empty));
  Tensor s = make({1, 2, 3, 4, 5, 6}, {2, 3}), out = Tensor::empty({2, 3}, ctx());
  expect_error(
      [&] {
        backend().match_histograms(ctx(), s, Tensor::empty({2, 0}, ctx()), out);
      },
      {"match_histograms", "no values"});
  expect_error(
      [&] {
        backend().match_histograms(ctx(), s, make({1, 2, 3}, {3, 1}), out);
      },
      {"match_histograms", "2 rows"});
  Tensor wrong_out = Tensor::empty({2, 4}, ctx());
  expect_error([&] { backend().match_histograms(ctx(), s, s, wrong_out); }, {"match_histograms", "out"});
  expect_error(
      [&] {
        backend().match_histograms(ctx(), make({1, 2, 3}, {3}), make({1, 2}, {2}), out);
      },
      {"match_histograms", "source"});
  Tensor half = Tensor::from_host(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3}, ctx(), DType::bf16);
  expect_error([&] { backend().match_histograms(ctx(), half, s, out); }, {"match_histograms", "source"});
  Tensor r = make({1, 2, 3, 4, 5, 6}, {2, 3});
  expect_error([&] { backend().match_histograms(ctx(), s, r, r); }, {"match_histograms", "alias"});
}

CUDL_INSTANTIATE_BACKENDS(HistogramOps);

// CUDA against the CPU: identical bits, on the op table's shapes and on an image-sized case
// (three channels of 512 x 341 pixels matched to 384 x 256).
TEST(HistogramCudaVsCpu, SameBits) {
  CUDL_REQUIRE_CUDA();
  Context cpu(Device::cpu()), gpu(Device::cuda(0));
  std::vector<std::pair<Shape, Shape>> cases;
  for (const Shape& s : op_spec("match_histograms").shapes) cases.emplace_back(s, Shape{s[0], s[1] / 2 + 1});
  cases.emplace_back(Shape{3, 512 * 341}, Shape{3, 384 * 256});
  for (const auto& [ss, rs] : cases) {
    const std::vector<float> s = awkward_values(ss.numel(), 21);
    const std::vector<float> r = awkward_values(rs.numel(), 22);
    std::vector<float> got[2];
    Context* sides[2] = {&cpu, &gpu};
    for (int side = 0; side < 2; ++side) {
      Context& c = *sides[side];
      Tensor out = Tensor::empty(ss, c);
      c.backend().match_histograms(c, Tensor::from_host(s, ss, c), Tensor::from_host(r, rs, c), out);
      got[side] = out.to_vector(c);
    }
    EXPECT_EQ(bits_of(got[0]), bits_of(got[1])) << fmt::format("{} to {}", ss, rs);
  }
}

}  // namespace
