#include "cudl/models/sequential.hpp"

#include <algorithm>

#include "cudl/engine/check.hpp"
#include "cudl/engine/timer.hpp"
#include "cudl/layers/init.hpp"

namespace cudl {

Sequential& Sequential::add(std::string name, LayerPtr layer) {
  CUDL_CHECK(!built_, "Sequential::add('{}'): the model is already built", name);
  CUDL_CHECK(names_.insert(name).second, "Sequential::add: duplicate layer name '{}'", name);
  layers_.emplace_back(std::move(name), std::move(layer));
  return *this;
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
  for (auto& [name, layer] : layers_) {
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

void Sequential::refresh_half_parameters(Context& ctx, DType dtype) {
  if (!half_params_.defined() || half_params_.dtype() != dtype || half_params_.device() != ctx.device()) {
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
  if (half_stale_) ctx.backend().cast(ctx, params_, half_params_);
  half_stale_ = false;
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
  Tensor h = x;
  std::size_t index = 0;
  for (auto& [name, layer] : layers_) {
    if (profiling_) {
      Timer timer(ctx);
      timer.start();
      h = layer->forward(ctx, h, train);
      profile_[index].forward_ms += timer.stop_ms();
      ++profile_[index].calls;
    } else {
      h = layer->forward(ctx, h, train);
    }
    ++index;
    if (std::find(tap_names_.begin(), tap_names_.end(), name) != tap_names_.end()) tap_outputs_[name] = h;
  }
  output_dtype_ = h.dtype();
  return is_half(h.dtype()) ? h.cast(ctx, DType::f32) : h;
}

namespace {

bool learns(Layer& layer) {
  if (layer.frozen()) return false;
  auto params = layer.parameters();
  return std::any_of(params.begin(), params.end(), [](const Parameter* p) { return p->trainable; });
}

}  // namespace

Tensor Sequential::backward(Context& ctx, const Tensor& dy, const std::map<std::string, Tensor>& tap_grads) {
  // A layer passes a gradient down only when something below reads it: a layer that learns, or the
  // caller (input_grad_). Below the first layer that learns, nothing does: the first convolution
  // skips its backward-data pass, and layers that learn nothing (the input normalisation, a frozen
  // backbone when fine-tuning) skip backward altogether. Decided here, not in build(), because
  // freezing and set_input_grad may change between steps.
  std::vector<bool> passes_down(layers_.size()), runs(layers_.size());
  bool wanted = input_grad_;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    Layer& layer = *layers_[i].second;
    passes_down[i] = wanted;
    layer.set_input_grad(wanted);
    runs[i] = wanted || learns(layer);
    wanted = runs[i];
  }
  Tensor g = dy.defined() ? dy.cast(ctx, output_dtype_) : dy;
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    const auto index = static_cast<std::size_t>(layers_.rend() - it - 1);
    if (auto extra = tap_grads.find(it->first); extra != tap_grads.end()) {
      if (!g.defined()) {
        g = extra->second.clone(ctx);  // nothing flows from above this layer: the tap's gradient is all
      } else {
        check::same_shape("Sequential::backward", "gradient at " + it->first, g, "tap gradient", extra->second);
        ctx.backend().axpy(ctx, 1.0f, extra->second.cast(ctx, g.dtype()), g);
      }
    }
    if (!g.defined()) continue;         // above every tap: nothing to propagate yet
    if (!runs[index]) return Tensor();  // neither this layer nor any below wants anything
    if (profiling_) {
      Timer timer(ctx);
      timer.start();
      g = it->second->backward(ctx, g);
      profile_[index].backward_ms += timer.stop_ms();
    } else {
      g = it->second->backward(ctx, g);
    }
    if (!passes_down[index]) g = Tensor();
  }
  return g;
}

void Sequential::set_profiling(bool on) {
  profiling_ = on;
  profile_.clear();
  for (const auto& [name, layer] : layers_) profile_.push_back({name, 0, 0, 0});
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
  layers_.resize(index_of(name) + 1);
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
  Shape s = input;
  DType dtype = DType::f32;  // the input image
  for (const auto& [name, layer] : layers_) {
    s = layer->output_shape(s);
    if (layer->autocasts()) dtype = compute;
    std::int64_t n = 0;
    for (Parameter* p : layer->parameters())
      if (p->trainable) n += p->shape.numel();
    rows.push_back({name, layer->describe(), s, n, dtype});
  }
  return rows;
}

Shape Sequential::output_shape(const Shape& input) const {
  Shape s = input;
  for (const auto& [name, layer] : layers_) s = layer->output_shape(s);
  return s;
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
