#include "cudl/layers/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace cudl {

OptimizerKind parse_optimizer(const std::string& name) {
  if (name == "sgd") return OptimizerKind::sgd;
  if (name == "adam") return OptimizerKind::adam;
  if (name == "adamw") return OptimizerKind::adamw;
  CUDL_THROW("optimizer: unknown '{}': expected sgd, adam or adamw", name);
}

std::string optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::sgd:
      return "sgd";
    case OptimizerKind::adam:
      return "adam";
    case OptimizerKind::adamw:
      return "adamw";
  }
  return "?";
}

float default_learning_rate(OptimizerKind kind) { return kind == OptimizerKind::sgd ? 0.05f : 3e-3f; }

Optimizer::Optimizer(Context& ctx, ParameterBlocks& model, OptimizerConfig config) : model_(&model), config_(config) {
  CUDL_CHECK(model.built(), "Optimizer: build() the model first");
  const Shape shape = model.parameter_block().shape();
  if (config_.kind == OptimizerKind::sgd) {
    if (config_.momentum != 0.0f) first_ = Tensor::zeros(shape, ctx);
  } else {
    first_ = Tensor::zeros(shape, ctx);
    second_ = Tensor::zeros(shape, ctx);
  }
  scalars_ = Tensor::zeros({kOptimizerScalars}, ctx);
}

namespace {

SgdParams sgd_params(const OptimizerConfig& c, float lr) {
  SgdParams p;
  p.lr = lr;
  p.momentum = c.momentum;
  p.weight_decay = c.weight_decay;
  p.nesterov = c.nesterov;
  return p;
}

AdamParams adam_params(const OptimizerConfig& c, float lr, std::int64_t step) {
  AdamParams p;
  p.lr = lr;
  p.beta1 = c.beta1;
  p.beta2 = c.beta2;
  p.eps = c.eps;
  p.weight_decay = c.weight_decay;
  p.decoupled_weight_decay = c.kind == OptimizerKind::adamw;
  p.step = step;
  return p;
}

}  // namespace

void Optimizer::step(Context& ctx, float lr) {
  prepare(ctx, lr);
  apply(ctx);
}

void Optimizer::prepare(Context& ctx, float lr) {
  ++steps_;
  model_->parameters_changed();
  // The values the backends would derive from lr and the step count (optimizer_scalars), so the
  // update reads the same bits from the device as it would take as arguments.
  const OptimizerStepValues values = config_.kind == OptimizerKind::sgd
                                         ? optimizer_scalars(sgd_params(config_, lr))
                                         : optimizer_scalars(adam_params(config_, lr, steps_));
  copy_bytes(ctx, scalars_.raw(), scalars_.device(), values.v, Device::cpu(), sizeof(values.v));
}

void Optimizer::apply(Context& ctx) { apply(ctx, 0, model_->parameter_block().numel()); }

void Optimizer::apply(Context& ctx, std::int64_t begin, std::int64_t end) {
  Tensor& block = model_->parameter_block();
  CUDL_CHECK(0 <= begin && begin <= end && end <= block.numel(),
             "Optimizer::apply: elements [{}, {}) of a parameter block of {}", begin, end, block.numel());
  if (begin == end) return;
  const bool whole = begin == 0 && end == block.numel();
  const auto part = [&](const Tensor& t) { return whole ? t : t.view(begin, Shape{end - begin}); };
  Tensor params = part(block);
  const Tensor grads = part(model_->gradient_block());
  Tensor first = first_.defined() ? part(first_) : first_;
  if (config_.kind == OptimizerKind::sgd) {
    SgdParams p = sgd_params(config_, 0.0f);
    p.scalars = scalars_;
    ctx.backend().sgd_step(ctx, p, params, grads, first);
    return;
  }
  Tensor second = part(second_);
  AdamParams p = adam_params(config_, 0.0f, 0);
  p.scalars = scalars_;
  ctx.backend().adam_step(ctx, p, params, grads, first, second);
}

void Optimizer::clear_frozen_state(Context& ctx) {
  const auto* block = static_cast<const char*>(model_->parameter_block().raw());
  for (Parameter* p : model_->frozen_parameters()) {
    // The parameter's place in the block, which the state tensors share.
    const auto begin = (static_cast<const char*>(p->value.raw()) - block) / static_cast<std::ptrdiff_t>(sizeof(float));
    for (Tensor* state : {&first_, &second_}) {
      if (!state->defined()) continue;
      Tensor range = state->slice(begin, begin + p->value.numel());
      ctx.backend().fill(ctx, range, 0.0f);
    }
  }
}

std::vector<std::pair<std::string, Tensor*>> Optimizer::state() {
  if (config_.kind == OptimizerKind::sgd) {
    if (first_.defined()) return {{"momentum_buffer", &first_}};
    return {};
  }
  return {{"exp_avg", &first_}, {"exp_avg_sq", &second_}};
}

Schedule parse_schedule(const std::string& name) {
  if (name == "none") return Schedule::none;
  if (name == "step") return Schedule::step;
  if (name == "cosine") return Schedule::cosine;
  if (name == "onecycle") return Schedule::onecycle;
  CUDL_THROW("schedule: unknown '{}': expected none, step, cosine or onecycle", name);
}

std::string schedule_name(Schedule s) {
  switch (s) {
    case Schedule::none:
      return "none";
    case Schedule::step:
      return "step";
    case Schedule::cosine:
      return "cosine";
    case Schedule::onecycle:
      return "onecycle";
  }
  return "?";
}

float learning_rate(Schedule schedule, float lr, std::int64_t step, std::int64_t total_steps) {
  const double t =
      total_steps > 0 ? std::clamp(static_cast<double>(step) / static_cast<double>(total_steps), 0.0, 1.0) : 0.0;
  auto cosine_between = [](double from, double to, double fraction) {
    return to + (from - to) * 0.5 * (1.0 + std::cos(std::numbers::pi * fraction));
  };
  switch (schedule) {
    case Schedule::none:
      return lr;
    case Schedule::step:
      return lr * static_cast<float>(std::pow(0.1, std::floor(std::min(t, 0.999999) * 3.0)));
    case Schedule::cosine:
      return static_cast<float>(cosine_between(lr, 0.0, t));
    case Schedule::onecycle: {
      // torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, pct_start=0.3, div_factor=25, final_div_factor=1e4).
      const double initial = lr / 25.0, final_lr = initial / 1e4, warm = 0.3;
      if (t < warm) return static_cast<float>(cosine_between(initial, lr, t / warm));
      return static_cast<float>(cosine_between(lr, final_lr, (t - warm) / (1.0 - warm)));
    }
  }
  return lr;
}

}  // namespace cudl
