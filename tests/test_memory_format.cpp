// Memory formats: channels_last tensors store [N, C, H, W] as NHWC and read back in logical order;
// every op gives the NCHW result whatever format its tensors are stored in (the layout-aware ops
// through the backend's own kernels or the front's NCHW copies, the elementwise ones in their
// output's format), and a network whose convolutions write channels_last computes what the NCHW
// network computes.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/network/sequential.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

constexpr MemoryFormat kNchw = MemoryFormat::contiguous;
constexpr MemoryFormat kNhwc = MemoryFormat::channels_last;

// Seeded values of `shape` on ctx's device, stored in `format`, in `dtype`.
Tensor input(Context& ctx, const Shape& shape, unsigned seed, MemoryFormat format, DType dtype = DType::f32) {
  return Tensor::from_host(random_values(shape.numel(), seed), shape, ctx, dtype).to_format(ctx, format);
}

// What an op call leaves in its outputs, in logical order.
using Outputs = std::vector<std::vector<float>>;

// Runs `op` with its image-shaped tensors stored in each format and expects the same values.
void expect_same_in_both_formats(const std::string& what, const std::function<Outputs(MemoryFormat)>& op) {
  const Outputs nchw = op(kNchw), nhwc = op(kNhwc);
  ASSERT_EQ(nchw.size(), nhwc.size()) << what;
  for (std::size_t i = 0; i < nchw.size(); ++i) EXPECT_EQ(nhwc[i], nchw[i]) << what << ", output " << i;
}

}  // namespace

TEST(MemoryFormat, ChannelsLastStoresNhwcAndReadsBackInLogicalOrder) {
  Context ctx{Device::cpu()};
  const Shape shape{2, 3, 4, 5};
  const std::vector<float> values = random_values(shape.numel(), 7);
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor t = Tensor::from_host(values, shape, ctx, dtype);
    const Tensor cl = t.to_format(ctx, kNhwc);
    ASSERT_TRUE(cl.channels_last());
    EXPECT_EQ(cl.to_vector(ctx), t.to_vector(ctx)) << dtype_name(dtype);
    EXPECT_EQ(cl.contiguous(ctx).to_vector(ctx), t.to_vector(ctx)) << dtype_name(dtype);
    if (dtype != DType::f32) continue;
    // The storage itself is NHWC: element [n, c, h, w] sits at ((n*H + h)*W + w)*C + c.
    const float* stored = cl.data<float>();
    for (std::int64_t n = 0; n < 2; ++n)
      for (std::int64_t c = 0; c < 3; ++c)
        for (std::int64_t h = 0; h < 4; ++h)
          for (std::int64_t w = 0; w < 5; ++w)
            ASSERT_EQ(stored[((n * 4 + h) * 5 + w) * 3 + c],
                      values[static_cast<std::size_t>(((n * 3 + c) * 4 + h) * 5 + w)]);
  }
  std::vector<std::int32_t> ints(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<std::int32_t>(i);
  const Tensor labels = Tensor::from_host(std::span<const std::int32_t>(ints), shape, ctx);
  EXPECT_EQ(labels.to_format(ctx, kNhwc).to_int_vector(ctx), ints) << "i32 tensors change format too";
}

TEST(MemoryFormat, ViewsOfChannelsLastTensorsAreRefused) {
  Context ctx{Device::cpu()};
  const Tensor cl = Tensor::empty({2, 3, 4, 4}, ctx, DType::f32, kNhwc);
  expect_error([&] { (void)cl.reshape({2, 48}); }, {"channels_last"});
  expect_error([&] { (void)cl.view(0, {3}); }, {"channels_last"});
  expect_error([&] { (void)Tensor::empty({2, 3}, ctx, DType::f32, kNhwc); }, {"4-D"});
  EXPECT_EQ(cl.reshape({2, 3, 4, 4}).format(), kNhwc) << "its own shape is still a valid view";
  EXPECT_EQ(cl.slice(1, 2).format(), kNhwc) << "samples are outermost in both formats";
}

TEST(MemoryFormat, OneChannelOrOnePixelChangesFormatWithoutACopy) {
  Context ctx{Device::cpu()};
  for (const Shape& shape : {Shape{4, 1, 5, 5}, Shape{4, 8, 1, 1}}) {
    const Tensor t = input(ctx, shape, 3, kNchw);
    const Tensor cl = t.to_format(ctx, kNhwc);
    EXPECT_EQ(cl.raw(), t.raw()) << fmt::format("{}", shape);
    EXPECT_TRUE(cl.channels_last());
    EXPECT_EQ(cl.to_vector(ctx), t.to_vector(ctx));
  }
}

TEST(MemoryFormat, LayoutAwareOpsGiveTheNchwResult) {
  Context ctx{Device::cpu()};
  Backend& be = ctx.backend();
  const Shape xs{2, 16, 6, 6};
  for (DType dt : {DType::f32, DType::bf16}) {
    const std::string name(dtype_name(dt));
    const Tensor w = input(ctx, {8, 16, 3, 3}, 2, kNchw, dt), bias = input(ctx, {8}, 3, kNchw);
    const Conv2dParams cp{1, 1};
    expect_same_in_both_formats("conv2d forward, backward data and filter " + name, [&](MemoryFormat f) {
      const Tensor x = input(ctx, xs, 1, f, dt), dy = input(ctx, {2, 8, 6, 6}, 4, f, dt);
      Tensor y = Tensor::empty({2, 8, 6, 6}, ctx, dt, f), dx = Tensor::empty_like(x, ctx);
      Tensor dw = Tensor::zeros({8, 16, 3, 3}, ctx), fused = Tensor::empty_like(y, ctx);
      Tensor db = Tensor::zeros({8}, ctx);
      be.conv2d_forward(ctx, x, w, cp, y);
      be.bias_add(ctx, y, bias);
      be.conv2d_bias_relu_forward(ctx, x, w, bias, cp, fused);
      be.conv2d_backward_data(ctx, dy, w, cp, dx);
      be.conv2d_backward_filter(ctx, x, dy, cp, dw, true);
      be.bias_grad(ctx, dy, db, false);
      return Outputs{y.to_vector(ctx), fused.to_vector(ctx), dx.to_vector(ctx), dw.to_vector(ctx), db.to_vector(ctx)};
    });
    expect_same_in_both_formats("conv2d + batch norm (+ residual, ReLU) " + name, [&](MemoryFormat f) {
      const Tensor x = input(ctx, xs, 21, f, dt), residual = input(ctx, {2, 8, 6, 6}, 22, f, dt);
      BatchNormEval bn{input(ctx, {8}, 23, kNchw), input(ctx, {8}, 24, kNchw), input(ctx, {8}, 25, kNchw),
                       Tensor::full({8}, 2.0f, ctx), 1e-5f};
      Tensor y = Tensor::empty({2, 8, 6, 6}, ctx, dt, f), yr = Tensor::empty_like(y, ctx);
      be.conv2d_bn_forward(ctx, x, w, bias, bn, cp, Tensor(), false, y);
      be.conv2d_bn_forward(ctx, x, w, Tensor(), bn, cp, residual.contiguous(ctx), true, yr);
      return Outputs{y.to_vector(ctx), yr.to_vector(ctx)};
    });
    expect_same_in_both_formats("pooling " + name, [&](MemoryFormat f) {
      const Tensor x = input(ctx, xs, 5, f, dt), dy = input(ctx, {2, 16, 3, 3}, 6, f, dt);
      Tensor y = Tensor::empty({2, 16, 3, 3}, ctx, dt, f), arg = Tensor::empty({2, 16, 3, 3}, ctx, DType::i32, f);
      Tensor ay = Tensor::empty_like(y, ctx), dx = Tensor::empty_like(x, ctx), adx = Tensor::empty_like(x, ctx);
      const Pool2dParams pp{};
      be.maxpool2d_forward(ctx, x, pp, y, arg);
      be.maxpool2d_backward(ctx, dy, arg, pp, dx);
      be.avgpool2d_forward(ctx, x, pp, ay);
      be.avgpool2d_backward(ctx, dy, pp, adx);
      const std::vector<std::int32_t> a = arg.to_int_vector(ctx);
      return Outputs{y.to_vector(ctx), std::vector<float>(a.begin(), a.end()), dx.to_vector(ctx), ay.to_vector(ctx),
                     adx.to_vector(ctx)};
    });
    // Gram matrices on channels_last are the same GEMMs with the other operand transposed, which a
    // library may sum in another order: equal within f32 sums' rounding, plus one step of the half
    // format for a half dx (tests/test_ops_channels_last.cpp bounds it element by element).
    const auto gram = [&](MemoryFormat f) {
      const Tensor x = input(ctx, xs, 7, f, dt), dg = input(ctx, {2, 16, 16}, 8, kNchw);
      Tensor g = Tensor::empty({2, 16, 16}, ctx), dx = Tensor::empty_like(x, ctx);
      be.gram_forward(ctx, x, g);
      be.gram_backward(ctx, x, dg, dx);
      return Outputs{g.to_vector(ctx), dx.to_vector(ctx)};
    };
    const Outputs gram_nchw = gram(kNchw), gram_nhwc = gram(kNhwc);
    const double half_step = dt == DType::f32 ? 0.0 : 1.0 / 128;
    for (std::size_t i = 0; i < gram_nchw.size(); ++i)
      expect_close(gram_nhwc[i], std::vector<double>(gram_nchw[i].begin(), gram_nchw[i].end()),
                   "gram " + name + ", output " + std::to_string(i), 1e-6, i == 0 ? 1e-6 : 1e-6 + half_step);
    expect_same_in_both_formats("channel affine and batch norm " + name, [&](MemoryFormat f) {
      const Tensor x = input(ctx, xs, 9, f, dt), dy = input(ctx, xs, 10, f, dt);
      const Tensor gamma = input(ctx, {16}, 11, kNchw), beta = input(ctx, {16}, 12, kNchw);
      Tensor y = Tensor::empty_like(x, ctx), dx = Tensor::empty_like(x, ctx), ry = Tensor::empty_like(x, ctx);
      Tensor rdx = Tensor::empty_like(x, ctx), ey = Tensor::empty_like(x, ctx), ay = Tensor::empty_like(x, ctx);
      Tensor mean = Tensor::zeros({16}, ctx), var = Tensor::full({16}, 1.0f, ctx);
      Tensor sm = Tensor::empty({16}, ctx), si = Tensor::empty({16}, ctx);
      Tensor dgamma = Tensor::zeros({16}, ctx), dbeta = Tensor::zeros({16}, ctx);
      be.channel_affine(ctx, x, gamma, beta, ay);
      be.batchnorm_forward_train(ctx, x, gamma, beta, 1e-5f, 0.1f, mean, var, y, sm, si);
      be.batchnorm_backward(ctx, x, dy, gamma, sm, si, 1e-5f, dx, dgamma, dbeta);
      be.batchnorm_relu_forward_train(ctx, x, gamma, beta, 1e-5f, 0.1f, mean, var, ry, sm, si);
      be.batchnorm_relu_backward(ctx, x, ry, dy, gamma, sm, si, 1e-5f, rdx, dgamma, dbeta);
      be.batchnorm_forward_eval(ctx, x, gamma, beta, mean, var, 1e-5f, ey);
      return Outputs{ay.to_vector(ctx),     y.to_vector(ctx),    dx.to_vector(ctx),   ry.to_vector(ctx),
                     rdx.to_vector(ctx),    ey.to_vector(ctx),   mean.to_vector(ctx), var.to_vector(ctx),
                     dgamma.to_vector(ctx), dbeta.to_vector(ctx)};
    });
  }
  expect_same_in_both_formats("tv loss", [&](MemoryFormat f) {
    const Tensor x = input(ctx, {1, 3, 7, 5}, 13, f);
    Tensor loss = Tensor::empty({1}, ctx), dx = input(ctx, {1, 3, 7, 5}, 14, f);
    be.tv_loss_forward(ctx, x, loss);
    be.tv_loss_backward(ctx, x, 0.5f, dx, true);
    return Outputs{loss.to_vector(ctx), dx.to_vector(ctx)};
  });
}

// Elementwise ops read their inputs in the output's format, so any mix gives the all-NCHW values.
TEST(MemoryFormat, ElementwiseOpsTakeAnyMixOfFormats) {
  Context ctx{Device::cpu()};
  Backend& be = ctx.backend();
  const Shape s{2, 5, 3, 4};
  for (MemoryFormat fx : {kNchw, kNhwc}) {
    for (MemoryFormat fy : {kNchw, kNhwc}) {
      const std::string what = fmt::format("x {} y {}", memory_format_name(fx), memory_format_name(fy));
      const Tensor x = input(ctx, s, 1, fx), b = input(ctx, s, 2, fy);
      Tensor y = input(ctx, s, 3, fy), r = Tensor::empty(s, ctx, DType::f32, fy), loss = Tensor::empty({1}, ctx);
      Tensor da = Tensor::empty(s, ctx, DType::f32, fy), half = Tensor::empty(s, ctx, DType::bf16, fy);
      be.axpy(ctx, 0.5f, x, y);
      be.activation_forward(ctx, Activation::relu, 0.0f, x, r);
      be.mse_loss_forward(ctx, b, x, loss);
      be.mse_loss_backward(ctx, x, b, 1.0f, da);
      be.cast(ctx, x, half);
      const Tensor xn = input(ctx, s, 1, kNchw), bn = input(ctx, s, 2, kNchw);
      Tensor yn = input(ctx, s, 3, kNchw), rn = Tensor::empty(s, ctx), ln = Tensor::empty({1}, ctx);
      Tensor dan = Tensor::empty(s, ctx), halfn = Tensor::empty(s, ctx, DType::bf16);
      be.axpy(ctx, 0.5f, xn, yn);
      be.activation_forward(ctx, Activation::relu, 0.0f, xn, rn);
      be.mse_loss_forward(ctx, bn, xn, ln);
      be.mse_loss_backward(ctx, xn, bn, 1.0f, dan);
      be.cast(ctx, xn, halfn);
      EXPECT_EQ(y.to_vector(ctx), yn.to_vector(ctx)) << what;
      EXPECT_EQ(r.to_vector(ctx), rn.to_vector(ctx)) << what;
      EXPECT_EQ(da.to_vector(ctx), dan.to_vector(ctx)) << what;
      EXPECT_EQ(half.to_vector(ctx), halfn.to_vector(ctx)) << what;
      EXPECT_NEAR(loss.item(ctx), ln.item(ctx), 1e-6 * ln.item(ctx)) << what << " (summed in another order)";
    }
  }
  Tensor mismatched = Tensor::empty({2, 5, 4, 3}, ctx, DType::f32, kNhwc);
  expect_error([&] { be.copy(ctx, input(ctx, s, 1, kNchw), mismatched); }, {"keeps the shape"});
}

namespace {

Sequential layered_cnn(Context& ctx) {
  Sequential net;
  net.add("conv1", std::make_unique<Conv2d>(3, 16, 3, Conv2dParams{1, 1}))
      .add("relu1", std::make_unique<ActivationLayer>(Activation::relu))
      .add("conv2", std::make_unique<Conv2d>(16, 16, 3, Conv2dParams{1, 1}))
      .add("relu2", std::make_unique<ActivationLayer>(Activation::relu))
      .add("pool", std::make_unique<MaxPool2d>(2))
      .add("conv3", std::make_unique<Conv2d>(16, 16, 3, Conv2dParams{1, 1}))
      .add("relu3", std::make_unique<ActivationLayer>(Activation::relu))
      .add("avg", std::make_unique<AvgPool2d>(2))
      .add("flatten", std::make_unique<Flatten>())
      .add("fc", std::make_unique<Linear>(16 * 2 * 2, 5));
  net.build(ctx, 21);
  net.set_input_grad(true);
  return net;
}

}  // namespace

// A bf16 network with channels_last activations computes the NCHW network's outputs and gradients
// (the same kernels on re-laid-out data), fused or layer by layer.
TEST(MemoryFormat, ChannelsLastNetworkMatchesTheNchwNetwork) {
  for (bool fuse : {true, false}) {
    Outputs results[2];
    for (ActivationFormat format : {ActivationFormat::contiguous, ActivationFormat::channels_last}) {
      Context ctx{Device::cpu()};
      ctx.set_precision(Precision::bf16);
      ctx.set_fuse_layers(fuse);
      ctx.set_activation_format(format);
      Sequential net = layered_cnn(ctx);
      const Tensor x = input(ctx, {2, 3, 8, 8}, 31, kNchw);
      net.zero_grad(ctx);
      const Tensor y = net.forward(ctx, x, true);
      const Tensor dx = net.backward(ctx, Tensor::full(y.shape(), 0.125f, ctx));
      EXPECT_FALSE(dx.channels_last()) << "the input gradient comes back as the input was";
      results[format == ActivationFormat::channels_last] = {y.to_vector(ctx), dx.to_vector(ctx),
                                                            net.gradient_block().to_vector(ctx)};
    }
    for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(results[1][i], results[0][i]) << "fuse " << fuse << ", output " << i;
  }
}

// The automatic choice: channels_last for half-precision convolutions where oneDNN runs them
// natively, NCHW for f32 (and whenever it is forced).
TEST(MemoryFormat, ConvolutionsWriteChannelsLastInHalfWhereOneDnnRunsIt) {
  Context ctx{Device::cpu()};
  Conv2d conv(3, 8, 3, Conv2dParams{1, 1});
  Sequential net;
  net.add("conv", std::make_unique<Conv2d>(3, 8, 3, Conv2dParams{1, 1}));
  net.build(ctx, 3);
  const Tensor x = input(ctx, {1, 3, 6, 6}, 1, kNchw);
  EXPECT_FALSE(net.forward(ctx, x, false).channels_last()) << "f32";
  ctx.set_precision(Precision::bf16);
  const bool native = cpu::half_native(DType::bf16, ctx.cpu_conv());
  EXPECT_EQ(ctx.conv_output_format(DType::bf16), native ? kNhwc : kNchw);
  EXPECT_EQ(net.layer("conv").forward(ctx, x, false).channels_last(), native);
  ctx.set_activation_format(ActivationFormat::contiguous);
  EXPECT_FALSE(net.layer("conv").forward(ctx, x, false).channels_last());
  ctx.set_activation_format(ActivationFormat::channels_last);
  EXPECT_TRUE(net.layer("conv").forward(ctx, x, false).channels_last());
  EXPECT_EQ(parse_activation_format("nchw"), ActivationFormat::contiguous);
  expect_error([] { (void)parse_activation_format("nhwc"); }, {"auto, nchw or channels_last"});
}

// One input channel into a channels_last output runs the CPU's own kernel (oneDNN has no NHWC half
// kernel there); it computes the NCHW convolution's values, summed in another order.
TEST(MemoryFormat, OneChannelConvolutionMatchesNchw) {
  Context ctx{Device::cpu()};
  Backend& be = ctx.backend();
  struct Case {
    Shape x, w;
    Conv2dParams p;
  };
  const Case cases[] = {{{3, 1, 28, 28}, {32, 1, 3, 3}, {}},
                        {{2, 1, 9, 7}, {70, 1, 3, 3}, {1, 1}},
                        {{2, 1, 11, 10}, {5, 1, 5, 3}, {2, 1, 2, 1, 1, 2}},
                        {{2, 1, 9, 9}, {64, 1, 3, 3}, {1, 1, 2, 2}}};  // K = 32 n: the register-blocked path
  for (const Case& c : cases) {
    for (DType dt : {DType::f32, DType::bf16}) {
      const Tensor x = input(ctx, c.x, 1, kNchw, dt), w = input(ctx, c.w, 2, kNchw, dt),
                   b = input(ctx, {c.w[0]}, 3, kNchw);
      const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
      Tensor y = Tensor::empty(ys, ctx, dt), yf = Tensor::empty(ys, ctx, dt);
      Tensor cl = Tensor::empty(ys, ctx, dt, kNhwc), clf = Tensor::empty(ys, ctx, dt, kNhwc);
      be.conv2d_forward(ctx, x, w, c.p, y);
      be.conv2d_forward(ctx, x, w, c.p, cl);
      be.conv2d_bias_relu_forward(ctx, x, w, b, c.p, yf);
      be.conv2d_bias_relu_forward(ctx, x, w, b, c.p, clf);
      // Rounding: f32 sums of R*S terms of magnitude <= 1, then (bf16) one rounding: at most one
      // unit in the last place of the result apart (2^-7 relative for bf16).
      const double rtol = dt == DType::f32 ? 1e-5 : 0x1p-7, atol = dt == DType::f32 ? 1e-6 : 1e-3;
      const std::string what = fmt::format("x={} w={} {}", c.x, c.w, dtype_name(dt));
      const auto wide = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
      expect_close(cl.to_vector(ctx), wide(y.to_vector(ctx)), what + " conv", atol, rtol);
      expect_close(clf.to_vector(ctx), wide(yf.to_vector(ctx)), what + " conv+bias+relu", atol, rtol);
      EXPECT_TRUE(cl.channels_last());
    }
  }
}

// An op routed through NCHW copies writes its result back even when the two formats share the
// output's bytes (one channel): the stand-in is the output itself.
TEST(MemoryFormat, RoutedOpsOnOneChannelTensorsWriteInPlace) {
  Context ctx{Device::cpu()};
  const Tensor x = input(ctx, {2, 1, 5, 5}, 4, kNhwc);
  Tensor dx = input(ctx, {2, 1, 5, 5}, 5, kNhwc), expected = dx.contiguous(ctx).clone(ctx);
  ctx.backend().tv_loss_backward(ctx, x, 0.5f, dx, true);
  ctx.backend().tv_loss_backward(ctx, x.contiguous(ctx), 0.5f, expected, true);
  EXPECT_EQ(dx.to_vector(ctx), expected.to_vector(ctx));
}
