#include "cudl/models/train/classification.hpp"

#include "cudl/models/train/batch_means.hpp"
#include "cudl/models/train/data_parallel.hpp"

namespace cudl {

std::int64_t output_classes(const Sequential& model, const Dataset& data) {
  const Shape s = data.image_shape();
  if (s.rank() != 4) return 0;
  const Shape out = model.output_shape(Shape{1, s[1], s[2], s[3]});
  return out.rank() == 2 ? out[1] : 0;
}

void check_labels(const Sequential& model, const Dataset& data, std::string_view split) {
  if (!data.labels.defined() || data.labels.dtype() != DType::i32 || !data.labels.device().is_cpu() ||
      data.labels.rank() != 1)
    return;  // not a dataset the DataLoader takes; it says why
  const std::int64_t classes = output_classes(model, data);
  if (classes <= 0) return;
  const std::int32_t* labels = data.labels.data<std::int32_t>();
  const std::int64_t n = data.labels.dim(0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t label = labels[i];
    CUDL_CHECK(label >= 0 && label < classes,
               "{}: label {} at index {} is outside [0, {}) (the model has {} outputs{})", split, label, i, classes,
               classes, data.name.empty() ? std::string() : fmt::format("; dataset '{}'", data.name));
  }
}

void ClassificationTask::check(const Sequential& model, const Dataset& data, std::string_view split,
                               const std::string&) const {
  check_labels(model, data, split);
}

Tensor ClassificationTask::loss_and_gradient(Context& ctx, const Tensor& logits, const Batch& batch, float dloss,
                                             Tensor& loss, Tensor& accuracy) {
  Backend& be = ctx.backend();
  Tensor probs = Tensor::empty(logits.shape(), ctx);
  be.softmax_cross_entropy_forward(ctx, logits, batch.labels, probs, loss);
  be.accuracy(ctx, logits, batch.labels, accuracy);
  Tensor dlogits = Tensor::empty(logits.shape(), ctx);
  be.softmax_cross_entropy_backward(ctx, probs, batch.labels, dloss, dlogits);
  return dlogits;
}

namespace {

// The mean loss and accuracy of the model on `data` (its labels checked before training).
BatchMeans loss_and_accuracy(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size) {
  return batch_means(ctx, model, data, batch_size,
                     [&](const Tensor& logits, const Batch& batch, Tensor& loss, Tensor& acc) {
                       Tensor probs = Tensor::empty(logits.shape(), ctx);
                       ctx.backend().softmax_cross_entropy_forward(ctx, logits, batch.labels, probs, loss);
                       ctx.backend().accuracy(ctx, logits, batch.labels, acc);
                     });
}

}  // namespace

// Data-parallel runs evaluate each split once in all, not once per rank: each rank its part.
SplitScores ClassificationTask::evaluate(Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
                                         Communicator* comm) {
  SplitScores out;
  if (!comm) {
    const BatchMeans r = loss_and_accuracy(ctx, model, data, batch_size);
    out.samples = r.samples;
    out.loss = r.first;
    out.accuracy = r.second;
    return out;
  }
  const Dataset part = local_part(data, comm);
  const BatchMeans r = part.size() > 0 ? loss_and_accuracy(ctx, model, part, batch_size) : BatchMeans{};
  const auto n = static_cast<double>(r.samples);
  const Sums all = combine_sums(comm, {r.first * n, r.second * n, n});
  out.samples = static_cast<std::int64_t>(all.samples);
  out.loss = all.samples > 0 ? all.loss / all.samples : 0;
  out.accuracy = all.samples > 0 ? all.correct / all.samples : 0;
  return out;
}

}  // namespace cudl
