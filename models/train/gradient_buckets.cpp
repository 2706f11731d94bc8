#include "cudl/models/train/gradient_buckets.hpp"

#include <algorithm>

#include "cudl/engine/error.hpp"

namespace cudl {

std::int64_t bucket_elements_for_mb(double mb) { return static_cast<std::int64_t>(mb * 1e6 / 4); }

std::int64_t bucket_count(std::int64_t elements, std::int64_t bucket_elements) {
  if (bucket_elements <= 0 || elements <= bucket_elements) return 1;
  return (elements + bucket_elements - 1) / bucket_elements;
}

GradientBuckets::GradientBuckets(Communicator& comm, std::int64_t elements, std::int64_t bucket_elements, bool sharded)
    : comm_(comm), sharded_(sharded) {
  CUDL_CHECK(elements >= 0, "GradientBuckets: {} elements", elements);
  CUDL_CHECK(!sharded || comm.can_shard_update(), "GradientBuckets: the {} communicator cannot shard the update",
             comm.name());
  const std::int64_t size = bucket_elements > 0 ? bucket_elements : std::max<std::int64_t>(elements, 1);
  for (std::int64_t end = elements; end > 0; end -= size)
    buckets_.emplace_back(std::max<std::int64_t>(0, end - size), end);
  if (!sharded_) return;
  for (const auto& [begin, end] : buckets_) {
    const Shard s = shard_of(end - begin, comm.rank(), comm.size());
    pieces_.emplace_back(begin + s.begin, begin + s.end);
  }
}

void GradientBuckets::begin_step() {
  next_ = 0;
  started_early_ = 0;
}

void GradientBuckets::start(Context& ctx, Tensor& block, std::size_t index) {
  const auto [begin, end] = buckets_[index];
  Tensor part = block.view(begin, Shape{end - begin});
  if (sharded_)
    comm_.start_reduce_scatter_mean(ctx, std::move(part));
  else
    comm_.start_allreduce_mean(ctx, std::move(part));
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
  comm_.finish_collectives(ctx);
}

void GradientBuckets::gather(Context& ctx, Tensor& block,
                             const std::function<void(std::int64_t begin, std::int64_t end)>& update) {
  CUDL_CHECK(sharded_, "GradientBuckets::gather: the buckets are not sharded");
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    const auto [begin, end] = buckets_[i];
    const auto [piece_begin, piece_end] = pieces_[i];
    if (update && piece_begin < piece_end) update(piece_begin, piece_end);
    comm_.start_allgather(ctx, block.view(begin, Shape{end - begin}));
    comm_.progress();
  }
  comm_.finish_collectives(ctx);
}

}  // namespace cudl
