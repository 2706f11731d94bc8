// Reductions and elementwise basics against naive loops.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::BackendTest;
using cudl::testing::expect_error_by_next_read;
using cudl::testing::label_error_fragments;

class ReduceOps : public BackendTest {};

TEST_P(ReduceOps, SumMeanMax) {
  std::vector<float> xs;
  double total = 0;
  for (int i = 0; i < 1000; ++i) {
    xs.push_back(std::sin(static_cast<float>(i)) * 10.0f);
    total += xs.back();
  }
  Tensor x = make(xs, {10, 100}), out = Tensor::empty({1}, ctx());
  backend().sum(ctx(), x, out);
  EXPECT_NEAR(out.item(ctx()), total, 1e-3);
  backend().mean(ctx(), x, out);
  EXPECT_NEAR(out.item(ctx()), total / 1000, 1e-6);
  backend().max(ctx(), x, out);
  EXPECT_EQ(out.item(ctx()), *std::max_element(xs.begin(), xs.end()));
  Tensor negative = make({-3.0f, -1.5f, -2.0f}, {3});
  backend().max(ctx(), negative, out);
  EXPECT_EQ(out.item(ctx()), -1.5f);
}

TEST_P(ReduceOps, SumAccumulatesWithoutFloatDrift) {
  // 2^24 + 1 is not a float, so a float accumulator would lose every one of the small terms.
  std::vector<float> xs(4097, 1.0f);
  xs[0] = 16777216.0f;
  Tensor x = make(xs, {4097}), out = Tensor::empty({1}, ctx());
  backend().sum(ctx(), x, out);
  EXPECT_EQ(out.item(ctx()), 16777216.0f + 4096.0f);
}

TEST_P(ReduceOps, ArgmaxRowsTakesTheFirstOfTiesAndAccuracyCounts) {
  Tensor x = make({1, 3, 3, 0,  //
                   5, 1, 2, 5,  //
                   -1, -2, -0.5f, -3},
                  {3, 4});
  Tensor idx = Tensor::empty({3}, ctx(), DType::i32);
  backend().argmax_rows(ctx(), x, idx);
  EXPECT_EQ(idx.to_int_vector(ctx()), (std::vector<std::int32_t>{1, 0, 2}));
  Tensor labels = make_int({1, 3, 2}, {3}), acc = Tensor::empty({1}, ctx());
  backend().accuracy(ctx(), x, labels, acc);
  EXPECT_FLOAT_EQ(acc.item(ctx()), 2.0f / 3.0f);
}

// A label outside [0, K) is an error, not a miss. On CUDA the error may surface at the next read
// (`acc.item`), as for softmax cross-entropy.
TEST_P(ReduceOps, AccuracyLabelOutOfRangeThrowsNamingRowLabelAndK) {
  const bool on_cpu = GetParam() == DeviceType::cpu;
  Tensor logits = make({1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 3}), acc = Tensor::empty({1}, ctx());
  for (std::int32_t bad : {3, -1}) {
    SCOPED_TRACE("label " + std::to_string(bad));
    Tensor labels = make_int({0, bad, 2}, {3});
    expect_error_by_next_read([&] { backend().accuracy(ctx(), logits, labels, acc); }, [&] { (void)acc.item(ctx()); },
                              label_error_fragments(on_cpu, "accuracy", "accuracy", 1, bad, 3));
  }
}

TEST_P(ReduceOps, BadShapesThrowNamingTheOp) {
  Tensor x = Tensor::zeros({2, 3}, ctx()), two = Tensor::zeros({2}, ctx());
  try {
    backend().sum(ctx(), x, two);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sum"), std::string::npos) << e.what();
  }
  Tensor idx_f32 = Tensor::zeros({2}, ctx());
  EXPECT_THROW(backend().argmax_rows(ctx(), x, idx_f32), Error);
  Tensor labels = make_int({0, 1, 2}, {3}), out = Tensor::empty({1}, ctx());
  EXPECT_THROW(backend().accuracy(ctx(), x, labels, out), Error);
}

TEST_P(ReduceOps, FillCopyAxpyScale) {
  Tensor x = Tensor::empty({2, 3}, ctx());
  backend().fill(ctx(), x, 1.5f);
  EXPECT_EQ(host(x), std::vector<float>(6, 1.5f));
  Tensor y = make({1, 2, 3, 4, 5, 6}, {2, 3});
  backend().axpy(ctx(), 2.0f, x, y);
  EXPECT_EQ(host(y), (std::vector<float>{4, 5, 6, 7, 8, 9}));
  backend().scale(ctx(), y, 0.5f);
  EXPECT_EQ(host(y), (std::vector<float>{2, 2.5f, 3, 3.5f, 4, 4.5f}));
  Tensor z = Tensor::empty({6}, ctx());
  backend().copy(ctx(), y, z);
  EXPECT_EQ(host(z), host(y));
  Tensor zi = Tensor::zeros({4}, ctx(), DType::i32);
  EXPECT_EQ(zi.to_int_vector(ctx()), (std::vector<std::int32_t>{0, 0, 0, 0}));
  Tensor wrong = Tensor::empty({5}, ctx());
  EXPECT_THROW(backend().copy(ctx(), y, wrong), Error);
  EXPECT_THROW(backend().axpy(ctx(), 1.0f, wrong, y), Error);
}

CUDL_INSTANTIATE_BACKENDS(ReduceOps);
