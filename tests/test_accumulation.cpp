// Gradient accumulation (issue 27 item 3, TrainConfig::accumulate_steps): N batches of B summed
// into one optimizer step are the step of one batch of N*B, on the MNIST CNN (convolutions,
// dropout) and on a linear model over an epoch whose last group is short; steps, --max-steps and
// resume count optimizer steps; bad values are refused in one line. The two-rank case is in
// tests/test_distributed.cpp (under mpirun).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cudl/engine/device.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

std::vector<Device> devices() {
  std::vector<Device> out{Device::cpu()};
  if (cuda_compiled() && cuda_device_count() > 0) out.push_back(Device::cuda(0));
  return out;
}

FitOptions sgd(std::int64_t epochs, std::int64_t batch, std::int64_t accumulate) {
  FitOptions o;
  o.model_name = "net";
  o.epochs = epochs;
  o.batch_size = batch;
  o.accumulate_steps = accumulate;
  o.optimizer.kind = OptimizerKind::sgd;
  o.optimizer.lr = 0.05f;
  o.optimizer.momentum = 0.9f;  // the velocity carries each step's gradient into the next
  o.schedule = Schedule::none;
  o.seed = 5;
  return o;
}

Sequential linear_model(Context& ctx) {
  Sequential net;
  net.add("flatten", std::make_unique<Flatten>()).add("fc", std::make_unique<Linear>(16, 3));
  net.build(ctx, 7);
  return net;
}

// The largest |a - b| / max(|a|, |b|, floor) over two parameter blocks, and where.
double worst_relative(const std::vector<float>& a, const std::vector<float>& b, std::size_t& where) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double scale = std::max({std::abs(double(a[i])), std::abs(double(b[i])), 1e-3});
    const double rel = std::abs(double(a[i]) - double(b[i])) / scale;
    if (rel > worst) worst = rel, where = i;
  }
  return worst;
}

struct Trained {
  std::vector<float> params;
  TrainResult result;
};

Trained train_net(const Device& device, Sequential (*make)(Context&), const Dataset& train, const Dataset& test,
                  const FitOptions& o) {
  Context ctx{device};
  Sequential net = make(ctx);
  Trained t;
  t.result = fit(ctx, net, train, test, o);
  t.params = net.parameter_block().to_vector(ctx);
  return t;
}

Sequential mnist_cnn(Context& ctx) {
  Sequential net = make_model("mnist_cnn");
  net.build(ctx, 7);
  return net;
}

}  // namespace

// The MNIST CNN (two convolutions, pooling, dropout, two dense layers): 4 batches of 8 accumulated
// against batches of 32, three steps. Dropout draws the same masks either way (its counter moves
// by the rows it saw), and the net has no batch norm (whose statistics would be the micro-batches').
TEST(Accumulation, FourBatchesOfEightMakeTheStepOfOneBatchOf32OnTheMnistCnn) {
  for (const Device& device : devices()) {
    Context cpu{Device::cpu()};
    const Dataset train = synthetic_patterns(96, 1, 28, 28, 10, 3, cpu),
                  test = synthetic_patterns(20, 1, 28, 28, 10, 4, cpu);
    const Trained whole = train_net(device, mnist_cnn, train, test, sgd(1, 32, 1));
    const Trained accumulated = train_net(device, mnist_cnn, train, test, sgd(1, 8, 4));
    EXPECT_EQ(whole.result.epochs.back().steps, 3);
    EXPECT_EQ(accumulated.result.epochs.back().steps, 3) << "optimizer steps, not batches";
    std::size_t at = 0;
    EXPECT_LE(worst_relative(whole.params, accumulated.params, at), 2e-4)
        << device.str() << ": parameter " << at << " " << whole.params[at] << " vs " << accumulated.params[at];
    // The epoch's loss is a mean over its images either way.
    EXPECT_NEAR(whole.result.epochs.back().train_loss, accumulated.result.epochs.back().train_loss, 1e-4)
        << device.str();
    // The weights moved: the comparison is not between two untrained nets.
    Context ctx{device};
    const std::vector<float> initial = mnist_cnn(ctx).parameter_block().to_vector(ctx);
    EXPECT_GT(worst_relative(initial, whole.params, at), 1e-3) << device.str();
  }
}

// 44 images in batches of 8 are 6 batches, the last of 4: in groups of 4 the epoch's second group
// has 2 batches (12 images), and its step is the mean over those 12, exactly as batches of 32 give
// [32, 12]. Two epochs: 2 steps each.
TEST(Accumulation, AnEpochsShortLastGroupStepsOnTheRowsItHas) {
  for (const Device& device : devices()) {
    Context cpu{Device::cpu()};
    const Dataset train = synthetic_patterns(44, 1, 4, 4, 3, 3, cpu), test = synthetic_patterns(9, 1, 4, 4, 3, 4, cpu);
    const Trained whole = train_net(device, linear_model, train, test, sgd(2, 32, 1));
    const Trained accumulated = train_net(device, linear_model, train, test, sgd(2, 8, 4));
    ASSERT_EQ(accumulated.result.epochs.size(), 2u);
    EXPECT_EQ(accumulated.result.epochs[0].steps, 2);
    EXPECT_EQ(accumulated.result.epochs[1].steps, 4);
    std::size_t at = 0;
    EXPECT_LE(worst_relative(whole.params, accumulated.params, at), 1e-5)
        << device.str() << ": parameter " << at << " " << whole.params[at] << " vs " << accumulated.params[at];
    // Without the short group's own weighting (12 rows, not 4 x 8 = 32) the last step would differ.
    const Trained unaccumulated = train_net(device, linear_model, train, test, sgd(2, 8, 1));
    EXPECT_GT(worst_relative(whole.params, unaccumulated.params, at), 1e-3) << device.str();
  }
}

namespace {

// One rank that counts what the loop asks of it: enough to see how often gradients are reduced.
class CountingComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string name() const override { return "counting"; }
  void allreduce_mean(Context&, Tensor&) override { ++whole; }
  void start_allreduce_mean(Context&, Tensor part) override {
    ++started;
    elements += part.numel();
  }
  void finish_collectives(Context&) override { ++finished; }
  void allreduce_sum(std::vector<double>&) override {}
  void broadcast(Context&, Tensor&, int) override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
  std::int64_t whole = 0, started = 0, finished = 0, elements = 0;
};

}  // namespace

// Data parallel: the gradients hook starts the buckets only in the backward of a group's last
// batch, so each optimizer step reduces the block once, in buckets, whatever the accumulation.
TEST(Accumulation, OneBucketedAllReducePerOptimizerStep) {
  Context ctx{Device::cpu()};
  const Dataset train = synthetic_patterns(64, 1, 4, 4, 3, 3, ctx), test = synthetic_patterns(9, 1, 4, 4, 3, 4, ctx);
  Sequential net;
  net.add("flatten", std::make_unique<Flatten>())
      .add("fc1", std::make_unique<Linear>(16, 32))
      .add("fc2", std::make_unique<Linear>(32, 3));
  net.build(ctx, 7);
  CountingComm comm;
  FitOptions o = sgd(1, 8, 4);  // 8 batches: 2 steps
  o.comm = &comm;
  o.bucket_mb = 4 * 100 / 1e6;  // buckets of 100 gradients: 643 of them make 7
  fit(ctx, net, train, test, o);
  EXPECT_EQ(comm.finished, 2);
  EXPECT_EQ(comm.started, 2 * 7);
  EXPECT_EQ(comm.elements, 2 * net.gradient_block().numel());
  EXPECT_EQ(comm.whole, 0);
}

TEST(Accumulation, MaxStepsAndProgressCountOptimizerSteps) {
  Context ctx{Device::cpu()};
  const Dataset train = synthetic_patterns(64, 1, 4, 4, 3, 3, ctx), test = synthetic_patterns(9, 1, 4, 4, 3, 4, ctx);
  Sequential net = linear_model(ctx);
  FitOptions o = sgd(3, 8, 2);  // 8 batches: 4 steps per epoch
  o.max_steps = 6;
  std::vector<std::int64_t> after;
  std::int64_t last_batches = 0, last_batch = 0;
  o.after_step = [&](std::int64_t step) { after.push_back(step); };
  o.on_progress = [&](const TrainProgress& p) {
    last_batches = p.batches;
    last_batch = p.batch;
  };
  const TrainResult r = fit(ctx, net, train, test, o);
  EXPECT_EQ(after, (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}));
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_EQ(r.epochs[0].steps, 4);
  EXPECT_EQ(r.epochs[1].steps, 6);
  EXPECT_EQ(r.stopped, "max_steps");
  EXPECT_EQ(last_batches, 4);
  EXPECT_EQ(last_batch, 2);
}

TEST(Accumulation, ResumeNeedsTheSameAccumulation) {
  Context ctx{Device::cpu()};
  TempDir dir;
  const Dataset train = synthetic_patterns(32, 1, 4, 4, 3, 3, ctx), test = synthetic_patterns(9, 1, 4, 4, 3, 4, ctx);
  Sequential net = linear_model(ctx);
  FitOptions o = sgd(1, 8, 2);
  o.save_path = dir.file("run.st");
  fit(ctx, net, train, test, o);
  EXPECT_EQ(read_checkpoint_info(o.save_path).extra.at("accumulate_steps"), "2");
  EXPECT_EQ(read_checkpoint_info(o.save_path).step, 2);
  FitOptions again = sgd(2, 8, 4);
  again.resume_path = o.save_path;
  Sequential other = linear_model(ctx);
  expect_error([&] { fit(ctx, other, train, test, again); }, {"--resume", "--accumulate-steps 2, this run asks 4"});
  again.accumulate_steps = 2;
  const TrainResult r = fit(ctx, other, train, test, again);
  EXPECT_EQ(r.epochs.back().steps, 4);
}

TEST(Accumulation, BadValuesAreRefusedInOneLine) {
  Context ctx{Device::cpu()};
  const Dataset train = synthetic_patterns(16, 1, 4, 4, 3, 3, ctx);
  Sequential net = linear_model(ctx);
  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-3}, std::int64_t{2'000'000}}) {
    FitOptions o = sgd(1, 8, bad);
    expect_error([&] { fit(ctx, net, train, train, o); },
                 {"accumulate_steps must be a whole number in [1, 1000000]", std::to_string(bad)});
  }
  TempDir dir;
  for (const std::string bad : {"0", "-1", "1.5", "many"}) {
    const CliRun r = run_cli(dir, "train --model mlp --data '" + dir.path().string() + "' --accumulate-steps " + bad);
    EXPECT_EQ(r.status, 1) << bad;
    EXPECT_TRUE(contains(r.err, "--accumulate-steps")) << bad << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// fp16 loss scaling decides once per optimizer step, on the group's summed gradients: from a
// scale so large that the first steps overflow, the scale halves once per skipped group (not per
// batch), and every group is either a step or a skipped step.
TEST(Accumulation, Fp16LossScalingSkipsWholeGroups) {
  Context ctx{Device::cpu()};
  ctx.set_precision(Precision::fp16);
  Sequential net;
  net.add("conv1", std::make_unique<Conv2d>(1, 8, 3, Conv2dParams{1, 1}))
      .add("relu1", std::make_unique<ActivationLayer>(Activation::relu))
      .add("pool1", std::make_unique<MaxPool2d>(2))
      .add("flatten", std::make_unique<Flatten>())
      .add("fc", std::make_unique<Linear>(8 * 4 * 4, 4));
  net.build(ctx, 11);
  const Dataset train = synthetic_patterns(64, 1, 8, 8, 4, 5, ctx), test = synthetic_patterns(16, 1, 8, 8, 4, 6, ctx);
  FitOptions o = sgd(2, 2, 2);  // 32 batches of 2: 16 groups an epoch
  o.optimizer.momentum = 0;
  o.loss_scaling.init_scale = 0x1p28f;  // far past f16's 65504 for the first gradients
  const TrainResult r = fit(ctx, net, train, test, o);
  ASSERT_EQ(r.epochs.size(), 2u);
  const std::int64_t skipped = r.epochs[0].skipped_steps + r.epochs[1].skipped_steps;
  EXPECT_GE(r.epochs[0].skipped_steps, 10) << "2^28 must come down to 2^18 or below, one halving a group";
  EXPECT_LT(r.epochs[0].skipped_steps, 16) << "and then train";
  EXPECT_LE(r.epochs[0].loss_scale, 0x1p18);
  EXPECT_EQ(r.epochs[1].steps + skipped, 2 * 16) << "each group is one step, taken or skipped";
  for (float v : net.parameter_block().to_vector(ctx)) ASSERT_TRUE(std::isfinite(v));
}
