#pragma once
// The layer interface: forward saves what backward needs; backward accumulates parameter
// gradients (unless the layer is frozen) and returns the gradient of its input. There is no
// general autograd tape: models are chains, and taps add gradients at their layer on the way back.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

// A trainable tensor and its gradient. `value` and `grad` are views into the model's contiguous
// parameter and gradient blocks once the model is built.
struct Parameter {
  std::string name;  // local name ("weight", "bias"); the model prefixes the layer's name
  Shape shape;
  Tensor value;
  Tensor grad;
  bool trainable = true;  // false for buffers such as BatchNorm's running statistics
  // Under bf16/fp16 autocast, the model's half-precision copy of `value` (a view into one block,
  // refreshed from the f32 master once per step; layers/autocast.hpp). Undefined otherwise.
  Tensor half;
};

// What an optimizer updates: a model's contiguous f32 parameter and gradient blocks (the views
// its layers' Parameters point into). models/network/sequential.hpp implements it; the optimizers
// (layers/optimizer.hpp) see only this, so layers/ does not depend on models/.
class ParameterBlocks {
 public:
  virtual ~ParameterBlocks() = default;
  virtual bool built() const = 0;
  virtual Tensor& parameter_block() = 0;
  virtual Tensor& gradient_block() = 0;
  // Says the parameters were written (an optimizer step), so derived copies are refreshed.
  virtual void parameters_changed() = 0;
  // The trainable parameters of frozen layers (their optimizer state is kept at zero).
  virtual std::vector<Parameter*> frozen_parameters() = 0;

 protected:
  ParameterBlocks() = default;
  ParameterBlocks(const ParameterBlocks&) = default;
  ParameterBlocks(ParameterBlocks&&) = default;
  ParameterBlocks& operator=(const ParameterBlocks&) = default;
  ParameterBlocks& operator=(ParameterBlocks&&) = default;
};

// How weights start. `pytorch`: PyTorch's defaults (Kaiming-uniform with a=sqrt(5), i.e.
// U(±1/sqrt(fan_in)), and the same bound for biases). `vgg`: torchvision's VGG (Kaiming-normal,
// fan_out, ReLU gain for convolutions; N(0, 0.01) for linear layers; zero biases).
enum class InitScheme { pytorch, vgg };

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string type() const = 0;
  // One line for summaries, e.g. "Conv2d(3, 64, kernel_size=3, padding=1)".
  virtual std::string describe() const { return type(); }
  virtual Shape output_shape(const Shape& input) const = 0;
  virtual Tensor forward(Context& ctx, const Tensor& x, bool train) = 0;
  virtual Tensor backward(Context& ctx, const Tensor& dy) = 0;
  // Trainable parameters and buffers, in a fixed order (checkpoints rely on it).
  virtual std::vector<Parameter*> parameters() { return {}; }
  // Whether the layer computes in the context's autocast dtype (layers/autocast.hpp); the others
  // produce the dtype they are given.
  virtual bool autocasts() const { return false; }
  // Writes initial values into the bound parameters; `seed` is this layer's own.
  virtual void initialize(Context& /*ctx*/, std::uint64_t /*seed*/) {}

  // A frozen layer computes no parameter gradients but still passes gradients down.
  void set_frozen(bool frozen) { frozen_ = frozen; }
  bool frozen() const { return frozen_; }
  // The first layer of a network need not compute the gradient of its input (unless someone,
  // like style transfer, wants the image gradient).
  void set_input_grad(bool needed) { input_grad_ = needed; }
  bool input_grad() const { return input_grad_; }

 protected:
  bool frozen_ = false;
  bool input_grad_ = true;
};

using LayerPtr = std::unique_ptr<Layer>;

}  // namespace cudl
