#include "cudl/models/network/sequential.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "cudl/engine/check.hpp"
#include "cudl/engine/timer.hpp"
#include "cudl/layers/init.hpp"
#include "cudl/layers/merge.hpp"

namespace cudl {

Sequential& Sequential::add(std::string name, LayerPtr layer, const std::vector<std::string>& inputs) {
  CUDL_CHECK(!built_, "Sequential::add('{}'): the model is already built", name);
  CUDL_CHECK(name != "input", "Sequential::add: 'input' names the network's input, not a layer");
  CUDL_CHECK(!names_.contains(name), "Sequential::add: duplicate layer name '{}'", name);
  std::vector<int> from;
  for (const std::string& in : inputs) {
    if (in == "input") {
      from.push_back(kInput);
      continue;
    }
    CUDL_CHECK(names_.contains(in),
               "Sequential::add('{}'): input '{}' is not a layer added before it (nor 'input', the network's input)",
               name, in);
    from.push_back(static_cast<int>(index_of(in)));
  }
  CUDL_CHECK(from.size() <= 1 || dynamic_cast<MergeLayer*>(layer.get()) != nullptr,
             "Sequential::add('{}'): a {} layer takes one input, not {} (joining branches takes add or concat)", name,
             layer->type(), from.size());
  names_.insert(name);
  layers_.emplace_back(std::move(name), std::move(layer));
  inputs_.push_back(std::move(from));
  return *this;
}

namespace {

// A join's shape check, its message naming the layer (Add and Concat do not know their names).
Shape joined_shape(const MergeLayer& merge, const std::string& name, const std::vector<Shape>& inputs) {
  try {
    return merge.output_shape(inputs);
  } catch (const Error& e) {
    throw Error(fmt::format("layer '{}': {}", name, e.what()));
  }
}

}  // namespace

std::vector<int> Sequential::producers(std::size_t index) const {
  if (!inputs_[index].empty()) return inputs_[index];
  return {static_cast<int>(index) - 1};  // the previous layer, or kInput for the first
}

std::vector<std::size_t> Sequential::last_readers() const {
  std::vector<std::size_t> last(layers_.size());
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    last[i] = i;
    for (int p : producers(i))
      if (p != kInput) last[static_cast<std::size_t>(p)] = i;
  }
  return last;
}

std::vector<std::string> Sequential::input_names(std::size_t index) const {
  std::vector<std::string> out;
  for (int p : inputs_.at(index)) out.push_back(p == kInput ? "input" : layers_[static_cast<std::size_t>(p)].first);
  return out;
}

bool Sequential::is_graph() const {
  return std::any_of(inputs_.begin(), inputs_.end(), [](const std::vector<int>& in) { return !in.empty(); });
}

void Sequential::build(Context& ctx, std::uint64_t seed) {
  std::int64_t trainable = 0, buffer = 0;
  for (auto& [name, layer] : layers_)
    for (Parameter* p : layer->parameters()) (p->trainable ? trainable : buffer) += p->shape.numel();
  params_ = Tensor::zeros({std::max<std::int64_t>(trainable, 1)}, ctx);
  grads_ = Tensor::zeros({std::max<std::int64_t>(trainable, 1)}, ctx);
  buffers_ = Tensor::zeros({std::max<std::int64_t>(buffer, 1)}, ctx);
  std::int64_t param_offset = 0, buffer_offset = 0;
  std::uint64_t index = 0;
  param_offsets_.clear();
  for (auto& [name, layer] : layers_) {
    param_offsets_.push_back(param_offset);
    for (Parameter* p : layer->parameters()) {
      if (p->trainable) {
        p->value = params_.view(param_offset, p->shape);
        p->grad = grads_.view(param_offset, p->shape);
        param_offset += p->shape.numel();
      } else {
        p->value = buffers_.view(buffer_offset, p->shape);
        p->grad = Tensor();
        buffer_offset += p->shape.numel();
      }
    }
    layer->initialize(ctx, init::derive_seed(seed, index++));
  }
  half_params_ = Tensor();
  half_stale_ = true;
  built_ = true;
}

void Sequential::release_half_hold() {
  half_hold_.reset();
  half_held_ = false;
}

void Sequential::refresh_half_parameters(Context& ctx, DType dtype) {
  if (constant_hold_.expired()) release_half_hold();
  if (!half_params_.defined() || half_params_.dtype() != dtype || half_params_.device() != ctx.device()) {
    release_half_hold();
    half_params_ = Tensor::empty(params_.shape(), ctx, dtype);
    std::int64_t offset = 0;
    for (auto& [name, layer] : layers_)
      for (Parameter* p : layer->parameters())
        if (p->trainable) {
          p->half = half_params_.view(offset, p->shape);
          offset += p->shape.numel();
        }
    half_stale_ = true;
  }
  // One cast over the whole block: a launch per step, not one per layer.
  if (half_stale_) {
    release_half_hold();
    ctx.backend().cast(ctx, params_, half_params_);
  }
  half_stale_ = false;
  // A hold may own nothing but its release, so whether one is taken is tracked apart from it.
  if (!constant_hold_.expired() && !half_held_) {
    half_hold_ = ctx.backend().hold_constant(ctx, half_params_);
    half_held_ = true;
  }
}

Tensor Sequential::forward(Context& ctx, const Tensor& x, bool train) {
  CUDL_CHECK(built_, "Sequential::forward: build() the model first");
  tap_outputs_.clear();
  const DType compute = ctx.autocast_dtype();
  if (compute != DType::f32) {
    // In training the optimizer changes the masters every step; outside it, the copy is fresh
    // while nothing wrote the parameters, and a constant hold promises nothing will.
    if (train && constant_hold_.expired()) half_stale_ = true;
    refresh_half_parameters(ctx, compute);
  }
  fused_ = ctx.fuse_layers() ? fusion_plan(train) : std::vector<bool>(layers_.size(), false);
  fused_saved_.assign(layers_.size(), FusedConvRelu{});
  bn_fused_ = !train && ctx.fuse_layers() ? conv_bn_plan() : ConvBnPlan{{}, std::vector<int>(layers_.size(), -1)};
  // Each layer's output until its last reader has run (or to the end, when it is tapped).
  std::vector<Tensor> outputs(layers_.size());
  const std::vector<std::size_t> last = last_readers();
  for (std::size_t index = 0; index < layers_.size(); ++index) {
    const std::string& name = layers_[index].first;
    const std::vector<int> from = producers(index);
    std::vector<Tensor> in;
    for (int p : from) in.push_back(p == kInput ? x : outputs[static_cast<std::size_t>(p)]);
    // The head of a fused conv + batch norm + Add chain also reads the Add's other input.
    if (const int c = bn_fused_.chain_of[index]; c >= 0) {
      const ConvBnChain& chain = bn_fused_.chains[static_cast<std::size_t>(c)];
      if (chain.conv == static_cast<int>(index) && chain.add != ConvBnChain::kNone)
        in.push_back(chain.residual == kInput ? x : outputs[static_cast<std::size_t>(chain.residual)]);
    }
    std::optional<Timer> timer;
    if (profiling_) {
      timer.emplace(ctx);
      timer->start();
    }
    outputs[index] = forward_layer(ctx, index, in, train);
    if (timer) {
      profile_[index].forward_ms += timer->stop_ms();
      ++profile_[index].calls;
      if (index > 0 && fused_[index - 1]) {
        profile_[index].fused_into = layers_[index - 1].first;
        profile_[index].fused_op = relu_pair_op(*layers_[index - 1].second);
      }
      if (const int c = bn_fused_.chain_of[index]; c >= 0) {
        const auto head = static_cast<std::size_t>(bn_fused_.chains[static_cast<std::size_t>(c)].conv);
        if (head != index) {
          profile_[index].fused_into = layers_[head].first;
          profile_[index].fused_op = "conv2d_bn_forward";
        }
      }
    }
    if (std::find(tap_names_.begin(), tap_names_.end(), name) != tap_names_.end()) tap_outputs_[name] = outputs[index];
    for (int p : from)
      if (p != kInput && last[static_cast<std::size_t>(p)] == index) outputs[static_cast<std::size_t>(p)] = Tensor();
  }
  const Tensor h = outputs.empty() ? x : outputs.back();
  output_dtype_ = h.dtype();
  return is_half(h.dtype()) ? h.cast(ctx, DType::f32) : h;
}

std::vector<bool> Sequential::fusion_plan(bool train) const {
  const std::size_t n = layers_.size();
  std::vector<int> readers(n, 0);
  for (std::size_t i = 0; i < n; ++i)
    for (int p : producers(i))
      if (p != kInput) ++readers[static_cast<std::size_t>(p)];
  std::vector<bool> plan(n, false);
  for (std::size_t i = 0; i + 1 < n; ++i) {
    const bool tapped = std::find(tap_names_.begin(), tap_names_.end(), layers_[i].first) != tap_names_.end();
    plan[i] = readers[i] == 1 && producers(i + 1) == std::vector<int>{static_cast<int>(i)} && !tapped &&
              fusible_relu_pair(*layers_[i].second, *layers_[i + 1].second, train);
  }
  return plan;
}

ConvBnPlan Sequential::conv_bn_plan() const {
  std::vector<const Layer*> layers;
  std::vector<std::vector<int>> from;
  std::vector<bool> tapped;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    layers.push_back(layers_[i].second.get());
    from.push_back(producers(i));
    tapped.push_back(std::find(tap_names_.begin(), tap_names_.end(), layers_[i].first) != tap_names_.end());
  }
  return plan_conv_bn(layers, from, tapped);
}

std::vector<std::vector<std::string>> Sequential::fused_bn_chains() const {
  std::vector<std::vector<std::string>> out;
  for (const ConvBnChain& c : conv_bn_plan().chains) {
    std::vector<std::string>& names = out.emplace_back();
    for (int member : {c.conv, c.bn, c.add, c.relu})
      if (member != ConvBnChain::kNone) names.push_back(layers_[static_cast<std::size_t>(member)].first);
  }
  return out;
}

Tensor Sequential::conv_bn_layer(Context& ctx, std::size_t index, const std::vector<Tensor>& in) {
  const ConvBnChain& c = bn_fused_.chains[static_cast<std::size_t>(bn_fused_.chain_of[index])];
  if (c.conv == static_cast<int>(index)) {
    auto& conv = static_cast<Conv2d&>(*layers_[index].second);
    const auto& bn = static_cast<const BatchNorm2d&>(*layers_[static_cast<std::size_t>(c.bn)].second);
    return conv_bn_forward(ctx, conv, bn, in.front(), in.size() > 1 ? in[1] : Tensor(), c.relu != ConvBnChain::kNone);
  }
  // The chain's output, which the head computed, passes along to the layers that read its tail.
  return c.add == static_cast<int>(index) ? in[static_cast<std::size_t>(c.add_slot)] : in.front();
}

std::vector<std::string> Sequential::fused_layers(bool train) const {
  std::vector<std::string> names;
  const std::vector<bool> plan = fusion_plan(train);
  for (std::size_t i = 0; i < plan.size(); ++i)
    if (plan[i]) names.push_back(layers_[i].first);
  return names;
}

Tensor Sequential::forward_layer(Context& ctx, std::size_t index, const std::vector<Tensor>& in, bool train) {
  auto& [name, layer] = layers_[index];
  // The ReLU of a fused pair: the pair's op already produced its output.
  if (index > 0 && fused_[index - 1]) return in.front();
  if (bn_fused_.chain_of[index] >= 0) return conv_bn_layer(ctx, index, in);
  if (fused_[index]) return relu_pair_forward(ctx, *layer, in.front(), train, fused_saved_[index]);
  auto* merge = dynamic_cast<MergeLayer*>(layer.get());
  if (merge == nullptr) return layer->forward(ctx, in.front(), train);
  std::vector<Shape> shapes;
  for (const Tensor& t : in) shapes.push_back(t.shape());
  (void)joined_shape(*merge, name, shapes);
  return merge->forward(ctx, in, train);
}

std::vector<Tensor> Sequential::backward_layer(Context& ctx, std::size_t index, const Tensor& dy) {
  Layer& layer = *layers_[index].second;
  CUDL_CHECK(index >= bn_fused_.chain_of.size() || bn_fused_.chain_of[index] < 0,
             "Sequential::backward: layer '{}' ran fused with its batch norm in an inference forward (train=false); "
             "run forward with train=true before backward",
             layers_[index].first);
  if (index < fused_.size() && fused_[index]) return {relu_pair_first_backward(ctx, layer, fused_saved_[index], dy)};
  if (index > 0 && index < fused_.size() && fused_[index - 1])
    return {relu_pair_relu_backward(ctx, *layers_[index - 1].second, fused_saved_[index - 1], dy)};
  if (auto* merge = dynamic_cast<MergeLayer*>(&layer)) return merge->backward_inputs(ctx, dy);
  return {layer.backward(ctx, dy)};
}

namespace {

bool learns(Layer& layer) {
  if (layer.frozen()) return false;
  auto params = layer.parameters();
  return std::any_of(params.begin(), params.end(), [](const Parameter* p) { return p->trainable; });
}

}  // namespace

namespace {

// A gradient being summed. The first contribution is kept as given; when it may share storage
// with a gradient held elsewhere (Add gives its dy to every input; the caller's dy), it is copied
// before a second one is added into it.
struct GradientSum {
  Tensor value;
  bool owned = false;  // no one else holds value's storage
  void add(Context& ctx, const Tensor& g, bool exclusive) {
    if (!value.defined()) {
      value = g;
      owned = exclusive;
      return;
    }
    if (!owned) {
      value = value.clone(ctx);
      owned = true;
    }
    ctx.backend().axpy(ctx, 1.0f, g.cast(ctx, value.dtype()), value);
  }
};

}  // namespace

Tensor Sequential::backward(Context& ctx, const Tensor& dy, const std::map<std::string, Tensor>& tap_grads) {
  // A layer passes a gradient down only when something below reads it: a layer that learns, or the
  // caller (input_grad_). Below the first layer that learns, nothing does: the first convolution
  // skips its backward-data pass, and layers that learn nothing (the input normalisation, a frozen
  // backbone when fine-tuning) skip backward altogether. Decided here, not in build(), because
  // freezing and set_input_grad may change between steps.
  const std::size_t n = layers_.size();
  std::vector<bool> passes_down(n), runs(n);
  for (std::size_t i = 0; i < n; ++i) {
    Layer& layer = *layers_[i].second;
    bool wanted = false;
    for (int p : producers(i)) wanted = wanted || (p == kInput ? input_grad_ : runs[static_cast<std::size_t>(p)]);
    passes_down[i] = wanted;
    layer.set_input_grad(wanted);
    runs[i] = wanted || learns(layer);
  }
  std::vector<GradientSum> grads(n);
  GradientSum input;
  if (n > 0 && dy.defined()) grads[n - 1].add(ctx, dy.cast(ctx, output_dtype_), /*exclusive=*/false);
  for (std::size_t index = n; index-- > 0;) {
    const std::string& name = layers_[index].first;
    Tensor& g = grads[index].value;
    if (auto extra = tap_grads.find(name); extra != tap_grads.end()) {
      if (g.defined())
        check::same_shape("Sequential::backward", "gradient at " + name, g, "tap gradient", extra->second);
      // The tap's gradient is all when nothing flows from above this layer.
      const bool first = !g.defined();
      grads[index].add(ctx, first ? extra->second.clone(ctx) : extra->second, /*exclusive=*/first);
    }
    if (!g.defined() || !runs[index]) {
      g = Tensor();  // above every tap, or nothing below wants anything
      continue;
    }
    Layer& layer = *layers_[index].second;
    std::optional<Timer> timer;
    if (profiling_) {
      timer.emplace(ctx);
      timer->start();
    }
    const std::vector<Tensor> dx = backward_layer(ctx, index, g);
    if (timer) profile_[index].backward_ms += timer->stop_ms();
    if (gradients_ready_ && learns(layer)) gradients_ready_(param_offsets_[index]);
    // A layer's fresh result is ours alone; one that reuses dy's storage (a reshape, Add) is as
    // shared as dy was, and Add's results share it with each other.
    const void* dy_storage = g.raw();
    const bool dy_owned = grads[index].owned;
    g = Tensor();
    if (!passes_down[index]) continue;
    const std::vector<int> from = producers(index);
    for (std::size_t k = 0; k < from.size(); ++k) {
      const bool fresh = dx[k].raw() != dy_storage;
      const bool exclusive = fresh || (dy_owned && from.size() == 1);
      (from[k] == kInput ? input : grads[static_cast<std::size_t>(from[k])]).add(ctx, dx[k], exclusive);
    }
  }
  return input_grad_ ? input.value : Tensor();
}

void Sequential::set_profiling(bool on) {
  profiling_ = on;
  profile_.clear();
  for (const auto& [name, layer] : layers_) profile_.push_back({name, 0, 0, 0, {}, {}});
}

void Sequential::set_taps(std::vector<std::string> names) {
  for (const auto& n : names) (void)index_of(n);
  tap_names_ = std::move(names);
}

const Tensor& Sequential::tap(const std::string& name) const {
  auto it = tap_outputs_.find(name);
  CUDL_CHECK(it != tap_outputs_.end(), "Sequential::tap: no output kept for '{}' (set_taps, then forward)", name);
  return it->second;
}

void Sequential::replace(const std::string& name, LayerPtr layer) {
  CUDL_CHECK(!built_, "Sequential::replace('{}'): replace layers before build()", name);
  layers_[index_of(name)].second = std::move(layer);
}

void Sequential::truncate_after(const std::string& name) {
  CUDL_CHECK(!built_, "Sequential::truncate_after('{}'): truncate before build()", name);
  const std::size_t keep = index_of(name) + 1;
  for (std::size_t i = keep; i < layers_.size(); ++i) names_.erase(layers_[i].first);
  layers_.resize(keep);
  inputs_.resize(keep);
}

void Sequential::set_frozen(bool frozen) {
  for (auto& [name, layer] : layers_) layer->set_frozen(frozen);
}

void Sequential::set_input_grad(bool needed) { input_grad_ = needed; }

ConstantHold Sequential::hold_parameters_constant(Context& ctx) {
  CUDL_CHECK(built_, "Sequential::hold_parameters_constant: build() the model first");
  // The backend's hold (null on CUDA) inside one of our own, whose lifetime says whether the
  // half copies may be reused without a refresh.
  auto hold = std::make_shared<ConstantHold>(ctx.backend().hold_constant(ctx, params_));
  constant_hold_ = hold;
  return hold;
}

void Sequential::zero_grad(Context& ctx) {
  if (grads_.defined()) ctx.backend().fill(ctx, grads_, 0.0f);
}

std::vector<NamedParameter> Sequential::parameters() {
  std::vector<NamedParameter> out;
  for (auto& [name, layer] : layers_)
    for (Parameter* p : layer->parameters())
      if (p->trainable) out.push_back({name + "." + p->name, p});
  return out;
}

std::vector<NamedParameter> Sequential::buffers() {
  std::vector<NamedParameter> out;
  for (auto& [name, layer] : layers_)
    for (Parameter* p : layer->parameters())
      if (!p->trainable) out.push_back({name + "." + p->name, p});
  return out;
}

std::int64_t Sequential::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& [name, layer] : layers_)
    for (Parameter* p : layer->parameters())
      if (p->trainable) n += p->shape.numel();
  return n;
}

std::vector<LayerSummary> Sequential::summary(const Shape& input, DType compute) const {
  std::vector<LayerSummary> rows;
  std::vector<Shape> shapes;
  std::vector<DType> dtypes;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = *layers_[i].second;
    std::vector<Shape> in;
    std::vector<DType> in_dtypes;
    for (int p : producers(i)) {
      in.push_back(p == kInput ? input : shapes[static_cast<std::size_t>(p)]);
      in_dtypes.push_back(p == kInput ? DType::f32 : dtypes[static_cast<std::size_t>(p)]);  // the image is f32
    }
    const auto* merge = dynamic_cast<const MergeLayer*>(&layer);
    shapes.push_back(merge != nullptr ? joined_shape(*merge, layers_[i].first, in) : layer.output_shape(in.front()));
    dtypes.push_back(layer.autocasts() ? compute : merged_dtype(in_dtypes));
    std::int64_t n = 0;
    for (Parameter* p : layers_[i].second->parameters())
      if (p->trainable) n += p->shape.numel();
    rows.push_back({layers_[i].first, layer.describe(), input_names(i), shapes.back(), n, dtypes.back(), {}});
  }
  const std::vector<bool> plan = fusion_plan(/*train=*/false);
  for (std::size_t i = 0; i < plan.size(); ++i)
    if (plan[i]) {
      rows[i].fused_with = layers_[i + 1].first;
      rows[i + 1].fused_with = layers_[i].first;
    }
  return rows;
}

Shape Sequential::output_shape(const Shape& input) const {
  const std::vector<LayerSummary> rows = summary(input);
  return rows.empty() ? input : rows.back().output_shape;
}

Layer& Sequential::layer(const std::string& name) { return *layers_[index_of(name)].second; }

std::size_t Sequential::index_of(const std::string& name) const {
  for (std::size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].first == name) return i;
  CUDL_THROW("Sequential: no layer named '{}'", name);
}

std::vector<Parameter*> Sequential::frozen_parameters() {
  std::vector<Parameter*> out;
  for (const auto& [name, layer] : layers_) {
    if (!layer->frozen()) continue;
    for (Parameter* p : layer->parameters())
      if (p->trainable) out.push_back(p);
  }
  return out;
}

}  // namespace cudl
