// CUDA kernel audit (kernels/cuda/), values the kernels read on the device and paths no other
// CUDA-vs-CPU test reaches: dropout's Philox counter held in a device tensor (read by the kernel,
// then advanced, across the carry into its high word; vector and scalar paths), the optimizer steps
// with their per-step values in a device tensor (a replayed CUDA graph's form), and total variation
// with an exponent other than 2.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/op_table.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/cuda_vs_cpu_fixture.hpp"

namespace {

using namespace cudl;
using cudl::testing::Both;
using cudl::testing::Side;

class CudaAuditState : public cudl::testing::CudaVsCpuTest<> {};

// The counted op draws the plain op's masks at counter + offset on both backends (the same Philox
// words, y = x * keep rounded once: identical bits), then both counters advance alike. The counter
// starts at 2^32 - 2 so that the second call reads a value whose low word wrapped.
TEST_F(CudaAuditState, CountedDropoutMatchesTheCpuAndAdvancesItsCounter) {
  for (const DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    // 1001: a vector body and a tail; 4096: whole packs; the view one element in: the scalar path.
    for (const std::int64_t n : {std::int64_t{1001}, std::int64_t{4096}, std::int64_t{-999}}) {
      const bool view = n < 0;
      const std::int64_t count = view ? -n : n;
      const std::string what = fmt::format("{} n={}{}", dtype_name(dtype), count, view ? " (unaligned view)" : "");
      Both whole = from(values(count + 1, 20, dtype), Shape{count + 1}, dtype);
      Both x = view ? Both{whole.c.view(1, Shape{count}), whole.g.view(1, Shape{count})}
                    : Both{whole.c.view(0, Shape{count}), whole.g.view(0, Shape{count})};
      const std::int32_t words[2] = {-2, 0};
      const std::span<const std::int32_t> start(words);
      Both counter{Tensor::from_host(start, Shape{2}, cpu()), Tensor::from_host(start, Shape{2}, gpu())};
      for (int call = 0; call < 2; ++call) {
        Both y = zeros(Shape{count}, dtype), mask = zeros(Shape{count}, dtype);
        on_both([&](Backend& b, Context& ctx, Side s) {
          b.dropout_forward(ctx, x.*s, 0.4f, 9, counter.*s, 5, 1003, y.*s, mask.*s);
        });
        expect_bits_equal(y, fmt::format("counted dropout y, call {}, {}", call, what));
        expect_bits_equal(mask, fmt::format("counted dropout mask, call {}, {}", call, what));
        expect_ints_equal(counter, fmt::format("dropout counter after call {}, {}", call, what));
      }
      // 2^32 - 2 + 2 * 1003 = 2^32 + 2004: low word 2004, high word 1.
      EXPECT_EQ(counter.g.to_int_vector(gpu()), (std::vector<std::int32_t>{2004, 1})) << what;
    }
  }
}

// With a scalars tensor the kernels read the rate (SGD) and Adam's step size, bias correction and
// shrink on the device, and the host fields are stale (as in a replayed graph): the result is the
// CPU's with the true values. The kernels round every product and sum as the CPU's loops do and
// use IEEE sqrt and division, so the steps agree bit for bit.
TEST_F(CudaAuditState, OptimizerStepsReadTheirValuesFromADeviceTensor) {
  const Shape shape{129, 5};
  auto scalars_of = [&](const OptimizerStepValues& v) {
    const std::span<const float> s(v.v);
    return Both{Tensor::from_host(s, Shape{kOptimizerScalars}, cpu()),
                Tensor::from_host(s, Shape{kOptimizerScalars}, gpu())};
  };
  for (const bool nesterov : {false, true}) {
    SgdParams truth;
    truth.lr = 0.05f;
    truth.momentum = 0.9f;
    truth.weight_decay = 1e-2f;
    truth.nesterov = nesterov;
    Both param = from(values(shape.numel(), 30), shape), buf = zeros(shape);
    for (int step = 0; step < 3; ++step) {
      truth.lr *= 0.5f;  // a schedule the host fields no longer follow
      const Both scalars = scalars_of(optimizer_scalars(truth));
      Both grad = from(values(shape.numel(), 31 + static_cast<std::uint32_t>(step)), shape);
      on_both([&](Backend& b, Context& ctx, Side s) {
        SgdParams p = truth;
        p.lr = 99.0f;  // stale: the scalars tensor holds this step's rate
        p.scalars = scalars.*s;
        b.sgd_step(ctx, p, param.*s, grad.*s, buf.*s);
      });
    }
    expect_bits_equal(param, nesterov ? "sgd (nesterov) param" : "sgd param");
    expect_bits_equal(buf, nesterov ? "sgd (nesterov) momentum" : "sgd momentum");
  }
  for (const bool decoupled : {false, true}) {
    AdamParams truth;
    truth.lr = 1e-2f;
    truth.weight_decay = 1e-2f;
    truth.decoupled_weight_decay = decoupled;
    Both param = from(values(shape.numel(), 40), shape), m = zeros(shape), v = zeros(shape);
    for (std::int64_t step = 1; step <= 3; ++step) {
      truth.step = step;
      const Both scalars = scalars_of(optimizer_scalars(truth));
      Both grad = from(values(shape.numel(), 41 + static_cast<std::uint32_t>(step)), shape);
      on_both([&](Backend& b, Context& ctx, Side s) {
        AdamParams p = truth;
        p.lr = 99.0f;  // stale, as is the step count
        p.step = 1;
        p.scalars = scalars.*s;
        b.adam_step(ctx, p, param.*s, grad.*s, m.*s, v.*s);
      });
    }
    const std::string name = decoupled ? "adamw" : "adam";
    expect_bits_equal(param, name + " param");
    expect_bits_equal(m, name + " m");
    expect_bits_equal(v, name + " v");
  }
}

// tv_loss with β = 1 and 3: the forward sums (a² + b²)^(β/2) in double on both sides; the backward
// forms each pixel's (β/2)·s^(β/2−1) in float with powf (a few ulps apart between the CUDA and host
// libraries, and nvcc may fuse a² + b²), and adds up to three such terms: each term is at most
// about 1 in size for values in [-1, 1], so the op table's elementwise class (1e-5 + 1e-4 |ref|)
// leaves ten times the expected error.
TEST_F(CudaAuditState, TotalVariationWithAnExponentMatchesTheCpu) {
  const OpTolerance elementwise = op_tolerance(ToleranceClass::elementwise);
  const OpTolerance accumulated = op_tolerance(ToleranceClass::accumulated);
  const Shape shape{2, 3, 11, 9};
  for (const float beta : {1.0f, 3.0f}) {
    const std::string what = fmt::format("beta={}", beta);
    Both x = from(values(shape.numel(), 50), shape), loss = zeros(Shape{1});
    on_both([&](Backend& b, Context& ctx, Side s) { b.tv_loss_forward(ctx, x.*s, loss.*s, beta); });
    expect_close(loss, accumulated, "tv_loss_forward " + what);
    Both dx = from(values(shape.numel(), 51), shape);
    for (const bool accumulate : {false, true}) {
      on_both([&](Backend& b, Context& ctx, Side s) { b.tv_loss_backward(ctx, x.*s, 0.7f, dx.*s, accumulate, beta); });
      expect_close(dx, elementwise, fmt::format("tv_loss_backward {}{}", what, accumulate ? " accumulate" : ""));
    }
  }
}

}  // namespace
