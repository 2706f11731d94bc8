#pragma once
// The enums and parameter structs that both the op interface (engine/backend.hpp) and the CUDA
// kernels (kernels/cuda/*.cu) use. This header includes nothing but <cstdint>, so nvcc compiles
// it (fmt, which the rest of engine/ pulls in, does not compile under nvcc): one definition, no
// mirrored copies kept in step by switches.
#include <cstdint>

namespace cudl {

// relu6 is min(max(x, 0), 6) (torch.nn.ReLU6, MobileNet's activation).
enum class Activation : int { relu, leaky_relu, sigmoid, tanh, relu6 };

// Whether an activation's gradient is computed from its input x (the ReLU family: piecewise
// linear, so y cannot tell where x was) or from its output y (sigmoid, tanh).
constexpr bool activation_grad_reads_x(Activation a) {
  return a == Activation::relu || a == Activation::leaky_relu || a == Activation::relu6;
}

// Arithmetic on one-element device tensors (L-BFGS's scalars stay on the device): see scalar_op.
// The curvature threshold is PyTorch's and optim.lbfgs's: a pair with yᵀs <= 1e-10 is not used.
enum class ScalarOp : int {
  mul,         // out = a * b
  sub,         // out = a - b
  div,         // out = a / b
  safe_recip,  // out = a > 1e-10 ? 1 / a : 0        (rho = 1 / yᵀs, 0 drops the pair)
  safe_ratio,  // out = a > 1e-10 ? a / b : out      (H0 = yᵀs / yᵀy, kept when the pair is dropped)
  first_step,  // out = min(1, 1 / a)                (the first L-BFGS step, a = Σ|g|)
  // out = min(1, b / (sqrt(a) + 1e-6)) - 1  (gradient-norm clipping, a = Σg², b = the limit: PyTorch's
  // clip factor minus one, so axpy_scalar(g, g) with it scales g and leaves it unchanged when 0)
  clip_delta,
};

// What a kernel found that it cannot throw on (no exception crosses the device): it sets the
// context's device fault word, and the next synchronising host read on that context throws.
enum class DeviceFault : int {
  none = 0,
  label_out_of_range = 1,         // softmax_cross_entropy / accuracy: a label outside [0, K)
  argmax_out_of_range = 2,        // maxpool2d_backward: an argmax entry outside its input plane
  gather_index_out_of_range = 3,  // gather_rows: an index outside [0, N) of src's rows
};

// The values of an optimizer step that change from step to step (the learning rate of a schedule,
// Adam's bias corrections), as one f32 [kOptimizerScalars] tensor on the op's device. A step that
// is replayed as a CUDA graph (engine/step_graph.hpp) cannot take them as kernel arguments, which
// the graph would freeze at their first values: the host writes them into this tensor before each
// step (Optimizer::prepare) and the kernels read them there. optimizer_scalars() computes them, on
// the host, as both backends do from the host fields, so either way gives the same bits.
enum OptimizerScalar : int {
  kOptLr = 0,            // SGD: the learning rate
  kOptAdamStepSize = 1,  // Adam: lr / (1 - beta1^step)
  kOptAdamInvSqrtBc2,    // Adam: 1 / sqrt(1 - beta2^step)
  kOptAdamShrink,        // AdamW: 1 - lr * weight_decay (1 otherwise)
  kOptimizerScalars
};

}  // namespace cudl
