// The train step as a CUDA graph (models/train/step_capture.hpp). Its per-step values live on the
// device: the optimizer's rate and bias corrections (Optimizer::prepare writes them, the update
// reads them there) and each dropout layer's Philox counter (read and advanced by the dropout op).
// On the CPU these tests prove that path gives today's bits over several steps; on a GPU that a
// replayed train step gives the plain launches' weights, draws fresh dropout masks, and that a
// batch of another shape (an epoch's last, partial batch) runs plainly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/train/step_capture.hpp"
#include "cudl/models/train/trainer.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;

namespace {

Sequential small_net(Context& ctx, float dropout) {
  Sequential m;
  m.add("features.0", std::make_unique<Conv2d>(1, 4, 3, Conv2dParams{1, 1}));
  m.add("features.1", relu());
  m.add("features.2", std::make_unique<MaxPool2d>(2));
  m.add("flatten", std::make_unique<Flatten>());
  m.add("dropout", std::make_unique<Dropout>(dropout));
  m.add("classifier.0", std::make_unique<Linear>(4 * 4 * 4, 3));
  m.build(ctx, 5);
  return m;
}

std::vector<std::uint32_t> bits(const std::vector<float>& v) {
  std::vector<std::uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

// The optimizer update as it was computed before the per-step values moved to the device (the
// CPU loop of kernels/cpu/optimizers.cpp, with its constants from the host's lr and step count):
// the reference the device-scalar path must match bit for bit.
void reference_step(const OptimizerConfig& c, float lr, std::int64_t step, std::vector<float>& w,
                    const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v) {
  if (c.kind == OptimizerKind::sgd) {
    for (std::size_t i = 0; i < w.size(); ++i) {
      float d = g[i] + c.weight_decay * w[i];
      if (c.momentum > 0.0f) {
        const float b = c.momentum * m[i] + 1.0f * d;
        m[i] = b;
        d = c.nesterov ? d + c.momentum * b : b;
      }
      w[i] -= lr * d;
    }
    return;
  }
  const double bc1 = 1.0 - std::pow(static_cast<double>(c.beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(c.beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const bool decoupled = c.kind == OptimizerKind::adamw;
  const float l2 = decoupled ? 0.0f : c.weight_decay;
  const float shrink = decoupled ? 1.0f - lr * c.weight_decay : 1.0f;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const float d = g[i] + l2 * w[i];
    const float mi = c.beta1 * m[i] + (1.0f - c.beta1) * d;
    const float vi = c.beta2 * v[i] + (1.0f - c.beta2) * d * d;
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * shrink - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + c.eps);
  }
}

std::vector<OptimizerConfig> optimizer_configs() {
  std::vector<OptimizerConfig> out;
  OptimizerConfig sgd;
  sgd.kind = OptimizerKind::sgd;
  sgd.momentum = 0.9f;
  sgd.weight_decay = 1e-3f;
  out.push_back(sgd);
  sgd.nesterov = true;
  out.push_back(sgd);
  OptimizerConfig adam;
  adam.weight_decay = 1e-2f;
  out.push_back(adam);
  adam.kind = OptimizerKind::adamw;
  out.push_back(adam);
  return out;
}

std::string describe(const OptimizerConfig& c) { return optimizer_name(c.kind) + (c.nesterov ? " nesterov" : ""); }

// Six steps of a onecycle schedule through Optimizer (prepare: the values on the "device", a host
// tensor here; apply: the update reads them) against the reference, on fresh gradients each step.
TEST(OptimizerDeviceScalars, MatchTheHostArgumentStepBitForBitOverAScheduledRun) {
  Context ctx;
  for (const OptimizerConfig& c : optimizer_configs()) {
    SCOPED_TRACE(describe(c));
    Sequential net = small_net(ctx, 0.0f);
    Optimizer opt(ctx, net, c);
    std::vector<float> w = net.parameter_block().to_vector(ctx);
    std::vector<float> m(w.size(), 0.0f), v(w.size(), 0.0f);
    constexpr std::int64_t kSteps = 6;
    for (std::int64_t k = 0; k < kSteps; ++k) {
      const float lr = learning_rate(Schedule::onecycle, 0.05f, k, kSteps);
      const std::vector<float> g = cudl::testing::random_values(static_cast<std::int64_t>(w.size()), 40 + k);
      ctx.backend().copy(ctx, Tensor::from_host(g, net.gradient_block().shape(), ctx), net.gradient_block());
      opt.step(ctx, lr);
      reference_step(c, lr, k + 1, w, g, m, v);
      ASSERT_EQ(bits(net.parameter_block().to_vector(ctx)), bits(w)) << "step " << k + 1;
    }
    EXPECT_EQ(opt.steps(), kSteps);
    const auto state = opt.state();
    ASSERT_FALSE(state.empty());
    EXPECT_EQ(bits(state[0].second->to_vector(ctx)), bits(m));
    if (state.size() > 1) {
      EXPECT_EQ(bits(state[1].second->to_vector(ctx)), bits(v));
    }
  }
}

// The op with a scalars tensor ignores the host lr and step (which a replayed graph would have
// frozen) and takes the tensor's values.
TEST(OptimizerDeviceScalars, TheTensorsValuesReplaceTheHostFields) {
  Context ctx;
  const std::vector<float> w0 = cudl::testing::random_values(37, 3), g = cudl::testing::random_values(37, 4);
  AdamParams truth;
  truth.lr = 2e-3f;
  truth.step = 7;
  truth.weight_decay = 0.1f;
  truth.decoupled_weight_decay = true;
  const OptimizerStepValues values = optimizer_scalars(truth);
  auto run = [&](const AdamParams& p) {
    Tensor w = Tensor::from_host(w0, {37}, ctx), grad = Tensor::from_host(g, {37}, ctx);
    Tensor m = Tensor::zeros({37}, ctx), v = Tensor::zeros({37}, ctx);
    ctx.backend().adam_step(ctx, p, w, grad, m, v);
    return w.to_vector(ctx);
  };
  AdamParams frozen = truth;
  frozen.lr = 99.0f;  // what a graph would have recorded at its first step
  frozen.step = 0;    // not checked with scalars: not used
  frozen.scalars = Tensor::from_host(std::span<const float>(values.v), {kOptimizerScalars}, ctx);
  EXPECT_EQ(bits(run(frozen)), bits(run(truth)));
  frozen.scalars = Tensor::zeros({3}, ctx);
  EXPECT_THROW(run(frozen), Error);
}

// The dropout layer's masks come from its counter on the device now: the same masks as the op with
// the host's offset (counter, then + numel per forward), through set_counter (a resume) and a data
// parallel rank's rows.
TEST(DropoutDeviceCounter, DrawsTheHostOffsetsMasks) {
  Context ctx;
  Dropout layer(0.4f, 11);
  const Shape shape{3, 50};
  const Tensor x = Tensor::from_host(cudl::testing::random_values(150, 8), shape, ctx);
  Tensor y = Tensor::empty(shape, ctx), mask = Tensor::empty(shape, ctx);
  auto expected = [&](std::uint64_t offset) {
    ctx.backend().dropout_forward(ctx, x, 0.4f, 11, offset, y, mask);
    return y.to_vector(ctx);
  };
  for (std::uint64_t k = 0; k < 3; ++k) {
    EXPECT_EQ(layer.forward(ctx, x, true).to_vector(ctx), expected(150 * k)) << "forward " << k;
    EXPECT_EQ(layer.counter(), 150 * (k + 1));
  }
  const std::uint64_t resumed = (std::uint64_t{1} << 32) + 7;  // past the low word
  layer.set_counter(resumed);
  EXPECT_EQ(layer.forward(ctx, x, true).to_vector(ctx), expected(resumed));
  EXPECT_EQ(layer.forward(ctx, x, true).to_vector(ctx), expected(resumed + 150));
  // Rows [3, 6) of a global batch of 9: offset past 3 rows, advance past all 9.
  layer.set_counter(0);
  layer.set_global_rows({3, 9});
  EXPECT_EQ(layer.forward(ctx, x, true).to_vector(ctx), expected(3 * 50));
  EXPECT_EQ(layer.forward(ctx, x, true).to_vector(ctx), expected(9 * 50 + 3 * 50));
  EXPECT_EQ(layer.counter(), 18u * 50u);
}

// The counted op reads the counter, adds the offset and advances the counter by `advance`.
TEST(DropoutDeviceCounter, TheOpAdvancesItsCounter) {
  Context ctx;
  const Shape shape{64};
  const Tensor x = Tensor::full(shape, 1.0f, ctx);
  Tensor y = Tensor::empty(shape, ctx), mask = Tensor::empty(shape, ctx), plain = Tensor::empty(shape, ctx);
  const std::int32_t words[2] = {-2, 0};  // 2^32 - 2: the carry into the high word
  Tensor counter = Tensor::from_host(std::span<const std::int32_t>(words), {2}, ctx);
  ctx.backend().dropout_forward(ctx, x, 0.5f, 3, counter, 5, 10, y, mask);
  ctx.backend().dropout_forward(ctx, x, 0.5f, 3, (std::uint64_t{1} << 32) - 2 + 5, plain, mask);
  EXPECT_EQ(y.to_vector(ctx), plain.to_vector(ctx));
  EXPECT_EQ(counter.to_int_vector(ctx), (std::vector<std::int32_t>{8, 1}));
  Tensor wrong = Tensor::zeros({2}, ctx);  // f32, not i32
  EXPECT_THROW(ctx.backend().dropout_forward(ctx, x, 0.5f, 3, wrong, 0, 0, y, mask), Error);
}

// On the CPU the train-step graph runs the step each time; the dropout counters move as in plain runs.
TEST(TrainStepGraph, OnTheCpuTheStepRunsEveryTimeAndCountersAdvance) {
  Context ctx;
  ctx.set_cuda_graphs(true);
  Sequential net = small_net(ctx, 0.5f);
  TrainStepGraph graph(net);
  const Tensor x = Tensor::from_host(cudl::testing::random_values(2 * 64, 2), {2, 1, 8, 8}, ctx);
  int runs = 0;
  for (int i = 0; i < 3; ++i)
    graph.run(ctx, [&] {
      ++runs;
      (void)net.forward(ctx, x, true);
    });
  EXPECT_EQ(runs, 3);
  EXPECT_EQ(graph.state(), StepGraph::State::plain);
  const auto* dropout = dynamic_cast<const Dropout*>(net.layers()[4].second.get());
  ASSERT_NE(dropout, nullptr);
  EXPECT_EQ(dropout->counter(), 3u * 2u * 64u);
}

// ---- on a GPU ----

// One train step of `net` on (x, labels): what the bench and the loop capture.
void train_launches(Context& ctx, Sequential& net, Optimizer& opt, const Tensor& x, const Tensor& labels) {
  net.zero_grad(ctx);
  Tensor logits = net.forward(ctx, x, true);
  Tensor probs = Tensor::empty(logits.shape(), ctx), dlogits = Tensor::empty(logits.shape(), ctx);
  Tensor loss = Tensor::empty({1}, ctx);
  ctx.backend().softmax_cross_entropy_forward(ctx, logits, labels, probs, loss);
  ctx.backend().softmax_cross_entropy_backward(ctx, probs, labels, 1.0f, dlogits);
  net.backward(ctx, dlogits);
  opt.apply(ctx);
}

// Six steps (a scheduled rate, dropout) plain and replayed: the same weights and dropout counter.
TEST(TrainStepGraph, CudaReplayedTrainStepsMatchPlainLaunches) {
  CUDL_REQUIRE_CUDA();
  for (const OptimizerConfig& c : optimizer_configs()) {
    SCOPED_TRACE(describe(c));
    std::vector<std::vector<float>> weights;
    std::vector<std::uint64_t> counters;
    for (const bool graphs : {false, true}) {
      Context gpu(Device::cuda(0));
      gpu.set_deterministic(true);
      gpu.set_cuda_graphs(graphs);
      Sequential net = small_net(gpu, 0.5f);
      Optimizer opt(gpu, net, c);
      const Tensor x = Tensor::from_host(cudl::testing::random_values(4 * 64, 6), {4, 1, 8, 8}, gpu);
      const std::vector<std::int32_t> host_labels{0, 1, 2, 1};
      const Tensor labels = Tensor::from_host(std::span<const std::int32_t>(host_labels), {4}, gpu);
      TrainStepGraph graph(net);
      for (std::int64_t k = 0; k < 6; ++k) {
        opt.prepare(gpu, learning_rate(Schedule::onecycle, 0.05f, k, 6));
        graph.run(gpu, [&] { train_launches(gpu, net, opt, x, labels); });
      }
      EXPECT_EQ(graph.state(), graphs ? StepGraph::State::replaying : StepGraph::State::plain);
      weights.push_back(net.parameter_block().to_vector(gpu));
      counters.push_back(dynamic_cast<const Dropout*>(net.layers()[4].second.get())->counter());
    }
    EXPECT_EQ(counters[1], counters[0]);
    EXPECT_EQ(counters[0], 6u * 4u * 64u);
    ASSERT_EQ(weights[1].size(), weights[0].size());
    for (std::size_t i = 0; i < weights[0].size(); ++i)
      ASSERT_NEAR(weights[1][i], weights[0][i], 1e-5 + 1e-4 * std::abs(weights[0][i])) << "parameter " << i;
  }
}

// fit() with --cuda-graphs: 26 images in batches of 8 (three full batches replayed after the
// warm-up and recording, the last batch of 2 run plainly each epoch), Adam with a onecycle schedule,
// dropout and clipping: the weights and dropout counter of the plain run.
TEST(TrainStepGraph, CudaFitWithGraphsMatchesPlainFitAndRunsThePartialBatchPlainly) {
  CUDL_REQUIRE_CUDA();
  std::vector<std::vector<float>> weights;
  std::vector<std::uint64_t> counters;
  std::vector<double> losses;
  for (const bool graphs : {false, true}) {
    Context gpu(Device::cuda(0));
    gpu.set_deterministic(true);
    gpu.set_cuda_graphs(graphs);
    Context cpu;
    const Dataset train = cudl::testing::synthetic_patterns(26, 1, 8, 8, 3, 7, cpu);
    const Dataset test = cudl::testing::synthetic_patterns(6, 1, 8, 8, 3, 8, cpu);
    Sequential net = small_net(gpu, 0.3f);
    FitOptions o;
    o.model_name = "small";
    o.epochs = 3;
    o.batch_size = 8;
    o.schedule = Schedule::onecycle;
    o.optimizer.lr = 0.01f;
    o.clip_grad_norm = 1.0;
    o.workers = 1;
    ::testing::internal::CaptureStderr();
    const TrainResult r = fit(gpu, net, train, test, o);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_FALSE(cudl::testing::contains(err, "cannot be captured")) << err;
    weights.push_back(net.parameter_block().to_vector(gpu));
    counters.push_back(dynamic_cast<const Dropout*>(net.layers()[4].second.get())->counter());
    losses.push_back(r.epochs.back().train_loss);
  }
  EXPECT_EQ(counters[1], counters[0]);
  EXPECT_EQ(counters[0], 3u * 26u * 64u);
  EXPECT_NEAR(losses[1], losses[0], 1e-4 * std::abs(losses[0]) + 1e-6);
  ASSERT_EQ(weights[1].size(), weights[0].size());
  for (std::size_t i = 0; i < weights[0].size(); ++i)
    ASSERT_NEAR(weights[1][i], weights[0][i], 1e-5 + 1e-4 * std::abs(weights[0][i])) << "parameter " << i;
}

// A CUDA optimizer step reading its values from the device gives the CPU's bits.
TEST(OptimizerDeviceScalars, CudaMatchesTheCpuBitForBit) {
  CUDL_REQUIRE_CUDA();
  for (const OptimizerConfig& c : optimizer_configs()) {
    SCOPED_TRACE(describe(c));
    std::vector<std::vector<float>> out;
    for (const Device device : {Device::cpu(), Device::cuda(0)}) {
      Context ctx(device);
      Sequential net = small_net(ctx, 0.0f);
      Optimizer opt(ctx, net, c);
      for (std::int64_t k = 0; k < 4; ++k) {
        const std::vector<float> g = cudl::testing::random_values(net.gradient_block().numel(), 60 + k);
        ctx.backend().copy(ctx, Tensor::from_host(g, net.gradient_block().shape(), ctx), net.gradient_block());
        opt.step(ctx, learning_rate(Schedule::cosine, 0.02f, k, 4));
      }
      out.push_back(net.parameter_block().to_vector(ctx));
    }
    EXPECT_EQ(bits(out[1]), bits(out[0]));
  }
}

}  // namespace
