#include "cudl/models/train/step_capture.hpp"

namespace cudl {

TrainStepGraph::TrainStepGraph(Sequential& model) : model_(&model), graph_("train step") {
  for (const auto& [name, layer] : model.layers())
    if (auto* dropout = dynamic_cast<Dropout*>(layer.get())) dropouts_.push_back(dropout);
  advance_.assign(dropouts_.size(), 0);
}

void TrainStepGraph::run(Context& ctx, const std::function<void()>& step) {
  std::vector<std::uint64_t> before(dropouts_.size());
  for (std::size_t i = 0; i < dropouts_.size(); ++i) before[i] = dropouts_[i]->counter();
  const bool first = graph_.state() == StepGraph::State::plain;
  graph_.run(ctx, step);
  // The host ran the step's forward once on the first call (a plain run: how far a step moves each
  // counter), and later zero times (a replay), once (the recording) or twice (a recording that
  // failed, then the plain rerun); the device ran it once every time.
  for (std::size_t i = 0; i < dropouts_.size(); ++i) {
    if (first)
      advance_[i] = dropouts_[i]->counter() - before[i];
    else
      dropouts_[i]->set_counter_held_on_device(before[i] + advance_[i]);
  }
  // The update moved the weights after the step's forward refreshed the model's half-precision
  // copies; Optimizer::prepare's notice came before it, so say it again for the next reader.
  model_->parameters_changed();
}

}  // namespace cudl
