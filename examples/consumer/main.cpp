// Builds the MLP from cudl's model zoo, trains it for two epochs on a small synthetic task (each
// class is an image lit in its own band of rows) and prints the loss, which must fall.
#include <cstdio>
#include <cudl/config.hpp>
#include <cudl/models/train/trainer.hpp>
#include <cudl/models/zoo/zoo.hpp>
#include <span>
#include <vector>

int main() {
  cudl::Context ctx(cudl::Device::cpu());
  cudl::Sequential model = cudl::make_model("mlp");
  model.build(ctx, /*seed=*/1);

  constexpr int kImages = 256, kClasses = 10, kSide = 28;
  std::vector<float> pixels(static_cast<std::size_t>(kImages) * kSide * kSide, 0.0f);
  std::vector<std::int32_t> labels(kImages);
  for (int i = 0; i < kImages; ++i) {
    labels[i] = i % kClasses;
    const int first_row = labels[i] * 2;  // rows 2c and 2c+1 are lit for class c
    for (int row = first_row; row < first_row + 2; ++row)
      for (int col = 0; col < kSide; ++col) pixels[(static_cast<std::size_t>(i) * kSide + row) * kSide + col] = 1.0f;
  }
  cudl::Dataset data;
  data.images = cudl::Tensor::from_host(std::span<const float>(pixels), {kImages, 1, kSide, kSide}, ctx);
  data.labels = cudl::Tensor::from_host(std::span<const std::int32_t>(labels), {kImages}, ctx);
  data.num_classes = kClasses;

  cudl::FitOptions options;
  options.model_name = "mlp";
  options.epochs = 2;
  options.batch_size = 32;
  const cudl::TrainResult result = cudl::fit(ctx, model, data, data, options);
  for (const cudl::EpochMetrics& e : result.epochs)
    std::printf("epoch %lld: train loss %.4f, accuracy %.1f%%\n", static_cast<long long>(e.epoch), e.train_loss,
                100.0 * e.train_accuracy);
  std::printf("cudl %s (%s backend compiled in)\n", CUDL_VERSION,
#if defined(CUDL_HAVE_CUDA)
              "CUDA"
#else
              "no CUDA"
#endif
  );
  const bool learned = result.epochs.back().train_loss < result.epochs.front().train_loss;
  return learned ? 0 : 1;
}
