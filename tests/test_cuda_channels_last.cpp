// channels_last (NHWC) convolutions on cuDNN (issue 20, GPU item 3): every convolution direction,
// the fused convolution + bias + ReLU and bias_add on CUDA with NHWC tensors, and with the mixes a
// network makes (its first layer reads NCHW and writes NHWC), against the CPU backend's NCHW result
// in f32, bf16 and f16; and a small bf16 network trained a step on CUDA with channels_last
// activations against the same network with NCHW ones. Inputs are drawn in f32 and rounded to the
// data's dtype on the host, so both sides compute from the same values; the CPU side runs in f32.
// Tolerances are test_cuda_vs_cpu_half.cpp's: a cuDNN result in half precision within 4 unit
// roundoffs of the output's magnitude, an f32 one within the op table's "accumulated" class (the
// GPU context is strict fp32, its default). Each test skips with "no CUDA device" where there is
// none; the suite name matches the GPU kit's CUDA filter (tools/gpu-check.sh: *Cuda*).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/io/conv_algo_cache.hpp"
#include "cudl/engine/op_table.hpp"
#include "cudl/engine/tensor.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/network/sequential.hpp"
#include "tests/cuda_vs_cpu_fixture.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;

constexpr MemoryFormat kNchw = MemoryFormat::contiguous;
constexpr MemoryFormat kNhwc = MemoryFormat::channels_last;

// The formats of one call's x-like and y-like tensors (x and y, dx and dy): both NHWC, and the
// two mixes.
struct Formats {
  MemoryFormat x, y;
};
const std::vector<Formats> kFormatMixes = {{kNhwc, kNhwc}, {kNchw, kNhwc}, {kNhwc, kNchw}};

std::string label(const std::string& what, DType dtype, Formats f) {
  return what + " (" + std::string(dtype_name(dtype)) + ", x " + std::string(memory_format_name(f.x)) + ", y " +
         std::string(memory_format_name(f.y)) + ")";
}

class CudaChannelsLast : public cudl::testing::CudaVsCpuTest<::testing::TestWithParam<DType>> {
 protected:
  DType dtype() const { return GetParam(); }
  // The dtype's unit roundoff (0 for f32, whose tolerance is the op table's).
  float u() const {
    if (dtype() == DType::bf16) return 1.0f / 256.0f;
    return dtype() == DType::f16 ? 1.0f / 2048.0f : 0.0f;
  }

  // Seeded values in [-1, 1] that the dtype represents exactly.
  std::vector<float> values(std::int64_t n, std::uint32_t seed) const {
    return CudaVsCpuTest::values(n, seed, dtype());
  }
  Tensor on_cpu(const std::vector<float>& v, const Shape& s) { return Tensor::from_host(v, s, cpu()); }
  // On the GPU in the test's dtype (or `dt`), stored in `format`.
  Tensor on_gpu(const std::vector<float>& v, const Shape& s, MemoryFormat format, DType dt) {
    return Tensor::from_host(v, s, gpu(), dt).to_format(gpu(), format);
  }
  Tensor on_gpu(const std::vector<float>& v, const Shape& s, MemoryFormat format) {
    return on_gpu(v, s, format, dtype());
  }

  // A convolution's result: the op table's class in f32, 4 u of the largest |ref| in half.
  OpTolerance tolerance(const std::vector<float>& ref) const {
    if (dtype() == DType::f32) return op_tolerance(ToleranceClass::accumulated);
    float m = 0.0f;
    for (float v : ref) m = std::max(m, std::fabs(v));
    return {4.0f * u() * std::max(m, 1e-3f), 4.0f * u()};
  }

  // `got` (CUDA, any format) against the CPU's NCHW `ref`, elementwise, in logical order.
  void expect_close(const Tensor& ref, const Tensor& got, const std::string& what) {
    ASSERT_EQ(ref.shape(), got.shape()) << what;
    const std::vector<float> r = ref.to_vector(cpu());
    expect_close_values(r, got.to_vector(gpu()), tolerance(r), what);
  }

  void conv_cases();
  void fused_cases();
};

struct ConvCase {
  Shape x, w;
  Conv2dParams p;
};

// A tensor-core-friendly layer (C and K multiples of 8), a network's first layer (C = 3), a strided
// 1x1 convolution and a grouped one (cuDNN may refuse NHWC there: the call then runs on NCHW copies).
const std::vector<ConvCase> kCases = {
    {Shape{2, 16, 8, 8}, Shape{32, 16, 3, 3}, Conv2dParams{1, 1, 1, 1, 1, 1}},
    {Shape{2, 3, 9, 9}, Shape{8, 3, 3, 3}, Conv2dParams{1, 1, 1, 1, 1, 1}},
    {Shape{1, 8, 11, 11}, Shape{16, 8, 1, 1}, Conv2dParams{0, 0, 2, 2, 1, 1}},
    {Shape{2, 16, 8, 8}, Shape{16, 8, 3, 3}, Conv2dParams{1, 1, 1, 1, 1, 1, 2}},
};

void CudaChannelsLast::conv_cases() {
  Backend& cb = cpu().backend();
  Backend& gb = gpu().backend();
  std::uint32_t seed = 40;
  for (const ConvCase& c : kCases) {
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    const std::vector<float> xv = values(c.x.numel(), seed++), wv = values(c.w.numel(), seed++);
    const std::vector<float> dyv = values(ys.numel(), seed++), dw0 = values(c.w.numel(), seed++);
    const Tensor x = on_cpu(xv, c.x), w = on_cpu(wv, c.w), dy = on_cpu(dyv, ys);
    Tensor y = Tensor::zeros(ys, cpu()), dx = Tensor::zeros(c.x, cpu());
    cb.conv2d_forward(cpu(), x, w, c.p, y);
    cb.conv2d_backward_data(cpu(), dy, w, c.p, dx);
    Tensor dw = on_cpu(dw0, c.w), dw_sum = on_cpu(dw0, c.w);
    cb.conv2d_backward_filter(cpu(), x, dy, c.p, dw, false);
    cb.conv2d_backward_filter(cpu(), x, dy, c.p, dw_sum, true);

    const Tensor gw = on_gpu(wv, c.w, kNchw);  // filters stay KCRS
    for (const Formats f : kFormatMixes) {
      const std::string shapes = " x=" + fmt::format("{} w={} groups={}", c.x, c.w, c.p.groups);
      Tensor gy = Tensor::empty(ys, gpu(), dtype(), f.y);
      gb.conv2d_forward(gpu(), on_gpu(xv, c.x, f.x), gw, c.p, gy);
      EXPECT_EQ(gy.format(), f.y);
      expect_close(y, gy, label("conv2d_forward" + shapes, dtype(), f));

      Tensor gdx = Tensor::empty(c.x, gpu(), dtype(), f.x);
      gb.conv2d_backward_data(gpu(), on_gpu(dyv, ys, f.y), gw, c.p, gdx);
      expect_close(dx, gdx, label("conv2d_backward_data" + shapes, dtype(), f));

      // dw in the data's dtype, and (half data) into an f32 master gradient, overwritten and accumulated.
      const Tensor gx = on_gpu(xv, c.x, f.x), gdy = on_gpu(dyv, ys, f.y);
      Tensor gdw = on_gpu(dw0, c.w, kNchw);
      gb.conv2d_backward_filter(gpu(), gx, gdy, c.p, gdw, false);
      expect_close(dw, gdw, label("conv2d_backward_filter" + shapes, dtype(), f));
      if (dtype() == DType::f32) {
        Tensor gsum = on_gpu(dw0, c.w, kNchw);
        gb.conv2d_backward_filter(gpu(), gx, gdy, c.p, gsum, true);
        expect_close(dw_sum, gsum, label("conv2d_backward_filter accumulate" + shapes, dtype(), f));
        continue;
      }
      for (const bool accumulate : {false, true}) {
        Tensor master = on_gpu(dw0, c.w, kNchw, DType::f32);
        gb.conv2d_backward_filter(gpu(), gx, gdy, c.p, master, accumulate);
        expect_close(accumulate ? dw_sum : dw, master,
                     label(std::string("conv2d_backward_filter into f32") + (accumulate ? " accumulate" : "") + shapes,
                           dtype(), f));
      }
    }
  }
}

TEST_P(CudaChannelsLast, ConvolutionsMatchTheCpuNchwResult) {
  gpu().set_conv_search(ConvSearch::heuristic);
  conv_cases();
}

// The measured search times the candidates on NHWC descriptors and keys its choice on the layouts
// (in memory and in the on-disk cache): an NCHW winner is never reused for an NHWC call.
TEST_P(CudaChannelsLast, ConvolutionsMatchTheCpuNchwResultWithMeasuredSearch) {
  gpu().set_conv_search(ConvSearch::measured);
  conv_cases();
  // In half precision the first case (C and K multiples of 8: tensor-core shapes) ran on NHWC
  // descriptors, so its measured choices are in the on-disk cache under NHWC keys, beside (never
  // instead of) NCHW ones. (f32 NHWC, and the mixes, may be refused by cuDNN and then run on NCHW
  // copies, correct and slower: the run's stderr names such calls, and no key is written.)
  if (dtype() == DType::f32) return;
  const std::filesystem::path file = default_conv_algo_cache_file();
  if (file.empty() || !std::filesystem::exists(file))
    GTEST_SKIP() << "no cache file (no $XDG_CACHE_HOME or $HOME, or not writable): the file part is not checked";
  const std::string text = cudl::testing::slurp(file.string());
  for (const std::string direction : {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"})
    EXPECT_TRUE(cudl::testing::contains(
        text, direction + " " + std::string(dtype_name(dtype())) + " NHWC x=[2,16,8,8] w=[32,16,3,3]"))
        << direction << ": no NHWC entry in " << file.string() << " (cuDNN refused NHWC? see the run's stderr)";
}

void CudaChannelsLast::fused_cases() {
  Backend& cb = cpu().backend();
  Backend& gb = gpu().backend();
  std::uint32_t seed = 60;
  for (const ConvCase& c : kCases) {
    if (c.p.groups != 1) continue;  // the fused op takes dense convolutions only
    const Shape ys = conv2d_output_shape(c.x, c.w, c.p);
    const std::vector<float> xv = values(c.x.numel(), seed++), wv = values(c.w.numel(), seed++);
    std::vector<float> bv = values(c.w[0], seed++);  // f32 whatever the data's dtype
    const Tensor x = on_cpu(xv, c.x), w = on_cpu(wv, c.w), bias = on_cpu(bv, Shape{c.w[0]});
    for (const bool with_bias : {true, false}) {
      Tensor y = Tensor::zeros(ys, cpu());
      cb.conv2d_bias_relu_forward(cpu(), x, w, with_bias ? bias : Tensor(), c.p, y);
      const Tensor gbias = Tensor::from_host(bv, Shape{c.w[0]}, gpu());
      for (const Formats f : kFormatMixes) {
        Tensor gy = Tensor::empty(ys, gpu(), dtype(), f.y);
        gb.conv2d_bias_relu_forward(gpu(), on_gpu(xv, c.x, f.x), on_gpu(wv, c.w, kNchw), with_bias ? gbias : Tensor(),
                                    c.p, gy);
        expect_close(y, gy,
                     label(fmt::format("conv2d_bias_relu_forward x={} w={} bias={}", c.x, c.w, with_bias), dtype(), f));
      }
    }
  }
}

TEST_P(CudaChannelsLast, FusedConvBiasReluMatchesTheCpuNchwResult) {
  gpu().set_conv_search(ConvSearch::heuristic);
  fused_cases();
  gpu().set_conv_search(ConvSearch::measured);  // times fused against unfused per shape and layout
  fused_cases();
}

// bias_add's own NHWC kernel: whole 16-byte packs of channels (16), and the scalar path (3).
TEST_P(CudaChannelsLast, BiasAddMatchesTheCpuNchwResult) {
  for (const std::int64_t channels : {16, 3}) {
    const Shape s{2, channels, 5, 7};
    const std::vector<float> yv = values(s.numel(), 70), bv = values(channels, 71);
    Tensor y = on_cpu(yv, s);
    cpu().backend().bias_add(cpu(), y, on_cpu(bv, Shape{channels}));
    Tensor gy = on_gpu(yv, s, kNhwc);
    gpu().backend().bias_add(gpu(), gy, Tensor::from_host(bv, Shape{channels}, gpu()));
    ASSERT_TRUE(gy.channels_last());
    // One rounding of an f32 sum: the elementwise class (a half result within one unit roundoff).
    const std::vector<float> r = y.to_vector(cpu()), g = gy.to_vector(gpu());
    for (std::size_t i = 0; i < r.size(); ++i)
      ASSERT_NEAR(g[i], r[i], 1e-6f + (u() + 1e-6f) * std::fabs(r[i])) << "bias_add C=" << channels << " [" << i << "]";
  }
}

// bias_grad's own NHWC kernel (columns of [N*H*W, C] summed in double, like the CPU's NCHW sums):
// fewer channels than a warp, more than a block's threads, and one run per row-chunk; overwriting and
// accumulating.
TEST_P(CudaChannelsLast, BiasGradMatchesTheCpuNchwResult) {
  const OpTolerance tol = op_tolerance(ToleranceClass::double_sum);
  for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{3, 300, 4, 5}, Shape{4, 16, 33, 17}, Shape{0, 8, 2, 2}}) {
    const std::vector<float> dyv = values(s.numel(), 72), start = values(s[1], 73);
    for (const bool accumulate : {false, true}) {
      Tensor db = on_cpu(start, Shape{s[1]});
      cpu().backend().bias_grad(cpu(), on_cpu(dyv, s), db, accumulate);
      Tensor gdb = Tensor::from_host(start, Shape{s[1]}, gpu());
      gpu().backend().bias_grad(gpu(), on_gpu(dyv, s, kNhwc), gdb, accumulate);
      const std::vector<float> r = db.to_vector(cpu()), g = gdb.to_vector(gpu());
      for (std::size_t i = 0; i < r.size(); ++i)
        ASSERT_NEAR(g[i], r[i], 1e-6f + tol.rtol * std::fabs(r[i]))
            << "bias_grad dy=" << fmt::format("{}", s) << " accumulate " << accumulate << " [" << i << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaChannelsLast, ::testing::Values(DType::f32, DType::bf16, DType::f16),
                         [](const ::testing::TestParamInfo<DType>& p) { return std::string(dtype_name(p.param)); });

// conv - relu - pool - conv - relu - flatten - linear, seeded.
Sequential small_cnn(Context& ctx) {
  Sequential net;
  net.add("conv1", std::make_unique<Conv2d>(3, 16, 3, Conv2dParams{1, 1}))
      .add("relu1", std::make_unique<ActivationLayer>(Activation::relu))
      .add("pool", std::make_unique<MaxPool2d>(2))
      .add("conv2", std::make_unique<Conv2d>(16, 16, 3, Conv2dParams{1, 1}))
      .add("relu2", std::make_unique<ActivationLayer>(Activation::relu))
      .add("flatten", std::make_unique<Flatten>())
      .add("fc", std::make_unique<Linear>(16 * 4 * 4, 10));
  net.build(ctx, 23);
  net.set_input_grad(true);
  return net;
}

// A bf16 network on CUDA with channels_last activations (its first convolution reads the NCHW
// input and writes NHWC) computes what it computes with NCHW activations: outputs, the input
// gradient and every parameter gradient, fused and layer by layer. cuDNN picks other algorithms
// for the other layout, so the two agree to bf16 rounding through the layers (16 u of each
// result's magnitude), not bit for bit.
TEST(CudaChannelsLastNetwork, Bf16NetworkMatchesTheNchwNetworkOnCuda) {
  CUDL_REQUIRE_CUDA();
  const Shape xs{4, 3, 8, 8};
  std::mt19937 rng(80);
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> xv(static_cast<std::size_t>(xs.numel()));
  for (float& v : xv) v = dist(rng);
  for (const bool fuse : {true, false}) {
    std::vector<std::vector<float>> results[2];
    for (const ActivationFormat format : {ActivationFormat::contiguous, ActivationFormat::channels_last}) {
      Context ctx{Device::cuda(0)};
      ctx.set_precision(Precision::bf16);
      ctx.set_fuse_layers(fuse);
      ctx.set_activation_format(format);
      Sequential net = small_cnn(ctx);
      const Tensor x = Tensor::from_host(xv, xs, ctx);
      EXPECT_EQ(net.layer("conv1").forward(ctx, x, false).channels_last(), format == ActivationFormat::channels_last);
      net.zero_grad(ctx);
      const Tensor y = net.forward(ctx, x, true);
      const Tensor dx = net.backward(ctx, Tensor::full(y.shape(), 0.125f, ctx));
      EXPECT_FALSE(dx.channels_last()) << "the input gradient comes back as the input was";
      results[format == ActivationFormat::channels_last] = {y.to_vector(ctx), dx.to_vector(ctx),
                                                            net.gradient_block().to_vector(ctx)};
    }
    const char* names[] = {"output", "input gradient", "parameter gradients"};
    for (std::size_t i = 0; i < 3; ++i) {
      const std::vector<float>&ref = results[0][i], &got = results[1][i];
      ASSERT_EQ(ref.size(), got.size());
      float m = 0.0f;
      for (float v : ref) m = std::max(m, std::fabs(v));
      ASSERT_GT(m, 0.0f) << names[i] << " is all zeros: the comparison would prove nothing";
      const float k = 16.0f / 256.0f;
      int failures = 0;
      for (std::size_t j = 0; j < ref.size(); ++j)
        if (!(std::fabs(got[j] - ref[j]) <= k * m + k * std::fabs(ref[j])) && ++failures <= 5)
          ADD_FAILURE() << names[i] << " [" << j << "] (fuse " << fuse << "): channels_last " << got[j] << " vs NCHW "
                        << ref[j];
      EXPECT_EQ(failures, 0) << names[i] << " (fuse " << fuse << ")";
    }
  }
}

}  // namespace
