// The README's "define your own net" example, compiled and run on a few synthetic images so the
// README cannot drift from the API.
#include <gtest/gtest.h>

#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/train/trainer.hpp"

TEST(Readme, DefineYourOwnNet) {
  cudl::Context ctx(cudl::Device::parse("cpu"));
  // --- as in the README ---
  cudl::Sequential net;
  net.add("conv1", std::make_unique<cudl::Conv2d>(1, 16, 3))
      .add("relu1", cudl::relu())
      .add("pool1", std::make_unique<cudl::MaxPool2d>(2))
      .add("flatten", std::make_unique<cudl::Flatten>())
      .add("fc", std::make_unique<cudl::Linear>(16 * 13 * 13, 10));
  net.build(ctx, /*seed=*/42);
  // --- end ---
  cudl::Dataset data;
  data.images = cudl::Tensor::full({8, 1, 28, 28}, 0.5f, ctx);
  std::vector<std::int32_t> labels{0, 1, 2, 3, 4, 5, 6, 7};
  data.labels = cudl::Tensor::from_host(std::span<const std::int32_t>(labels), {8}, ctx);
  data.num_classes = 10;
  cudl::FitOptions options;
  options.model_name = "my_net";
  options.epochs = 1;
  options.batch_size = 4;
  cudl::TrainResult result = cudl::fit(ctx, net, data, data, options);
  ASSERT_EQ(result.epochs.size(), 1u);
  EXPECT_EQ(result.params, 16 * 9 + 16 + 16 * 13 * 13 * 10 + 10);
}
