#pragma once
// A network of named layers (torchvision's names: "features.0", "layer1.0.conv1") with named
// taps: the output of any layer can be read after forward, and a gradient can be added at any
// layer's output on the way back (style transfer's losses). Parameters, gradients and buffers
// live in one contiguous block each, carved into per-layer views, so an optimizer steps over
// the whole model in one fused kernel.
//
// A layer reads the previous layer's output unless it names its inputs: earlier layers, or
// "input" (the network's input). Several inputs go to a merge layer (layers/merge.hpp: Add for a
// residual connection, Concat). So the layers, in the order they were added, are a graph in
// topological order: forward runs them in that order and drops each output after its last
// reader; backward runs them in reverse, summing the gradients of an output read by several
// layers. A chain is the graph where no layer names its inputs.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cudl/layers/layer.hpp"
#include "cudl/models/network/fusion.hpp"
#include "cudl/models/network/fusion_bn.hpp"
#include "cudl/models/network/fusion_bn_relu.hpp"

namespace cudl {

struct NamedParameter {
  std::string name;  // "features.0.weight"
  Parameter* parameter;
};

struct LayerSummary {
  std::string name, description;
  std::vector<std::string> inputs;  // the layer's named inputs (empty: the previous layer's output)
  Shape output_shape;
  std::int64_t params = 0;
  DType output_dtype = DType::f32;  // under the summary's compute dtype
  // A Conv2d or Linear: the ReLU it runs fused with when Context::fuse_layers is on. A ReLU: the layer it is
  // fused into. Empty otherwise.
  std::string fused_with;
};

class Sequential : public ParameterBlocks {
 public:
  Sequential() = default;
  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  // The layer reads `inputs` (names of layers added before it, or "input"); none: the previous
  // layer's output (the network's input for the first layer). More than one needs a MergeLayer.
  Sequential& add(std::string name, LayerPtr layer, const std::vector<std::string>& inputs = {});
  // The named inputs of layer `index` (empty when it reads the previous layer's output).
  std::vector<std::string> input_names(std::size_t index) const;
  // Whether some layer names its inputs (the model is not a plain chain).
  bool is_graph() const;

  // Allocates the parameter, gradient and buffer blocks on ctx's device, binds every layer's views
  // and initialises them from `seed` (each layer draws from its own derived seed).
  void build(Context& ctx, std::uint64_t seed);
  bool built() const override { return built_; }

  // Under bf16/fp16 autocast (ctx.precision()) the layers compute in half precision from a half
  // copy of the parameters, refreshed from the f32 masters when they have changed; the output is
  // returned in f32 (a classifier's logits go to an f32 loss, as under torch.autocast's
  // float32 list), taps keep the layer's own dtype.
  Tensor forward(Context& ctx, const Tensor& x, bool train);
  // Runs backward from the last layer with dy; `tap_grads` adds gradients at layer outputs (keyed by
  // layer name) on the way back. Returns the gradient of the input (undefined unless input_grad).
  // dy and the tap gradients may be f32 or the layer output's dtype (they are cast to it).
  Tensor backward(Context& ctx, const Tensor& dy, const std::map<std::string, Tensor>& tap_grads = {});

  // Layers whose output forward should keep; read them with tap() afterwards.
  void set_taps(std::vector<std::string> names);
  const Tensor& tap(const std::string& name) const;

  // Puts `layer` in place of the layer called `name`, keeping its name (fine-tuning's new head).
  void replace(const std::string& name, LayerPtr layer);
  // Drops every layer after `name` (style transfer needs VGG only up to its deepest loss layer).
  void truncate_after(const std::string& name);
  void set_frozen(bool frozen);
  // Whether backward computes the gradient of the network's input (the image, for style transfer).
  // Off by default: then no layer below the first one that learns computes an input gradient, and
  // layers there that learn nothing skip backward altogether.
  void set_input_grad(bool needed);
  void zero_grad(Context& ctx);
  // Says the f32 parameters were written (an optimizer step, a load): the half copies autocast
  // reads are refreshed before the next forward. The optimizer and the loaders call it; so must a
  // caller that writes parameter_block() itself.
  void parameters_changed() override { half_stale_ = true; }
  // Promises that nothing writes the parameters while the hold lives (Backend::hold_constant):
  // inference and style transfer take one, and the CPU convolutions stop re-laying out their
  // weights on every call. Not while training: the optimizer writes them every step.
  [[nodiscard]] ConstantHold hold_parameters_constant(Context& ctx);

  std::vector<NamedParameter> parameters();  // trainable, in order
  std::vector<NamedParameter> buffers();     // non-trainable state (BatchNorm running stats)
  std::int64_t parameter_count() const;      // trainable elements
  Tensor& parameter_block() override { return params_; }
  Tensor& gradient_block() override { return grads_; }
  std::vector<Parameter*> frozen_parameters() override;  // trainable ones of frozen layers

  // Called during backward after each layer that learns has written its gradients, with the
  // offset in gradient_block() from which every gradient is final (backward runs the layers in
  // reverse and their parameters lie in layer order). Data parallel starts bucketed all-reduces
  // from it (models/train/gradient_buckets.hpp). Empty: none.
  void set_gradients_ready_hook(std::function<void(std::int64_t ready_from)> hook) {
    gradients_ready_ = std::move(hook);
  }

  // Layer fusion (models/network/fusion.hpp): when ctx.fuse_layers() is on, forward runs each
  // Conv2d or Linear whose only reader is a ReLU as one op with it, unless that layer is tapped (its own
  // output, before the ReLU, is then needed). backward follows what the last forward did.
  // The Conv2d and Linear layers that would run fused with the ReLU after them; with `train`, also
  // the BatchNorm2d layers a training forward fuses with theirs (models/network/fusion_bn_relu.hpp).
  std::vector<std::string> fused_layers(bool train = false) const;
  // In inference (train=false) it also runs each Conv2d -> BatchNorm2d (-> Add) (-> ReLU) chain as
  // one op (models/network/fusion_bn.hpp). The chains an inference forward would fuse, each as its
  // layers' names.
  std::vector<std::vector<std::string>> fused_bn_chains() const;

  // Per-layer timing: when on, every layer's forward and backward is timed (waiting for the device
  // after each, so it slows the model down); profile() holds the accumulated milliseconds.
  struct LayerTime {
    std::string name;
    double forward_ms = 0, backward_ms = 0;
    std::int64_t calls = 0;
    // A layer run inside its Conv2d: its time is in the Conv2d's row (named here), in the fused op.
    std::string fused_into, fused_op;
  };
  void set_profiling(bool on);
  const std::vector<LayerTime>& profile() const { return profile_; }

  // `compute`: the autocast dtype to show the layers' output dtypes for (f32: autocast off).
  std::vector<LayerSummary> summary(const Shape& input, DType compute = DType::f32) const;
  Shape output_shape(const Shape& input) const;
  std::size_t size() const { return layers_.size(); }
  Layer& layer(const std::string& name);
  const std::vector<std::pair<std::string, LayerPtr>>& layers() const { return layers_; }

 private:
  std::size_t index_of(const std::string& name) const;

  // Index of the producer of each input of each layer; kInput: the network's input.
  static constexpr int kInput = -1;
  std::vector<int> producers(std::size_t index) const;
  // The last layer that reads each layer's output (its own index when none does).
  std::vector<std::size_t> last_readers() const;
  // Per layer: whether it is a Conv2d or Linear (or in training a BatchNorm2d) that runs fused with
  // the ReLU at the next index.
  std::vector<bool> fusion_plan(bool train) const;
  // The Conv2d + BatchNorm2d chains inference would fuse (regardless of ctx.fuse_layers()).
  ConvBnPlan conv_bn_plan() const;
  // Forward's one layer of a fused conv + batch norm chain (the head runs the op; the others pass
  // its output on).
  Tensor conv_bn_layer(Context& ctx, std::size_t index, const std::vector<Tensor>& in);
  // Forward's one layer (or fused pair starting at `index`, which then also fills outputs[index + 1]).
  Tensor forward_layer(Context& ctx, std::size_t index, const std::vector<Tensor>& in, bool train);
  // Backward's one layer: its input gradients, through the fused path when the last forward fused it.
  std::vector<Tensor> backward_layer(Context& ctx, std::size_t index, const Tensor& dy);

  std::vector<std::pair<std::string, LayerPtr>> layers_;
  std::vector<std::vector<int>> inputs_;   // per layer: explicit producers (empty: the previous layer)
  std::unordered_set<std::string> names_;  // of layers_, so add() checks a name in O(1), not O(layers)
  std::vector<std::string> tap_names_;
  std::map<std::string, Tensor> tap_outputs_;
  // The half-precision copy of params_ under autocast (Parameter::half views into it).
  void refresh_half_parameters(Context& ctx, DType dtype);
  void release_half_hold();

  std::vector<std::int64_t> param_offsets_;  // per layer: where its trainable parameters start
  std::function<void(std::int64_t)> gradients_ready_;
  Tensor params_, grads_, buffers_;
  Tensor half_params_;
  bool half_stale_ = true;
  std::weak_ptr<void> constant_hold_;  // alive while the parameters are promised constant
  // The backend's hold on half_params_ while constant_hold_ lives: the convolutions read the half
  // copy, not the masters, so without it they re-lay out their weights on every call. Dropped
  // before anything writes half_params_.
  ConstantHold half_hold_;
  bool half_held_ = false;
  DType output_dtype_ = DType::f32;  // the last layer's output dtype in the last forward
  bool built_ = false;
  bool input_grad_ = false;
  bool profiling_ = false;
  // The last forward's fusion: per layer, whether it started a fused pair, and what the pair saved.
  std::vector<bool> fused_;
  std::vector<FusedConvRelu> fused_saved_;
  ConvBnPlan bn_fused_;  // the last forward's conv + batch norm chains (none in training)
  std::vector<LayerTime> profile_;
};

}  // namespace cudl
