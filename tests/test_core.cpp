#include <gtest/gtest.h>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/tensor.hpp"

using namespace cudl;

TEST(Shape, NumelAndFormatting) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(fmt::format("{}", s), "[2,3,4]");
  EXPECT_NE(s, (Shape{2, 3}));
}

TEST(Shape, NumelRefusesAnOverflowingProduct) {
  // 2^64 would wrap to 0: a buffer of no elements for a shape that claims many.
  std::string message;
  try {
    (void)Shape({std::int64_t{1} << 22, std::int64_t{1} << 21, std::int64_t{1} << 21}).numel();
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("[4194304,2097152,2097152]"), std::string::npos) << message;
  EXPECT_NE(message.find("overflows"), std::string::npos) << message;
  // A zero dim makes any shape empty.
  EXPECT_EQ((Shape{INT64_MAX, INT64_MAX, 0}).numel(), 0);
  EXPECT_EQ((Shape{INT64_MAX}).numel(), INT64_MAX);
}

TEST(Device, ParsesNames) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}
