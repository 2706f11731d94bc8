#include "cudl/models/train/gradient_buckets.hpp"

#include <algorithm>

#include "cudl/engine/error.hpp"

namespace cudl {

std::int64_t bucket_elements_for_mb(double mb) { return static_cast<std::int64_t>(mb * 1e6 / 4); }

std::int64_t bucket_count(std::int64_t elements, std::int64_t bucket_elements) {
  if (bucket_elements <= 0 || elements <= bucket_elements) return 1;
  return (elements + bucket_elements - 1) / bucket_elements;
}

GradientBuckets::GradientBuckets(Communicator& comm, std::int64_t elements, std::int64_t bucket_elements)
    : comm_(comm) {
  CUDL_CHECK(elements >= 0, "GradientBuckets: {} elements", elements);
  const std::int64_t size = bucket_elements > 0 ? bucket_elements : std::max<std::int64_t>(elements, 1);
  for (std::int64_t end = elements; end > 0; end -= size)
    buckets_.emplace_back(std::max<std::int64_t>(0, end - size), end);
}

void GradientBuckets::begin_step() {
  next_ = 0;
  started_early_ = 0;
}

void GradientBuckets::start(Context& ctx, Tensor& block, std::size_t index) {
  const auto [begin, end] = buckets_[index];
  comm_.start_allreduce_mean(ctx, block.view(begin, Shape{end - begin}));
}

void GradientBuckets::ready_from(Context& ctx, Tensor& block, std::int64_t offset) {
  while (next_ < buckets_.size() && buckets_[next_].first >= offset) {
    start(ctx, block, next_++);
    ++started_early_;
  }
  comm_.progress();
}

void GradientBuckets::finish(Context& ctx, Tensor& block) {
  while (next_ < buckets_.size()) start(ctx, block, next_++);
  comm_.finish_allreduces(ctx);
}

}  // namespace cudl
