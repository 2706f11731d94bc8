// CUDA kernel audit (kernels/cuda/), layout and launch geometry: the NCHW <-> channels_last
// transpose over partial 32x32 tiles, 2- and 4-byte elements and more samples than a grid's z
// dimension holds; the plane and bias kernels past the grid's y and z limits (65535), where they
// loop; and the 16-byte vector kernels handed views that are not 16-byte aligned (their scalar
// path). Every result here is exact on both backends (a copy, one float add or one rounding of one
// product per element, sums of dyadic values), so CUDA must match the CPU bit for bit.
#include <fmt/format.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/cuda_vs_cpu_fixture.hpp"

namespace {

using namespace cudl;
using cudl::testing::Both;
using cudl::testing::Side;

class CudaAuditLayout : public cudl::testing::CudaVsCpuTest<> {
 protected:
  // The storage bytes of a tensor on either device, as the host sees them.
  std::vector<unsigned char> storage_bytes(const Tensor& t) {
    const Tensor host = t.to(cpu());
    const auto* p = static_cast<const unsigned char*>(host.raw());
    return {p, p + host.nbytes()};
  }
};

// [C, HW] per sample with C = 37 and HW = 65: a full tile and a partial one each way; 64 x 64 whole
// tiles; a map whose width is not a multiple of anything; 70000 samples (past gridDim.z = 65535).
const std::vector<Shape> kTransposeShapes = {Shape{3, 37, 5, 13}, Shape{2, 64, 8, 8}, Shape{2, 5, 33, 3},
                                             Shape{70000, 3, 1, 2}};

TEST_F(CudaAuditLayout, ChannelsLastCopiesAreTheCpusBytes) {
  for (const DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (const Shape& shape : kTransposeShapes) {
      const std::string what = fmt::format("{} {}", dtype_name(dtype), shape);
      const std::vector<float> v = values(shape.numel(), 1, dtype);
      const Tensor c = Tensor::from_host(v, shape, cpu(), dtype).to_format(cpu(), MemoryFormat::channels_last);
      const Tensor g = Tensor::from_host(v, shape, gpu(), dtype).to_format(gpu(), MemoryFormat::channels_last);
      ASSERT_TRUE(g.channels_last()) << what;
      EXPECT_EQ(storage_bytes(g), storage_bytes(c)) << "NCHW -> channels_last " << what;
      // Back on the device: the logical values are the ones it started from (the host reorders
      // to_vector's copy itself, so this checks the device's transpose, not the host's).
      const Tensor back = g.contiguous(gpu());
      ASSERT_FALSE(back.channels_last()) << what;
      EXPECT_EQ(back.to_vector(gpu()), v) << "channels_last -> NCHW " << what;
    }
  }
  // i32 (a max pool's argmax routed through NCHW copies) takes the 4-byte kernel too.
  const Shape shape{3, 37, 5, 13};
  std::vector<std::int32_t> ints(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<std::int32_t>(i * 7919 % 100003) - 50000;
  const std::span<const std::int32_t> span(ints);
  const Tensor c = Tensor::from_host(span, shape, cpu()).to_format(cpu(), MemoryFormat::channels_last);
  const Tensor g = Tensor::from_host(span, shape, gpu()).to_format(gpu(), MemoryFormat::channels_last);
  EXPECT_EQ(storage_bytes(g), storage_bytes(c)) << "i32 NCHW -> channels_last";
  EXPECT_EQ(g.contiguous(gpu()).to_int_vector(gpu()), ints) << "i32 channels_last -> NCHW";
}

// Per-channel and bias kernels where a grid dimension runs out: 70000 samples loop over gridDim.z,
// 70000 channels over bias_grad's gridDim.y, and 2^24 + 1000 channels of plane size 1 over the plane
// grid's y (65535 blocks of 256 rows). Dyadic values keep every sum exact on both sides.
TEST_F(CudaAuditLayout, PlaneAndBiasKernelsLoopPastTheGridLimits) {
  {
    const Shape shape{70000, 2, 3};  // samples past gridDim.z
    Both y = from(dyadic(shape.numel(), 2), shape), bias = from(dyadic(2, 3), Shape{2});
    on_both([&](Backend& b, Context& ctx, Side s) { b.bias_add(ctx, y.*s, bias.*s); });
    expect_bits_equal(y, "bias_add over 70000 samples");
    Both out = zeros(shape), scale = from(dyadic(2, 4), Shape{2});
    on_both([&](Backend& b, Context& ctx, Side s) { b.channel_affine(ctx, y.*s, scale.*s, bias.*s, out.*s); });
    expect_bits_equal(out, "channel_affine over 70000 samples");
    Both dbias = from(dyadic(2, 5), Shape{2});
    on_both([&](Backend& b, Context& ctx, Side s) { b.bias_grad(ctx, y.*s, dbias.*s, true); });
    expect_bits_equal(dbias, "bias_grad over 70000 samples");
  }
  {
    const Shape xs{70000, 1, 4, 4};  // max pooling's planes past gridDim.z
    const Shape ys = pool2d_output_shape(xs, Pool2dParams{});
    Both x = from(dyadic(xs.numel(), 6), xs), y = zeros(ys), argmax = zeros(ys, DType::i32);
    on_both([&](Backend& b, Context& ctx, Side s) { b.maxpool2d_forward(ctx, x.*s, Pool2dParams{}, y.*s, argmax.*s); });
    expect_bits_equal(y, "maxpool2d_forward over 70000 samples");
    expect_ints_equal(argmax, "maxpool2d argmax over 70000 samples");
    Both dy = from(dyadic(ys.numel(), 7), ys), dx = zeros(xs);
    on_both(
        [&](Backend& b, Context& ctx, Side s) { b.maxpool2d_backward(ctx, dy.*s, argmax.*s, Pool2dParams{}, dx.*s); });
    expect_bits_equal(dx, "maxpool2d_backward over 70000 samples");
  }
  {
    const Shape shape{3, 70000};  // bias_grad's channels past its gridDim.y
    Both dy = from(dyadic(shape.numel(), 8), shape), dbias = from(dyadic(70000, 9), Shape{70000});
    on_both([&](Backend& b, Context& ctx, Side s) { b.bias_grad(ctx, dy.*s, dbias.*s, true); });
    expect_bits_equal(dbias, "bias_grad over 70000 channels");
  }
  {
    const std::int64_t channels = (std::int64_t{1} << 24) + 1000;  // past 65535 * 256 plane rows
    const Shape shape{1, channels};
    Both y = from(dyadic(channels, 10), shape), bias = from(dyadic(channels, 11), Shape{channels});
    on_both([&](Backend& b, Context& ctx, Side s) { b.bias_add(ctx, y.*s, bias.*s); });
    expect_bits_equal(y, "bias_add over 2^24 + 1000 channels");
  }
}

// Views one element into their storage: 4 (f32) or 2 (half) bytes off 16-byte alignment, so the
// vector kernels must take their scalar path, with plane sizes (4, 8) that would otherwise take the
// vector one.
TEST_F(CudaAuditLayout, VectorKernelsTakeTheirScalarPathOnUnalignedViews) {
  for (const DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    const std::string name(dtype_name(dtype));
    const Shape shape{3, 2, 2, 4};  // plane size 8: whole packs of 4 floats or 8 halves
    const std::int64_t n = shape.numel();
    auto unaligned = [&](std::uint32_t seed) {
      Both whole = from(values(n + 1, seed, dtype), Shape{n + 1}, dtype);
      return Both{whole.c.view(1, shape), whole.g.view(1, shape)};
    };
    Both x = unaligned(12), y = unaligned(13), out = unaligned(14), mask = unaligned(15);
    Both bias = from(dyadic(2, 16), Shape{2}), scale = from(dyadic(2, 17), Shape{2});
    on_both([&](Backend& b, Context& ctx, Side s) { b.bias_add(ctx, y.*s, bias.*s); });
    expect_bits_equal(y, "bias_add on an unaligned view " + name);
    on_both([&](Backend& b, Context& ctx, Side s) { b.channel_affine(ctx, x.*s, scale.*s, bias.*s, out.*s); });
    expect_bits_equal(out, "channel_affine on an unaligned view " + name);
    on_both([&](Backend& b, Context& ctx, Side s) { b.channel_affine_backward(ctx, x.*s, scale.*s, out.*s); });
    expect_bits_equal(out, "channel_affine_backward on an unaligned view " + name);
    on_both([&](Backend& b, Context& ctx, Side s) { b.mul(ctx, x.*s, y.*s, out.*s); });
    expect_bits_equal(out, "mul on an unaligned view " + name);
    on_both([&](Backend& b, Context& ctx, Side s) { b.activation_forward(ctx, Activation::relu, 0.0f, x.*s, out.*s); });
    expect_bits_equal(out, "relu on an unaligned view " + name);
    on_both([&](Backend& b, Context& ctx, Side s) { b.dropout_forward(ctx, x.*s, 0.3f, 5, 3, out.*s, mask.*s); });
    expect_bits_equal(out, "dropout y on an unaligned view " + name);
    expect_bits_equal(mask, "dropout mask on an unaligned view " + name);
    const DType other = dtype == DType::f32 ? DType::bf16 : DType::f32;
    Both cast = zeros(shape, other);
    on_both([&](Backend& b, Context& ctx, Side s) { b.cast(ctx, x.*s, cast.*s); });
    expect_bits_equal(cast, "cast from an unaligned view " + name);
  }
}

}  // namespace
