// Data parallel's bucketed all-reduce (models/train/gradient_buckets.hpp): every bucket starts only once
// backward has written all of its gradients, the buckets cover the block once, and the hook
// Sequential calls during backward says where the final gradients begin.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/train/gradient_buckets.hpp"
#include "tests/test_util.hpp"

using namespace cudl;

namespace {

// One rank that records what it is asked to reduce: each part's range and its values then.
class RecordingCommunicator final : public Communicator {
 public:
  struct Started {
    std::int64_t begin, end;
    std::vector<float> values;
  };
  explicit RecordingCommunicator(const Tensor& block) : base_(static_cast<const float*>(block.raw())) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string name() const override { return "recording"; }
  void allreduce_mean(Context&, Tensor&) override { ADD_FAILURE() << "the buckets go through start_allreduce_mean"; }
  void start_allreduce_mean(Context& ctx, Tensor part) override {
    const auto begin = static_cast<std::int64_t>(static_cast<const float*>(part.raw()) - base_);
    started.push_back({begin, begin + part.numel(), part.to_vector(ctx)});
  }
  void progress() override { ++progress_calls; }
  void finish_collectives(Context&) override { ++finishes; }
  void allreduce_sum(std::vector<double>&) override {}
  void broadcast(Context&, Tensor&, int) override {}
  [[noreturn]] void abort(int) override { std::abort(); }

  std::vector<Started> started;
  int progress_calls = 0, finishes = 0;

 private:
  const float* base_;
};

}  // namespace

TEST(GradientBuckets, EachBucketStartsWhenBackwardHasWrittenItAndTheyCoverTheBlockOnce) {
  Context ctx(Device::cpu());
  Sequential m;
  m.add("fc1", std::make_unique<Linear>(8, 16));
  m.add("act", relu());
  m.add("fc2", std::make_unique<Linear>(16, 16));
  m.add("fc3", std::make_unique<Linear>(16, 4));
  m.build(ctx, 3);
  const std::int64_t n = m.gradient_block().numel();  // 144 + 272 + 68 = 484
  ASSERT_EQ(n, 484);
  RecordingCommunicator comm(m.gradient_block());
  GradientBuckets buckets(comm, n, 100);
  ASSERT_EQ(buckets.buckets().size(), 5u);
  std::vector<std::int64_t> ready;
  m.set_gradients_ready_hook([&](std::int64_t from) {
    ready.push_back(from);
    buckets.ready_from(ctx, m.gradient_block(), from);
  });

  const Tensor x = Tensor::from_host(std::vector<float>(3 * 8, 0.5f), {3, 8}, ctx);
  (void)m.forward(ctx, x, true);
  m.zero_grad(ctx);
  buckets.begin_step();
  (void)m.backward(ctx, Tensor::full({3, 4}, 1.0f, ctx));
  EXPECT_EQ(ready, (std::vector<std::int64_t>{416, 144, 0})) << "fc3, fc2, fc1: where each one's parameters start";
  const std::size_t early = comm.started.size();
  buckets.finish(ctx, m.gradient_block());
  EXPECT_EQ(comm.finishes, 1);
  EXPECT_EQ(comm.progress_calls, 3);
  // fc3's gradients complete [416, 484) only: no bucket lies wholly there; fc2's reach 144, so
  // [384, 484), [284, 384) and [184, 284) start before fc1's backward; fc1's the rest.
  EXPECT_EQ(buckets.started_early(), 5);
  EXPECT_EQ(early, 5u);

  const std::vector<float> final_grads = m.gradient_block().to_vector(ctx);
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  for (const auto& s : comm.started) {
    ranges.emplace_back(s.begin, s.end);
    const std::vector<float> now(final_grads.begin() + s.begin, final_grads.begin() + s.end);
    EXPECT_EQ(s.values, now) << "bucket [" << s.begin << ", " << s.end << ") started before its gradients were final";
  }
  EXPECT_EQ(ranges, (std::vector<std::pair<std::int64_t, std::int64_t>>{
                        {384, 484}, {284, 384}, {184, 284}, {84, 184}, {0, 84}}));
}

TEST(GradientBuckets, NoBucketSizeIsOneBucketStartedAtTheEnd) {
  Context ctx(Device::cpu());
  Tensor block = Tensor::zeros({50}, ctx);
  RecordingCommunicator comm(block);
  GradientBuckets one(comm, 50, 0);
  ASSERT_EQ(one.buckets().size(), 1u);
  one.begin_step();
  one.ready_from(ctx, block, 10);
  EXPECT_TRUE(comm.started.empty()) << "the whole block is not final yet";
  one.ready_from(ctx, block, 0);
  one.finish(ctx, block);
  ASSERT_EQ(comm.started.size(), 1u);
  EXPECT_EQ(comm.started[0].begin, 0);
  EXPECT_EQ(comm.started[0].end, 50);
}

namespace {

// Rank `rank` of `size` that records the sharded update's calls: the parts reduce-scattered and
// all-gathered, as ranges of the block.
class ShardingCommunicator final : public Communicator {
 public:
  ShardingCommunicator(const Tensor& block, int rank, int size)
      : base_(static_cast<const float*>(block.raw())), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return rank_; }
  std::string name() const override { return "sharding"; }
  bool can_shard_update() const override { return true; }
  void allreduce_mean(Context&, Tensor&) override { ADD_FAILURE() << "a sharded step all-reduces nothing"; }
  void start_allreduce_mean(Context&, Tensor) override { ADD_FAILURE() << "a sharded step all-reduces nothing"; }
  void start_reduce_scatter_mean(Context&, Tensor part) override { scattered.push_back(range(part)); }
  void start_allgather(Context&, Tensor part) override { gathered.push_back(range(part)); }
  void finish_collectives(Context&) override { ++finishes; }
  void allreduce_sum(std::vector<double>&) override {}
  void broadcast(Context&, Tensor&, int) override {}
  [[noreturn]] void abort(int) override { std::abort(); }

  std::vector<std::pair<std::int64_t, std::int64_t>> scattered, gathered;
  int finishes = 0;

 private:
  std::pair<std::int64_t, std::int64_t> range(const Tensor& part) const {
    const auto begin = static_cast<std::int64_t>(static_cast<const float*>(part.raw()) - base_);
    return {begin, begin + part.numel()};
  }
  const float* base_;
  int rank_, size_;
};

}  // namespace

// Sharded, every bucket is reduce-scattered (not all-reduced) and this rank's piece of each is
// shard_of's share of it (rank 1 of 3: the middle third), where the optimizer will run; gather()
// all-gathers every bucket of the block it is given.
TEST(GradientBuckets, ShardedBucketsAreReduceScatteredAndEachRankUpdatesItsPieceOfEach) {
  Context ctx(Device::cpu());
  Tensor block = Tensor::zeros({484}, ctx);
  ShardingCommunicator comm(block, 1, 3);
  GradientBuckets buckets(comm, 484, 100, /*sharded=*/true);
  ASSERT_TRUE(buckets.sharded());
  const std::vector<std::pair<std::int64_t, std::int64_t>> all = {
      {384, 484}, {284, 384}, {184, 284}, {84, 184}, {0, 84}};
  ASSERT_EQ(buckets.buckets(), all);
  // shard_of(100, 1, 3) = [33, 66); shard_of(84, 1, 3) = [28, 56).
  EXPECT_EQ(buckets.pieces(), (std::vector<std::pair<std::int64_t, std::int64_t>>{
                                  {417, 450}, {317, 350}, {217, 250}, {117, 150}, {28, 56}}));
  buckets.begin_step();
  buckets.ready_from(ctx, block, 250);
  EXPECT_EQ(comm.scattered, (std::vector<std::pair<std::int64_t, std::int64_t>>{{384, 484}, {284, 384}}));
  buckets.finish(ctx, block);
  EXPECT_EQ(comm.scattered, all);
  EXPECT_EQ(comm.finishes, 1);
  buckets.gather(ctx, block);
  EXPECT_EQ(comm.gathered, all);
  EXPECT_EQ(comm.finishes, 2);

  // Every rank's pieces together cover the block once.
  std::vector<int> covered(484, 0);
  for (int r = 0; r < 3; ++r) {
    ShardingCommunicator rank_r(block, r, 3);
    const GradientBuckets of_rank_r(rank_r, 484, 100, true);
    for (const auto& [begin, end] : of_rank_r.pieces())
      for (std::int64_t i = begin; i < end; ++i) ++covered[static_cast<std::size_t>(i)];
  }
  EXPECT_EQ(covered, std::vector<int>(484, 1));

  // A bucket with fewer elements than ranks leaves some ranks an empty piece: gather() updates only
  // the pieces that hold something, and still all-gathers every bucket.
  ShardingCommunicator first(block, 0, 3);
  GradientBuckets small(first, 202, 100, true);  // [102, 202), [2, 102), [0, 2)
  EXPECT_EQ(small.pieces(), (std::vector<std::pair<std::int64_t, std::int64_t>>{{102, 135}, {2, 35}, {0, 0}}));
  std::vector<std::pair<std::int64_t, std::int64_t>> updated;
  small.gather(ctx, block, [&](std::int64_t begin, std::int64_t end) { updated.emplace_back(begin, end); });
  EXPECT_EQ(updated, (std::vector<std::pair<std::int64_t, std::int64_t>>{{102, 135}, {2, 35}}));
  EXPECT_EQ(first.gathered.size(), 3u);
}

TEST(GradientBuckets, ShardingNeedsACommunicatorThatCan) {
  Context ctx(Device::cpu());
  Tensor block = Tensor::zeros({50}, ctx);
  RecordingCommunicator comm(block);
  EXPECT_THROW(GradientBuckets(comm, 50, 0, /*sharded=*/true), Error);
  GradientBuckets plain(comm, 50, 0);
  EXPECT_FALSE(plain.sharded());
  EXPECT_TRUE(plain.pieces().empty());
  EXPECT_THROW(plain.gather(ctx, block), Error);
  EXPECT_THROW(comm.start_reduce_scatter_mean(ctx, block), Error) << "the default says it cannot";
}
