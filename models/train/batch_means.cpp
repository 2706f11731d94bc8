#include "cudl/models/train/batch_means.hpp"

namespace cudl {

BatchMeans batch_means(
    Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
    const std::function<void(const Tensor& output, const Batch& batch, Tensor& first, Tensor& second)>& metric) {
  Backend& be = ctx.backend();
  const ConstantHold weights = model.hold_parameters_constant(ctx);  // nothing trains while it runs
  DataLoader loader(data, ctx, batch_size, /*shuffle=*/false, /*seed=*/0);
  loader.start_epoch(0);
  Tensor first_sum = Tensor::zeros({1}, ctx), second_sum = Tensor::zeros({1}, ctx);
  Tensor first = Tensor::empty({1}, ctx), second = Tensor::empty({1}, ctx);
  BatchMeans m;
  Batch batch;
  while (loader.next(batch)) {
    Tensor output = model.forward(ctx, batch.images, /*train=*/false);
    metric(output, batch, first, second);
    const std::int64_t n = batch.images.dim(0);
    be.axpy(ctx, static_cast<float>(n), first, first_sum);
    be.axpy(ctx, static_cast<float>(n), second, second_sum);
    m.samples += n;
  }
  if (m.samples > 0) {
    m.first = first_sum.item(ctx) / static_cast<double>(m.samples);
    m.second = second_sum.item(ctx) / static_cast<double>(m.samples);
  }
  return m;
}

}  // namespace cudl
