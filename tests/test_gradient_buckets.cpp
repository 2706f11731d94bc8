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
  void finish_allreduces(Context&) override { ++finishes; }
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
