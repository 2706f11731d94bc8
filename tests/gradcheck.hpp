#pragma once
// Finite-difference gradient checks (after Caffe's GradientChecker): every op with a backward is
// checked by perturbing each input element (or a strided sample of them) by ±step, recomputing
// a scalar loss, and comparing the central difference with the analytic gradient.
//
// The ops compute in f32, so the loss is accumulated in double on the host and the step is
// largish (1e-2); tolerances are relative. Elements within `kink` of a non-differentiable point
// (ReLU at 0, max-pool ties) can be skipped through `skip`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl::testing {

struct GradCheckOptions {
  float step = 1e-2f;
  double rtol = 2e-2;
  double atol = 2e-3;
  std::int64_t max_checks = 256;                              // checks every element when it has at most this many
  std::function<bool(std::int64_t index, float value)> skip;  // e.g. points too close to a kink
};

// Σ w_i y_i in double: the scalar loss whose gradient with respect to y is w.
inline double weighted_sum(const std::vector<float>& y, const std::vector<float>& w) {
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * w[i];
  return s;
}

// `input` is perturbed in place (and restored); `loss` recomputes the scalar from the current
// contents of every input; `analytic` is d loss / d input as computed by the backward pass.
inline void expect_gradient_matches(Context& ctx, Tensor& input, const Tensor& analytic,
                                    const std::function<double()>& loss, const std::string& what,
                                    const GradCheckOptions& opts = {}) {
  ASSERT_EQ(input.shape(), analytic.shape()) << what;
  std::vector<float> x = input.to_vector(ctx);
  std::vector<float> grad = analytic.to_vector(ctx);
  const auto n = static_cast<std::int64_t>(x.size());
  const std::int64_t stride = n <= opts.max_checks ? 1 : (n + opts.max_checks - 1) / opts.max_checks;
  auto write = [&](std::int64_t i, float v) {
    copy_bytes(ctx, static_cast<float*>(input.raw()) + i, input.device(), &v, Device::cpu(), sizeof(float));
  };
  int failures = 0, checked = 0;
  for (std::int64_t i = 0; i < n; i += stride) {
    if (opts.skip && opts.skip(i, x[static_cast<std::size_t>(i)])) continue;
    const float original = x[static_cast<std::size_t>(i)];
    write(i, original + opts.step);
    const double plus = loss();
    write(i, original - opts.step);
    const double minus = loss();
    write(i, original);
    const double numeric = (plus - minus) / (2.0 * static_cast<double>(opts.step));
    const double a = grad[static_cast<std::size_t>(i)];
    const double tolerance = opts.atol + opts.rtol * std::max(std::abs(a), std::abs(numeric));
    ++checked;
    if (std::abs(a - numeric) > tolerance && ++failures <= 5) {
      ADD_FAILURE() << what << ": d/dx[" << i << "] analytic " << a << " vs numeric " << numeric << " (x=" << original
                    << ", tolerance " << tolerance << ")";
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << checked << " checked elements differ";
  EXPECT_GT(checked, 0) << what << ": no element was checked";
}

}  // namespace cudl::testing
