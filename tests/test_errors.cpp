// Error messages are the user's only clue: each names the op, the shapes or text at fault, and the
// file:line it was raised from.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::error_message;

namespace {

TEST(ErrorLocation, ThrowAppendsThisFileAndLine) {
  int line = 0;
  std::string message = error_message([&] {
    line = __LINE__ + 1;
    CUDL_THROW("widget {} failed", 7);
  });
  EXPECT_EQ(message, "widget 7 failed [tests/test_errors.cpp:" + std::to_string(line) + "]");
}

TEST(ErrorLocation, CheckThrowsOnlyWhenConditionFails) {
  EXPECT_NO_THROW(CUDL_CHECK(1 + 1 == 2, "arithmetic is broken"));
  std::string message = error_message([] { CUDL_CHECK(1 + 1 == 3, "expected {}, got {}", 3, 2); });
  EXPECT_TRUE(contains(message, "expected 3, got 2 [tests/test_errors.cpp:")) << message;
}

TEST(ErrorLocation, EngineErrorsNameTheirSourceFile) {
  std::string message = error_message([] { Device::parse("gpu"); });
  EXPECT_TRUE(contains(message, "[engine/device.cpp:")) << message;
}

TEST(ErrorLocation, ShortFileKeepsThePathFromTheTopFolder) {
  EXPECT_EQ(detail::short_file("/home/me/src/cudl/engine/tensor.cpp"), "engine/tensor.cpp");
  EXPECT_EQ(detail::short_file("/build/cudl/kernels/cuda/relu.cu"), "kernels/cuda/relu.cu");
  EXPECT_EQ(detail::short_file("/somewhere/else/main.cpp"), "main.cpp");
  EXPECT_EQ(detail::short_file("main.cpp"), "main.cpp");
}

TEST(ErrorTypes, OutOfMemoryIsAnError) {
  EXPECT_THROW(throw OutOfMemoryError("out of memory"), Error);
  EXPECT_THROW(throw Error("plain"), std::runtime_error);
}

TEST(ErrorMessages, DeviceParseNamesTheBadText) {
  for (const char* bad : {"gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:1x", "CPU"}) {
    std::string message = error_message([&] { Device::parse(bad); });
    EXPECT_TRUE(contains(message, std::string("'") + bad + "'")) << message;
    EXPECT_TRUE(contains(message, "device")) << message;
  }
}

TEST(ErrorMessages, ShapeConstructorNamesTheBadDimension) {
  std::string message = error_message([] { (void)Shape{2, -3}; });
  EXPECT_TRUE(contains(message, "-3")) << message;
  message = error_message([] { (void)Shape{1, 2, 3, 4, 5, 6, 7}; });
  EXPECT_TRUE(contains(message, "rank 7")) << message;
}

class ErrorChecks : public ::testing::Test {
 protected:
  Context ctx_{Device::cpu()};
  Tensor a_ = Tensor::empty({2, 3}, ctx_);
  Tensor b_ = Tensor::empty({3, 2}, ctx_);
  Tensor labels_ = Tensor::empty({4}, ctx_, DType::i32);
};

TEST_F(ErrorChecks, SameShapeNamesOpAndBothShapes) {
  EXPECT_NO_THROW(check::same_shape("add", "x", a_, "y", a_));
  std::string message = error_message([&] { check::same_shape("add", "x", a_, "y", b_); });
  EXPECT_TRUE(contains(message, "add:")) << message;
  EXPECT_TRUE(contains(message, "x=[2,3]")) << message;
  EXPECT_TRUE(contains(message, "y=[3,2]")) << message;
  EXPECT_TRUE(contains(message, "[engine/check.hpp:")) << message;
}

TEST_F(ErrorChecks, ShapeIsNamesOpActualAndExpected) {
  EXPECT_NO_THROW(check::shape_is("linear", "weight", a_, Shape{2, 3}));
  std::string message = error_message([&] { check::shape_is("linear", "weight", a_, Shape{3, 2}); });
  EXPECT_TRUE(contains(message, "linear")) << message;
  EXPECT_TRUE(contains(message, "weight has shape [2,3], expected [3,2]")) << message;
}

TEST_F(ErrorChecks, RankIsNamesOpRankAndShape) {
  EXPECT_NO_THROW(check::rank_is("conv2d", "x", a_, 2));
  std::string message = error_message([&] { check::rank_is("conv2d", "x", a_, 4); });
  EXPECT_TRUE(contains(message, "conv2d")) << message;
  EXPECT_TRUE(contains(message, "rank 4")) << message;
  EXPECT_TRUE(contains(message, "[2,3]")) << message;
}

TEST_F(ErrorChecks, DtypeIsNamesBothDtypes) {
  EXPECT_NO_THROW(check::dtype_is("cross_entropy", "labels", labels_, DType::i32));
  std::string message = error_message([&] { check::dtype_is("cross_entropy", "labels", a_, DType::i32); });
  EXPECT_TRUE(contains(message, "cross_entropy")) << message;
  EXPECT_TRUE(contains(message, "must be i32, got f32")) << message;
  EXPECT_TRUE(contains(message, "[2,3]")) << message;
}

TEST_F(ErrorChecks, NumelIsAndDefinedNameTheOp) {
  EXPECT_NO_THROW(check::numel_is("item", "loss", labels_, 4));
  std::string message = error_message([&] { check::numel_is("item", "loss", a_, 1); });
  EXPECT_TRUE(contains(message, "item")) << message;
  EXPECT_TRUE(contains(message, "1 element")) << message;
  EXPECT_TRUE(contains(message, "[2,3]")) << message;
  message = error_message([&] { check::defined("relu", "x", Tensor{}); });
  EXPECT_TRUE(contains(message, "relu: tensor 'x' is undefined")) << message;
}

TEST_F(ErrorChecks, OnDeviceNamesBothDevices) {
  EXPECT_NO_THROW(check::on_device("gemm", "a", a_, Device::cpu()));
  std::string message = error_message([&] { check::on_device("gemm", "a", a_, Device::cuda(1)); });
  EXPECT_TRUE(contains(message, "gemm")) << message;
  EXPECT_TRUE(contains(message, "on cpu but the op runs on cuda:1")) << message;
}

}  // namespace

#if defined(CUDL_HAVE_CUDA)
// The checked front refuses a context of another backend before any pointer is touched: the CUDA
// backend handed CPU tensors would launch kernels on host memory. Needs no GPU.
TEST(ErrorMessages, ABackendRefusesAContextOfAnotherDevice) {
  Context cpu_ctx;
  Tensor x = Tensor::zeros({3}, cpu_ctx);
  const std::string message = error_message([&] { cuda_backend().fill(cpu_ctx, x, 1.0f); });
  EXPECT_TRUE(contains(message, "fill: called on the cuda backend with a context for cpu")) << message;
  EXPECT_EQ(x.to_vector(cpu_ctx), std::vector<float>(3, 0.0f));
}
#endif
