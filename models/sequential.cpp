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
  built_ = true;
}

Tensor Sequential::forward(Context& ctx, const Tensor& x, bool train) {
  CUDL_CHECK(built_, "Sequential::forward: build() the model first");
  tap_outputs_.clear();
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
  return h;
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
  Tensor g = dy;
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    const auto index = static_cast<std::size_t>(layers_.rend() - it - 1);
    if (auto extra = tap_grads.find(it->first); extra != tap_grads.end()) {
      if (!g.defined()) {
        g = extra->second.clone(ctx);  // nothing flows from above this layer: the tap's gradient is all
      } else {
        check::same_shape("Sequential::backward", "gradient at " + it->first, g, "tap gradient", extra->second);
        ctx.backend().axpy(ctx, 1.0f, extra->second, g);
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
  return ctx.backend().hold_constant(ctx, params_);
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

std::vector<LayerSummary> Sequential::summary(const Shape& input) const {
  std::vector<LayerSummary> rows;
  Shape s = input;
  for (const auto& [name, layer] : layers_) {
    s = layer->output_shape(s);
    std::int64_t n = 0;
    for (Parameter* p : layer->parameters())
      if (p->trainable) n += p->shape.numel();
    rows.push_back({name, layer->describe(), s, n});
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

}  // namespace cudl
