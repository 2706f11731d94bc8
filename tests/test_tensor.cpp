// Tensor on the CPU context: construction, host round trips, views and copies. Only zeros/full
// need a backend op (fill); everything else is the Tensor's own bookkeeping.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::error_message;

namespace {

class TensorCpu : public ::testing::Test {
 protected:
  Context ctx_{Device::cpu()};
};

TEST_F(TensorCpu, DefaultIsUndefined) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_THROW(t.raw(), Error);
  EXPECT_THROW(t.to(ctx_), Error);
}

TEST_F(TensorCpu, EmptyHasShapeDtypeAndWritableMemory) {
  Tensor t = Tensor::empty({2, 3, 4}, ctx_);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.dim(-1), 4);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.device(), Device::cpu());
  float* p = t.data<float>();
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 24; ++i) p[i] = static_cast<float>(i);
  EXPECT_EQ(t.to_vector(ctx_)[23], 23.0f);
}

TEST_F(TensorCpu, FromHostRoundTripsAndItemReadsAScalar) {
  std::vector<float> values{1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, 7.0f};
  Tensor t = Tensor::from_host(values, {2, 3}, ctx_);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.to_vector(ctx_), values);
  EXPECT_EQ(t.data<float>()[1], -2.0f);

  std::vector<float> one{42.5f};
  EXPECT_EQ(Tensor::from_host(one, {1, 1}, ctx_).item(ctx_), 42.5f);
  std::string message = error_message([&] { t.item(ctx_); });
  EXPECT_TRUE(contains(message, "item")) << message;
  EXPECT_TRUE(contains(message, "[2,3]")) << message;
}

TEST_F(TensorCpu, FromHostRejectsAWrongValueCount) {
  std::vector<float> values(5, 1.0f);
  std::string message = error_message([&] { Tensor::from_host(values, {2, 3}, ctx_); });
  EXPECT_TRUE(contains(message, "from_host")) << message;
  EXPECT_TRUE(contains(message, "5 values")) << message;
  EXPECT_TRUE(contains(message, "[2,3]")) << message;
}

TEST_F(TensorCpu, ReshapeSharesStorage) {
  std::vector<float> values{0, 1, 2, 3, 4, 5};
  Tensor t = Tensor::from_host(values, {2, 3}, ctx_);
  Tensor r = t.reshape({3, 1, 2});
  EXPECT_EQ(r.shape(), (Shape{3, 1, 2}));
  EXPECT_EQ(r.raw(), t.raw());
  r.data<float>()[4] = 40.0f;  // a view: the write shows through the original
  EXPECT_EQ(t.to_vector(ctx_)[4], 40.0f);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
}

TEST_F(TensorCpu, BadReshapeNamesBothShapes) {
  Tensor t = Tensor::empty({2, 3}, ctx_);
  std::string message = error_message([&] { t.reshape({4, 2}); });
  EXPECT_TRUE(contains(message, "reshape")) << message;
  EXPECT_TRUE(contains(message, "[2,3]")) << message;
  EXPECT_TRUE(contains(message, "[4,2]")) << message;
  EXPECT_TRUE(contains(message, "[engine/tensor.cpp:")) << message;
}

TEST_F(TensorCpu, SliceViewsRowsOfTheFirstDimension) {
  std::vector<float> values{0, 1, 2, 3, 4, 5, 6, 7};
  Tensor t = Tensor::from_host(values, {4, 2}, ctx_);
  Tensor s = t.slice(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.to_vector(ctx_), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(s.data<float>(), t.data<float>() + 2);
  s.data<float>()[0] = -1.0f;
  EXPECT_EQ(t.to_vector(ctx_)[2], -1.0f);
  EXPECT_EQ(t.slice(4, 4).numel(), 0);
  // A slice of a slice keeps counting from where the first one began.
  EXPECT_EQ(s.slice(1, 2).to_vector(ctx_), (std::vector<float>{4, 5}));

  std::string message = error_message([&] { t.slice(2, 5); });
  EXPECT_TRUE(contains(message, "slice")) << message;
  EXPECT_TRUE(contains(message, "[4,2]")) << message;
  EXPECT_THROW(t.slice(3, 2), Error);
  EXPECT_THROW(t.slice(-1, 2), Error);
}

TEST_F(TensorCpu, ToAndCloneCopyTheData) {
  std::vector<float> values{1, 2, 3, 4};
  Tensor t = Tensor::from_host(values, {2, 2}, ctx_);
  Tensor copy = t.to(ctx_);
  Tensor cloned = t.clone(ctx_);
  EXPECT_NE(copy.raw(), t.raw());
  EXPECT_NE(cloned.raw(), t.raw());
  EXPECT_EQ(copy.shape(), t.shape());
  EXPECT_EQ(copy.to_vector(ctx_), values);
  copy.data<float>()[0] = 100.0f;
  cloned.data<float>()[3] = -100.0f;
  EXPECT_EQ(t.to_vector(ctx_), values);
  // Copying a slice copies only its rows.
  Tensor row = t.slice(1, 2).to(ctx_);
  EXPECT_EQ(row.to_vector(ctx_), (std::vector<float>{3, 4}));
}

TEST_F(TensorCpu, Int32TensorsHoldLabels) {
  std::vector<std::int32_t> labels{3, 0, 9, -1};
  Tensor t = Tensor::from_host(labels, {4}, ctx_);
  EXPECT_EQ(t.dtype(), DType::i32);
  EXPECT_EQ(t.nbytes(), 16u);
  EXPECT_EQ(t.to_int_vector(ctx_), labels);
  EXPECT_EQ(t.data<std::int32_t>()[2], 9);
  Tensor copy = t.to(ctx_);
  EXPECT_EQ(copy.dtype(), DType::i32);
  EXPECT_EQ(copy.to_int_vector(ctx_), labels);
  Tensor e = Tensor::empty({2, 5}, ctx_, DType::i32);
  EXPECT_EQ(e.dtype(), DType::i32);
  EXPECT_EQ(e.nbytes(), 40u);

  std::string message = error_message([&] { t.to_vector(ctx_); });
  EXPECT_TRUE(contains(message, "i32")) << message;
  EXPECT_TRUE(contains(message, "f32")) << message;
}

TEST_F(TensorCpu, DataWithTheWrongTypeNamesBothDtypes) {
  Tensor f = Tensor::empty({2, 2}, ctx_);
  std::string message = error_message([&] { f.data<std::int32_t>(); });
  EXPECT_TRUE(contains(message, "Tensor::data")) << message;
  EXPECT_TRUE(contains(message, "holds f32, asked for i32")) << message;
  EXPECT_TRUE(contains(message, "[2,2]")) << message;
  Tensor i = Tensor::empty({3}, ctx_, DType::i32);
  message = error_message([&] { i.data<float>(); });
  EXPECT_TRUE(contains(message, "holds i32, asked for f32")) << message;
}

TEST_F(TensorCpu, CopiesShareStorageUntilTheLastOneGoes) {
  Tensor a = Tensor::empty({8}, ctx_);
  void* p = a.raw();
  Tensor b = a;  // shares, like a PyTorch tensor
  EXPECT_EQ(b.raw(), p);
  a = Tensor{};
  b.data<float>()[7] = 1.0f;  // still valid memory: b keeps the storage alive
  EXPECT_EQ(b.to_vector(ctx_)[7], 1.0f);
}

// zeros and full go through the backend's fill op.
class TensorFill : public TensorCpu {};

TEST_F(TensorFill, ZerosIsAllZeroForEveryDtype) {
  Tensor z = Tensor::zeros({3, 5}, ctx_);
  EXPECT_EQ(z.to_vector(ctx_), std::vector<float>(15, 0.0f));
  Tensor zi = Tensor::zeros({7}, ctx_, DType::i32);
  EXPECT_EQ(zi.to_int_vector(ctx_), std::vector<std::int32_t>(7, 0));
}

TEST_F(TensorFill, FullHoldsTheValue) {
  Tensor t = Tensor::full({2, 3}, -1.25f, ctx_);
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.to_vector(ctx_), std::vector<float>(6, -1.25f));
}

}  // namespace
