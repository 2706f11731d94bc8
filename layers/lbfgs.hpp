#pragma once
// L-BFGS on the device, one function evaluation per iteration and no line search: Torch's
// optim.lbfgs as jcjohnson/neural-style runs it (learning rate 1, no tolerance checks) and
// PyTorch's torch.optim.LBFGS without line_search_fn. Every scalar (yᵀs, ρ, α, β, the initial
// Hessian scale) lives in a one-element device tensor, so an iteration never waits for the device.
//
// One difference from both: a curvature pair with yᵀs <= 1e-10 is still stored but with ρ = 0,
// which makes it contribute nothing (deciding on the host whether to keep it would need a sync);
// it therefore takes a history slot that the references would leave to an older pair.
#include <cstdint>

#include "cudl/engine/tensor.hpp"

namespace cudl {

class Context;

struct LbfgsOptions {
  int history = 100;  // curvature pairs kept
  float lr = 1.0f;    // fixed step length; the first step is lr * min(1, 1 / Σ|g|)
};

class Lbfgs {
 public:
  // Allocates the history (2 * history * numel floats) for parameters of `shape` on ctx's device.
  Lbfgs(Context& ctx, const Shape& shape, LbfgsOptions options = {});

  // One iteration: `grad` is the gradient at `x`; moves x (in place) along the L-BFGS direction.
  void step(Context& ctx, Tensor& x, const Tensor& grad);

  std::int64_t iterations() const { return iterations_; }
  const LbfgsOptions& options() const { return options_; }

 private:
  Tensor s_slot(int i) const;
  Tensor y_slot(int i) const;
  Tensor scalar(const Tensor& block, int i) const { return block.view(i, Shape{1}); }

  LbfgsOptions options_;
  Shape shape_;
  Tensor s_, y_;        // [history, numel]: steps x_{k+1} - x_k and gradient changes
  Tensor rho_, alpha_;  // [history]
  Tensor g_prev_, d_;   // previous gradient, search direction
  Tensor scalars_;      // [4]: gamma (H0 scale), ys, yy, tmp
  std::int64_t iterations_ = 0;
  int count_ = 0;    // pairs stored (<= history)
  int newest_ = -1;  // slot of the newest pair
};

}  // namespace cudl
