#include "cudl/engine/step_graph.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <utility>

#include "cudl/engine/error.hpp"
#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

namespace {

// Routes ctx's allocations to `pool` for the guard's lifetime (Context::exchange_allocator).
class AllocatorSwap {
 public:
  AllocatorSwap(Context& ctx, std::shared_ptr<Allocator> pool) : ctx_(ctx), saved_(ctx.exchange_allocator(pool)) {}
  ~AllocatorSwap() { ctx_.exchange_allocator(std::move(saved_)); }
  AllocatorSwap(const AllocatorSwap&) = delete;
  AllocatorSwap& operator=(const AllocatorSwap&) = delete;

 private:
  Context& ctx_;
  std::shared_ptr<Allocator> saved_;
};

}  // namespace

#if defined(CUDL_HAVE_CUDA)

struct StepGraph::Graph {
  cudaGraphExec_t exec = nullptr;
  cudaStream_t stream = nullptr;  // where it replays: drained before the graph goes
  int device = 0;                 // the stream's: current while it is drained and the graph destroyed
  ~Graph() {
    if (!exec) return;
    CudaDeviceGuard guard(device, std::nothrow);
    cudaStreamSynchronize(stream);
    cudaGraphExecDestroy(exec);
  }
};

namespace {

// Ends a capture that the step left open (it threw), discarding what was recorded.
void abandon_capture(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(stream, &partial);
    if (partial) cudaGraphDestroy(partial);
  }
  cudaGetLastError();  // capture errors are not sticky; clear the last one for the plain rerun
}

}  // namespace

void StepGraph::capture(Context& ctx, const std::function<void()>& step) {
  CudaResources& r = cuda_resources(ctx);
  // From here on no segment of the pool goes back to the device: not mid-recording (an OOM retry or
  // a search's empty_cache would cudaFree while the stream records, a block the recording already
  // used among them), and not after, since the replays write into every segment it used.
  pool_->hold_segments(true);
  std::string why;
  cudaGraph_t graph = nullptr;
  {
    AllocatorSwap swap(ctx, pool_);
    // Relaxed: the pool may still need a cudaMalloc for a block the warm-up did not leave cached.
    cudaError_t status = cudaStreamBeginCapture(r.stream, cudaStreamCaptureModeRelaxed);
    if (status != cudaSuccess) {
      why = fmt::format("cudaStreamBeginCapture: {}", cudaGetErrorName(status));
    } else {
      try {
        step();
        status = cudaStreamEndCapture(r.stream, &graph);
        if (status != cudaSuccess) why = fmt::format("cudaStreamEndCapture: {}", cudaGetErrorName(status));
      } catch (const std::exception& e) {
        why = e.what();
        abandon_capture(r.stream);
      }
    }
  }
  if (why.empty()) {
    auto g = std::make_unique<Graph>();
    g->stream = r.stream;
    g->device = r.device;
    // AutoFreeOnLaunch: should a library allocate stream-ordered memory while recorded (cuBLAS may
    // take a workspace that way when it has none of its own), the graph holds an allocation that
    // outlives a launch, and without this flag the next launch fails (cudaGraphLaunch's contract).
    const cudaError_t status = cudaGraphInstantiate(&g->exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch);
    if (status == cudaSuccess)
      graph_ = std::move(g);
    else
      why = fmt::format("cudaGraphInstantiate: {}", cudaGetErrorName(status));
  }
  if (graph) cudaGraphDestroy(graph);
  if (graph_) {
    state_ = State::replaying;
    CUDL_CUDA_CHECK(cudaGraphLaunch(graph_->exec, r.stream), "replay the {} graph", what_);
    return;
  }
  cudaGetLastError();
  state_ = State::refused;
  fmt::print(stderr, "cudl: note: the {} cannot be captured as a CUDA graph ({}); it runs as plain launches\n", what_,
             why);
  pool_->hold_segments(false);  // no graph: nothing replays into the pool
  pool_->empty_cache();         // what the warm-up cached there; tensors still held keep their blocks
  step();                       // the recording run executed nothing: run it for real, from the context's pool
}

void StepGraph::run(Context& ctx, const std::function<void()>& step) {
  if (ctx.device().is_cpu() || !ctx.cuda_graphs() || state_ == State::refused) {
    step();
    return;
  }
  switch (state_) {
    case State::plain: {
      // A caching pool even under CUDL_NO_CACHING=1: the graph replays into the addresses it
      // recorded, so the blocks the recording freed must stay reserved, never go back to the
      // driver (a DirectAllocator would cudaFree them mid-recording, and the next cudaMalloc
      // anywhere could hand them to another tensor that every replay then overwrites).
      pool_ = std::make_shared<CachingAllocator>(std::make_unique<CudaMemory>(ctx.device().index));
      AllocatorSwap swap(ctx, pool_);
      step();
      state_ = State::warmed_up;
      return;
    }
    case State::warmed_up:
      capture(ctx, step);
      return;
    case State::replaying:
      CUDL_CUDA_CHECK(cudaGraphLaunch(graph_->exec, cuda_resources(ctx).stream), "replay the {} graph", what_);
      return;
    case State::refused:
      step();  // not reached: refused steps run above
      return;
  }
}

#else  // CPU-only build: no graphs, the step runs as written.

struct StepGraph::Graph {};

void StepGraph::capture(Context&, const std::function<void()>&) {}

void StepGraph::run(Context&, const std::function<void()>& step) { step(); }

#endif

StepGraph::StepGraph(std::string what) : what_(std::move(what)) {}

StepGraph::~StepGraph() = default;

std::size_t StepGraph::private_peak_bytes() const { return pool_ ? pool_->stats().peak_allocated_bytes : 0; }

}  // namespace cudl
