#pragma once
// CUDA graphs for steps whose shapes are fixed (--cuda-graphs). Batch-1 inference and the style
// iteration are launch-bound: a VGG19 forward is ~50 launches whose host-side cost (descriptors,
// the pool, our own checks) rivals the kernels. A graph records the launches once and replays
// them with one call.
//
// What a step may be: idempotent on the device (it reads tensors allocated before the first run
// and writes into such tensors, or into tensors that objects keep, such as a layer's saved
// activations), with no host-visible side effect that later calls depend on (so not an optimizer
// step whose step count is a kernel argument) and no host synchronisation (a read to the host, a
// synchronize). Replay reruns the recorded launches only: host code in the step does not run.
//
// How: the first run is plain (algorithm searches, lazy set-up, workspace sizes), the second is
// recorded under stream capture and instantiated, and every later run replays. Both runs draw
// from a private pool (a caching allocator of their own, even under CUDL_NO_CACHING=1), so the addresses the graph
// recorded are never handed to anyone else while the graph lives. A step that cannot be captured (it synchronises, or a
// call refuses capture) runs plainly from then on, after one note on stderr; the recording run is repeated plainly, so
// no result is lost or wrong.
//
// On the CPU, or with the context's cuda_graphs() off, run() just calls the step.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "cudl/engine/caching_allocator.hpp"
#include "cudl/engine/context.hpp"

namespace cudl {

class StepGraph {
 public:
  enum class State { plain, warmed_up, replaying, refused };

  // `what` names the step in the note when capture fails ("style iteration", "inference").
  explicit StepGraph(std::string what);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Runs `step` on ctx (see above). Pass the same step with the same tensors every call: a
  // new shape needs a new StepGraph.
  void run(Context& ctx, const std::function<void()>& step);

  State state() const { return state_; }
  // The private pool's peak bytes (0 without one): memory the graph holds beside the context's pool.
  std::size_t private_peak_bytes() const;

 private:
  struct Graph;
  void capture(Context& ctx, const std::function<void()>& step);

  std::string what_;
  State state_ = State::plain;
  std::shared_ptr<CachingAllocator> pool_;  // the private pool (CUDA, once warmed up)
  std::unique_ptr<Graph> graph_;
};

}  // namespace cudl
