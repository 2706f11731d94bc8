#include <gtest/gtest.h>

#include "engine/backend.hpp"
#include "engine/context.hpp"
#include "engine/tensor.hpp"

using namespace cudl;

TEST(Shape, NumelAndFormatting) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(fmt::format("{}", s), "[2,3,4]");
  EXPECT_NE(s, (Shape{2, 3}));
}

TEST(Device, ParsesNames) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}
