#pragma once
// Data parallel's all-reduce, overlapped with the backward pass (as PyTorch DDP's buckets): the
// gradient block is cut, from its end, into buckets of about `bucket_elements`; backward produces
// gradients from the last layer's to the first's, which are the block's end to its start
// (models/network/sequential.hpp lays parameters out in layer order), so a bucket is final as soon as
// backward has passed its start, and its all-reduce starts then, while backward goes on below.
// finish() starts what is left and waits for all of them. The sums are the same as one all-reduce
// of the whole block (element by element over the same ranks), only issued earlier.
//
// Sharded (the sharded update, ZeRO stage 1): each bucket is reduce-scattered instead, so this
// rank ends with the mean of its piece of every bucket (pieces()), where it alone runs the
// optimizer; gather() then all-gathers the updated pieces of the parameters (or of any block laid
// out like the gradients: the optimizer's state, for a checkpoint). Each rank updates 1/N of the
// parameters, and moves the same bytes as the all-reduce (which is a reduce-scatter and an
// all-gather).
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "cudl/engine/distributed.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

// ~25 MB of f32 gradients, PyTorch DDP's default bucket.
inline constexpr std::int64_t kDefaultBucketElements = 25'000'000 / 4;

// TrainConfig::bucket_mb in f32 gradients (0: none, one bucket); how many buckets a block of
// `elements` gives. The loop's buckets and the CLI's description both follow these.
std::int64_t bucket_elements_for_mb(double mb);
std::int64_t bucket_count(std::int64_t elements, std::int64_t bucket_elements);

class GradientBuckets {
 public:
  // `elements`: the gradient block's size; bucket_elements <= 0: one bucket, the whole block.
  // sharded: reduce-scatter (comm.can_shard_update() must be true).
  GradientBuckets(Communicator& comm, std::int64_t elements, std::int64_t bucket_elements = kDefaultBucketElements,
                  bool sharded = false);

  // Before each step's backward.
  void begin_step();
  // Every gradient from `offset` to the block's end is final: starts the buckets lying there.
  void ready_from(Context& ctx, Tensor& block, std::int64_t offset);
  // After backward: starts the remaining buckets and waits for every one (averaged over ranks:
  // sharded, this rank's pieces only).
  void finish(Context& ctx, Tensor& block);

  bool sharded() const { return sharded_; }
  // Sharded: [begin, end) in the block of this rank's piece of each bucket, in buckets()' order
  // (empty where a bucket has fewer elements than there are ranks).
  const std::vector<std::pair<std::int64_t, std::int64_t>>& pieces() const { return pieces_; }
  // Sharded: copies every rank's pieces of `block` (laid out like the gradient block) to every
  // rank, and waits. With `update`, calls it on each of this rank's pieces first ([begin, end) in
  // the block), starting each bucket's all-gather as soon as its piece is updated, so the
  // transfers run while the next pieces are updated.
  void gather(Context& ctx, Tensor& block,
              const std::function<void(std::int64_t begin, std::int64_t end)>& update = nullptr);

  // [begin, end) of each bucket, in the order they start (from the block's end).
  const std::vector<std::pair<std::int64_t, std::int64_t>>& buckets() const { return buckets_; }
  // Buckets started during the last step before finish() (the overlapped ones).
  std::int64_t started_early() const { return started_early_; }

 private:
  void start(Context& ctx, Tensor& block, std::size_t index);

  Communicator& comm_;
  std::vector<std::pair<std::int64_t, std::int64_t>> buckets_;
  std::vector<std::pair<std::int64_t, std::int64_t>> pieces_;
  bool sharded_ = false;
  std::size_t next_ = 0;
  std::int64_t started_early_ = 0;
};

}  // namespace cudl
