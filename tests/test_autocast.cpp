// Mixed precision above the ops: autocast in the layers and the model (half weights refreshed from
// the f32 masters, activations in half, f32 output), dynamic loss scaling for fp16 (an injected
// overflow is skipped, the scale halved, the weights stay finite), training in bf16 and fp16
// against fp32, and half-precision weight files.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/layers/loss_scaler.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

// A small conv net with every layer kind autocast touches.
Sequential small_cnn(Context& ctx) {
  Sequential net;
  net.add("conv1", std::make_unique<Conv2d>(1, 8, 3, Conv2dParams{1, 1}))
      .add("relu1", std::make_unique<ActivationLayer>(Activation::relu))
      .add("pool1", std::make_unique<MaxPool2d>(2))
      .add("flatten", std::make_unique<Flatten>())
      .add("fc", std::make_unique<Linear>(8 * 4 * 4, 4));
  net.build(ctx, 11);
  return net;
}

TEST(Autocast, Bf16AndFp16ForwardAndBackwardFollowFp32) {
  for (const Precision precision : {Precision::bf16, Precision::fp16}) {
    Context ctx{Device::cpu()};
    Sequential net = small_cnn(ctx);
    net.set_input_grad(true);
    const Dataset d = synthetic_patterns(6, 1, 8, 8, 4, 3, ctx);
    Tensor dy = Tensor::full({6, 4}, 0.25f, ctx);

    net.zero_grad(ctx);
    const std::vector<float> y32 = net.forward(ctx, d.images, true).to_vector(ctx);
    const std::vector<float> dx32 = net.backward(ctx, dy).to_vector(ctx);
    const std::vector<float> g32 = net.gradient_block().to_vector(ctx);

    ctx.set_precision(precision);
    net.zero_grad(ctx);
    Tensor y = net.forward(ctx, d.images, true);
    EXPECT_EQ(y.dtype(), DType::f32) << "the model's output stays f32 for the loss";
    EXPECT_EQ(net.layer("fc").parameters()[0]->half.dtype(), autocast_dtype(precision));
    Tensor dx = net.backward(ctx, dy);
    EXPECT_EQ(dx.dtype(), DType::f32) << "the input gradient comes back in the input's dtype";
    const std::vector<float> g = net.gradient_block().to_vector(ctx);
    // A few roundings of 2^-8 (bf16) or 2^-11 (f16) relative to the largest value, through three
    // layers: 4 units of roundoff is generous for f16 and tight enough to catch a wrong dtype path.
    const double u = precision == Precision::bf16 ? 0x1p-8 : 0x1p-11;
    EXPECT_LE(max_diff(y.to_vector(ctx), y32), 16 * u * max_abs(y32)) << precision_name(precision);
    EXPECT_LE(max_diff(dx.to_vector(ctx), dx32), 16 * u * max_abs(dx32)) << precision_name(precision);
    EXPECT_LE(max_diff(g, g32), 16 * u * max_abs(g32)) << precision_name(precision);
    EXPECT_NE(y.to_vector(ctx), y32) << "half precision should round somewhere";
  }
}

// The half weights are refreshed from the masters after a step, and not before it.
TEST(Autocast, HalfWeightsFollowTheMastersAfterEachOptimizerStep) {
  Context ctx{Device::cpu()};
  ctx.set_precision(Precision::bf16);
  Sequential net = small_cnn(ctx);
  const Dataset d = synthetic_patterns(4, 1, 8, 8, 4, 3, ctx);
  Optimizer opt(ctx, net, OptimizerConfig{});
  const std::vector<float> before = net.forward(ctx, d.images, false).to_vector(ctx);
  EXPECT_EQ(net.forward(ctx, d.images, false).to_vector(ctx), before);
  Parameter& w = *net.layer("fc").parameters()[0];
  ctx.backend().fill(ctx, net.gradient_block(), 1.0f);
  opt.step(ctx, 0.1f);
  const std::vector<float> master = w.value.to_vector(ctx), half = w.half.to_vector(ctx);
  EXPECT_NE(net.forward(ctx, d.images, false).to_vector(ctx), before);
  const std::vector<float> refreshed = w.half.to_vector(ctx);
  EXPECT_NE(refreshed, half);
  for (std::size_t i = 0; i < master.size(); ++i) ASSERT_EQ(refreshed[i], to_float(to_bf16(master[i]))) << i;
}

// Under a constant hold the convolutions run from re-laid-out copies of the HALF weights (what
// they read under autocast), made once; when the hold ends, changed masters show again instead of
// a stale copy.
TEST(Autocast, HeldHalfWeightsAreReusedAndDroppedWithTheHold) {
  Context ctx{Device::cpu()};
  ctx.set_precision(Precision::bf16);
  // NCHW activations: this one-channel convolution then runs in oneDNN, whose re-laid-out weight
  // copies are what the hold keeps (into a channels_last output it runs on the CPU's own kernel,
  // which reads the weights as they are and keeps nothing).
  ctx.set_activation_format(ActivationFormat::contiguous);
  Sequential net = small_cnn(ctx);
  const Dataset d = synthetic_patterns(4, 1, 8, 8, 4, 3, ctx);
  const std::vector<float> fresh = net.forward(ctx, d.images, false).to_vector(ctx);
  Parameter& w = *net.layer("conv1").parameters()[0];
  const Tensor other = Tensor::full(w.shape, 0.5f, ctx);
  {
    const ConstantHold hold = net.hold_parameters_constant(ctx);
    EXPECT_EQ(net.forward(ctx, d.images, false).to_vector(ctx), fresh);
    // Only a native bf16 convolution (AVX-512 BF16, AMX) keeps a copy: without one (AVX2) the
    // weights are widened to f32 on every call and nothing is held.
    if (cpu::half_native(DType::bf16, ctx.cpu_conv())) {
      // Breaking the promise: a write to the half copy under the hold is not seen, which shows
      // the held copy is what runs (made by the first forward, reused since).
      const Tensor saved = w.half.clone(ctx);
      ctx.backend().cast(ctx, other, w.half);
      EXPECT_EQ(net.forward(ctx, d.images, false).to_vector(ctx), fresh);
      ctx.backend().copy(ctx, saved, w.half);
    }
  }
  // Released, then the masters change (as an optimizer step would): the new weights are read.
  ctx.backend().copy(ctx, other, w.value);
  net.parameters_changed();
  const std::vector<float> changed = net.forward(ctx, d.images, false).to_vector(ctx);
  EXPECT_NE(changed, fresh);
  Sequential reference = small_cnn(ctx);
  ctx.backend().copy(ctx, net.parameter_block(), reference.parameter_block());
  reference.parameters_changed();
  EXPECT_EQ(reference.forward(ctx, d.images, false).to_vector(ctx), changed);
}

TEST(LossScaler, AnOverflowIsSkippedTheScaleHalvedAndGoodStepsUnscaled) {
  Context ctx{Device::cpu()};
  LossScalerConfig config;
  config.growth_interval = 2;
  LossScaler scaler(ctx, config);
  EXPECT_EQ(scaler.scale(), 65536.0f);
  Tensor grads = Tensor::from_host(std::vector<float>{65536.0f, -131072.0f, 0.0f}, {3}, ctx);
  EXPECT_TRUE(scaler.unscale(ctx, grads));
  EXPECT_EQ(grads.to_vector(ctx), (std::vector<float>{1.0f, -2.0f, 0.0f}));
  Tensor bad = Tensor::from_host(std::vector<float>{1.0f, INFINITY, 2.0f}, {3}, ctx);
  EXPECT_FALSE(scaler.unscale(ctx, bad));
  EXPECT_EQ(scaler.scale(), 32768.0f);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  Tensor nan = Tensor::from_host(std::vector<float>{NAN}, {1}, ctx);
  EXPECT_FALSE(scaler.unscale(ctx, nan));
  EXPECT_EQ(scaler.scale(), 16384.0f);
  // Two good steps in a row grow it back.
  Tensor ok = Tensor::from_host(std::vector<float>{1.0f}, {1}, ctx);
  EXPECT_TRUE(scaler.unscale(ctx, ok));
  EXPECT_EQ(scaler.scale(), 16384.0f);
  EXPECT_TRUE(scaler.unscale(ctx, ok));
  EXPECT_EQ(scaler.scale(), 32768.0f);
  LossScalerConfig zero;
  zero.init_scale = 0.0f;
  EXPECT_THROW(LossScaler(ctx, zero), Error);
}

// fp16 training from a scale so large that the first steps' gradients overflow f16: those steps
// are skipped (the weights untouched), the scale halves until gradients fit, training goes on and
// ends with finite weights and a better loss; the metrics say how many steps were skipped.
TEST(LossScaler, Fp16TrainingSkipsOverflowingStepsAndRecovers) {
  Context ctx{Device::cpu()};
  ctx.set_precision(Precision::fp16);
  Sequential net = small_cnn(ctx);
  const Dataset train = synthetic_patterns(64, 1, 8, 8, 4, 5, ctx);
  const Dataset test = synthetic_patterns(16, 1, 8, 8, 4, 6, ctx);
  const std::vector<float> initial = net.parameter_block().to_vector(ctx);
  FitOptions o;
  o.model_name = "small_cnn";
  o.epochs = 3;
  o.batch_size = 4;  // 16 steps an epoch
  o.schedule = Schedule::none;
  o.loss_scaling.init_scale = 0x1p28f;  // dlogits of up to 1/4 times 2^28 is far past f16's 65504
  std::vector<TrainProgress> reports;
  o.on_progress = [&](const TrainProgress& p) { reports.push_back(p); };
  const TrainResult r = fit(ctx, net, train, test, o);
  ASSERT_EQ(r.epochs.size(), 3u);
  EXPECT_EQ(r.precision, "fp16");
  EXPECT_GE(r.epochs[0].skipped_steps, 10) << "2^28 must come down to 2^18 or below, one halving a step";
  EXPECT_LT(r.epochs[0].skipped_steps, 16) << "and then train";
  EXPECT_LE(r.epochs[0].loss_scale, 0x1p18);
  EXPECT_GT(r.epochs[0].loss_scale, 0.0);
  EXPECT_EQ(r.epochs[2].skipped_steps, 0);
  EXPECT_EQ(r.epochs[2].steps, 3 * 16 - r.epochs[0].skipped_steps - r.epochs[1].skipped_steps)
      << "skipped steps are not optimizer steps";
  for (float v : net.parameter_block().to_vector(ctx)) ASSERT_TRUE(std::isfinite(v));
  EXPECT_NE(net.parameter_block().to_vector(ctx), initial);
  EXPECT_LT(r.epochs[2].train_loss, r.epochs[0].train_loss);
  ASSERT_FALSE(reports.empty());
  EXPECT_GT(reports.back().loss_scale, 0.0);
  const nlohmann::json metrics = metrics_document(r);
  EXPECT_EQ(metrics["precision"], "fp16");
  EXPECT_EQ(metrics["epochs"][0]["skipped_steps"], r.epochs[0].skipped_steps);
  EXPECT_TRUE(metrics["epochs"][0].contains("loss_scale"));
}

// The loss scale a fp16 run has reached is saved in its checkpoints and restored on resume: the
// resumed run goes on at that scale (no steps skipped again from the initial one) and ends where
// the uninterrupted run does.
TEST(LossScaler, TheScaleIsCheckpointedAndRestoredOnResume) {
  TempDir dir;
  const Dataset train = [] {
    Context host{Device::cpu()};
    return synthetic_patterns(64, 1, 8, 8, 4, 5, host);
  }();
  const Dataset test = [] {
    Context host{Device::cpu()};
    return synthetic_patterns(16, 1, 8, 8, 4, 6, host);
  }();
  const auto run = [&](std::int64_t epochs, const std::string& save, const std::string& resume) {
    Context ctx{Device::cpu()};
    ctx.set_precision(Precision::fp16);
    Sequential net = small_cnn(ctx);
    FitOptions o;
    o.model_name = "small_cnn";
    o.epochs = epochs;
    o.batch_size = 4;
    o.schedule = Schedule::none;
    o.loss_scaling.init_scale = 0x1p28f;
    o.save_path = save;
    o.resume_path = resume;
    const TrainResult r = fit(ctx, net, train, test, o);
    return std::make_pair(r, net.parameter_block().to_vector(ctx));
  };
  const auto [straight, straight_params] = run(2, dir.file("straight.st"), "");
  const auto [first, first_params] = run(1, dir.file("run.st"), "");
  const CheckpointInfo info = read_checkpoint_info(dir.file("run.st"));
  ASSERT_TRUE(info.extra.count("loss_scale"));
  EXPECT_EQ(std::stod(info.extra.at("loss_scale")), first.epochs[0].loss_scale);
  ASSERT_GT(first.epochs[0].skipped_steps, 0) << "the run must have lowered its scale";
  const auto [resumed, resumed_params] = run(2, dir.file("run.st"), dir.file("run.st"));
  ASSERT_EQ(resumed.epochs.size(), 2u);
  EXPECT_EQ(resumed.epochs[1].skipped_steps, straight.epochs[1].skipped_steps);
  EXPECT_EQ(resumed.epochs[1].loss_scale, straight.epochs[1].loss_scale);
  EXPECT_EQ(resumed_params, straight_params);
}

// bf16 has fp32's range: no loss scaling, and it trains as fp32 does on a separable set.
TEST(Autocast, Bf16TrainingLearnsAsFp32Does) {
  double accuracy[2] = {0, 0};
  for (int run = 0; run < 2; ++run) {
    Context ctx{Device::cpu()};
    if (run == 1) ctx.set_precision(Precision::bf16);
    Sequential net = small_cnn(ctx);
    const Dataset train = synthetic_patterns(128, 1, 8, 8, 4, 5, ctx);
    const Dataset test = synthetic_patterns(64, 1, 8, 8, 4, 6, ctx);
    FitOptions o;
    o.model_name = "small_cnn";
    o.epochs = 4;
    o.batch_size = 16;
    o.schedule = Schedule::none;
    const TrainResult r = fit(ctx, net, train, test, o);
    EXPECT_EQ(r.epochs.back().loss_scale, 0.0);
    accuracy[run] = r.epochs.back().test_accuracy;
  }
  EXPECT_GE(accuracy[0], 0.9);
  EXPECT_NEAR(accuracy[1], accuracy[0], 0.05);
}

// --save-dtype's export: half weights, half the bytes, loading back within one rounding.
TEST(HalfWeights, SavedInBf16AndFp16LoadBackWithinOneRounding) {
  Context ctx{Device::cpu()};
  Sequential net = small_cnn(ctx);
  TempDir dir;
  const std::vector<float> master = net.parameter_block().to_vector(ctx);
  for (const DType dtype : {DType::bf16, DType::f16}) {
    const std::string path = dir.file(std::string(dtype_name(dtype)) + ".safetensors");
    save_weights(path, ctx, net, {}, dtype);
    const SafetensorsFile file = SafetensorsFile::open(path);
    EXPECT_EQ(file.dtype("fc.weight"), dtype == DType::bf16 ? "BF16" : "F16");
    const Tensor kept = file.read("fc.weight", ctx);
    EXPECT_EQ(kept.dtype(), dtype) << "read without widening";
    Sequential copy = small_cnn(ctx);
    load_weights(path, ctx, copy);
    const std::vector<float> loaded = copy.parameter_block().to_vector(ctx);
    for (std::size_t i = 0; i < master.size(); ++i) {
      const float expected = dtype == DType::bf16 ? to_float(to_bf16(master[i])) : to_float(to_f16(master[i]));
      ASSERT_EQ(loaded[i], expected) << i;
    }
  }
  EXPECT_THROW(save_weights(dir.file("i32.safetensors"), ctx, net, {}, DType::i32), Error);
}

}  // namespace

namespace {

// The acceptance run for style: 128 px, seeded VGG19 weights, 20 Adam iterations; the bf16
// loss curve follows fp32's within 2% at every iteration. (Minutes-long suites run once, in the
// default configuration: the EndToEnd prefix.)
TEST(EndToEnd, Bf16StyleTransferFollowsTheFp32LossCurveWithin2Percent) {
  const std::string data = source_dir() + "/tests/data/";
  const Image content = read_image(data + "chelsea.png");
  const Image style = read_image(data + "brick.png");
  std::vector<StyleLosses> curves[2];
  for (int run = 0; run < 2; ++run) {
    Context ctx{Device::cpu()};
    if (run == 1) ctx.set_precision(Precision::bf16);
    StyleOptions o;
    o.size = 128;
    o.iters = 20;
    o.optimizer = StyleOptimizer::adam;
    o.print_every = 1;
    Sequential net = make_style_network(ctx, o, "random:1");
    curves[run] = run_style_transfer(ctx, net, content, {style}, o).log[0];
  }
  ASSERT_EQ(curves[0].size(), curves[1].size());
  ASSERT_GE(curves[0].size(), 20u);
  EXPECT_LT(curves[0].back().total, curves[0].front().total);
  for (std::size_t i = 0; i < curves[0].size(); ++i) {
    const double fp32 = curves[0][i].total, bf16 = curves[1][i].total;
    EXPECT_LE(std::fabs(bf16 - fp32), 0.02 * std::fabs(fp32))
        << "iteration row " << i << ": fp32 " << fp32 << ", bf16 " << bf16;
  }
  std::printf("style 128 px, 20 Adam iterations: total loss fp32 %.6g -> %.6g, bf16 %.6g -> %.6g\n",
              curves[0].front().total, curves[0].back().total, curves[1].front().total, curves[1].back().total);
}

}  // namespace
