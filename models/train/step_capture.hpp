#pragma once
// The train step as a CUDA graph (--cuda-graphs, engine/step_graph.hpp). A train step is not
// idempotent, as StepGraph's steps are: it moves the weights, and values change every step. Those
// values live on the device so that a replay applies each step's own: the optimizer's rate and bias
// corrections (written by Optimizer::prepare, host work run before every step, replayed or not) and
// each dropout layer's Philox counter (read and advanced by the dropout op itself). What replay
// skips is the host's copy of those counters: this class keeps them in step.
//
// The step must be the same launches on the same tensors every call (stage a batch into fixed
// tensors first) and must not read the device from the host (the loop reads its metrics between
// steps). A step that cannot be captured runs as plain launches after StepGraph's one-line note.
#include <cstdint>
#include <functional>
#include <vector>

#include "cudl/engine/step_graph.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/models/network/sequential.hpp"

namespace cudl {

class TrainStepGraph {
 public:
  // `model` must outlive this object; its layers must not change while it lives.
  explicit TrainStepGraph(Sequential& model);

  // Runs `step` once (see StepGraph::run: plain, recorded, then replayed), the dropout layers'
  // host counters left where one plain run would leave them. The step is expected to update the
  // weights (its half-precision copies are marked stale after it).
  void run(Context& ctx, const std::function<void()>& step);

  StepGraph::State state() const { return graph_.state(); }
  std::size_t private_peak_bytes() const { return graph_.private_peak_bytes(); }

 private:
  Sequential* model_;
  StepGraph graph_;
  std::vector<Dropout*> dropouts_;
  std::vector<std::uint64_t> advance_;  // how far one step moves each counter (from the first run)
};

}  // namespace cudl
