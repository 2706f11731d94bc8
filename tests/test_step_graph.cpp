// StepGraph (engine/step_graph.hpp): on the CPU the step simply runs each time; on a GPU a
// replayed inference step and a replayed style iteration give exactly the plain launches' results
// (same kernels, same algorithms), the host code runs only for the warm-up and the recording, and
// a step that synchronises falls back to plain launches with one note and no lost result.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cudl/engine/allocator.hpp"
#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/step_graph.hpp"
#include "cudl/layers/conv2d.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/test_util.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

using namespace cudl;
using cudl::testing::contains;

namespace {

Sequential small_net(Context& ctx) {
  Sequential m;
  m.add("features.0", std::make_unique<Conv2d>(3, 8, 3, Conv2dParams{1, 1}));
  m.add("features.1", relu());
  m.add("features.2", std::make_unique<MaxPool2d>(2));
  m.add("features.3", std::make_unique<Conv2d>(8, 8, 3, Conv2dParams{1, 1}));
  m.add("features.4", relu());
  m.add("flatten", std::make_unique<Flatten>());
  m.add("classifier.0", std::make_unique<Linear>(8 * 8 * 8, 10));
  m.build(ctx, 5);
  return m;
}

// Batch-2 inputs [2, 3, 16, 16], a different one per seed.
std::vector<float> input_values(unsigned seed) { return cudl::testing::random_values(2 * 3 * 16 * 16, seed); }

// small_net's inference on CUDA as a replayable step: the input is loaded into x before each call,
// the step writes the logits into out (both allocated once, so a replay finds them where recorded).
struct InferenceStep {
  Context gpu{Device::cuda(0)};
  Sequential model = small_net(gpu);
  Tensor x = Tensor::empty(Shape{2, 3, 16, 16}, gpu), out = Tensor::empty(Shape{2, 10}, gpu);
  int host_runs = 0;

  void operator()() {
    ++host_runs;
    Tensor y = model.forward(gpu, x, false);
    gpu.backend().copy(gpu, y, out);
  }
  void load(unsigned seed) { gpu.backend().copy(gpu, Tensor::from_host(input_values(seed), x.shape(), gpu), x); }
  // Plain launches on inputs 1 to 4: the reference for each.
  std::vector<std::vector<float>> plain_results() {
    std::vector<std::vector<float>> results;
    for (unsigned seed = 1; seed <= 4; ++seed) {
      load(seed);
      (*this)();
      results.push_back(out.to_vector(gpu));
    }
    return results;
  }
};

TEST(StepGraph, OnTheCpuTheStepRunsEveryTime) {
  Context ctx;
  ctx.set_cuda_graphs(true);  // asked for, but the CPU has no graphs
  StepGraph graph("test step");
  int runs = 0;
  for (int i = 0; i < 4; ++i) graph.run(ctx, [&] { ++runs; });
  EXPECT_EQ(runs, 4);
  EXPECT_EQ(graph.state(), StepGraph::State::plain);
  EXPECT_EQ(graph.private_peak_bytes(), 0u);
}

TEST(StepGraph, CudaReplayedInferenceMatchesPlainLaunches) {
  CUDL_REQUIRE_CUDA();
  InferenceStep step;
  const std::vector<std::vector<float>> expected = step.plain_results();
  step.gpu.set_cuda_graphs(true);
  StepGraph graph("inference step");
  step.host_runs = 0;
  for (unsigned seed = 1; seed <= 4; ++seed) {
    step.load(seed);
    graph.run(step.gpu, [&] { step(); });
    EXPECT_EQ(step.out.to_vector(step.gpu), expected[seed - 1]) << "input " << seed;
  }
  EXPECT_EQ(graph.state(), StepGraph::State::replaying);
  EXPECT_EQ(step.host_runs, 2);  // the warm-up and the recording; the last two were replays
  EXPECT_GT(graph.private_peak_bytes(), 0u);
}

#if defined(CUDL_HAVE_CUDA)
// Sets an environment variable for its lifetime, restoring the previous value (or its absence).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};
#endif

// CUDL_NO_CACHING=1 (for compute-sanitizer) makes new pools plain cudaMalloc/cudaFree. The graph's
// private pool must stay a caching one: a block the recording frees has to stay reserved, since
// every replay writes there again. Were it handed back to the driver, the next cudaMalloc (here:
// canary tensors of the step's sizes, each its own cudaMalloc) could get it, and the replays would
// overwrite them.
TEST(StepGraph, CudaReplayUnderNoCachingKeepsTheRecordedMemoryReserved) {
#if defined(CUDL_HAVE_CUDA)
  CUDL_REQUIRE_CUDA();
  InferenceStep step;
  const std::vector<std::vector<float>> expected = step.plain_results();
  const ScopedEnv no_caching("CUDL_NO_CACHING", "1");
  Context canaries_ctx(Device::cuda(0));
  canaries_ctx.exchange_allocator(std::make_shared<DirectAllocator>(std::make_unique<CudaMemory>(0)));
  std::vector<Tensor> canaries;
  step.gpu.set_cuda_graphs(true);
  StepGraph graph("inference step");
  for (unsigned seed = 1; seed <= 4; ++seed) {
    step.load(seed);
    graph.run(step.gpu, [&] { step(); });
    EXPECT_EQ(step.out.to_vector(step.gpu), expected[seed - 1]) << "input " << seed;
    if (seed == 2) {  // recorded: take fresh device memory of the step's sizes
      for (const Shape& s : {Shape{2, 8, 16, 16}, Shape{2, 8, 8, 8}, Shape{2, 512}, Shape{2, 10}})
        for (int i = 0; i < 4; ++i) canaries.push_back(Tensor::full(s, 7.0f, canaries_ctx));
      canaries_ctx.synchronize();
    }
  }
  EXPECT_EQ(graph.state(), StepGraph::State::replaying);
  for (const Tensor& c : canaries)
    EXPECT_EQ(c.to_vector(canaries_ctx), std::vector<float>(static_cast<std::size_t>(c.numel()), 7.0f))
        << "a replay wrote into memory allocated after the recording (" << fmt::format("{}", c.shape()) << ")";
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(StepGraph, CudaStepThatSynchronisesRunsPlainlyAfterOneNote) {
  CUDL_REQUIRE_CUDA();
  Context gpu(Device::cuda(0));
  gpu.set_cuda_graphs(true);
  Tensor counter = Tensor::zeros(Shape{1}, gpu);
  int host_runs = 0;
  StepGraph graph("syncing step");
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 4; ++i)
    graph.run(gpu, [&] {
      ++host_runs;
      gpu.backend().axpy(gpu, 1.0f, Tensor::full(Shape{1}, 1.0f, gpu), counter);
      gpu.synchronize();  // not allowed while a stream records
    });
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(graph.state(), StepGraph::State::refused);
  EXPECT_TRUE(contains(err, "the syncing step cannot be captured as a CUDA graph")) << err;
  // Every call's work happened once: the failed recording was rerun plainly.
  EXPECT_EQ(counter.to_vector(gpu), std::vector<float>{4.0f});
  EXPECT_EQ(host_runs, 5);  // warm-up, the refused recording and its plain rerun, two plain calls
}

TEST(StepGraph, CudaReplayedStyleIterationsMatchPlainLaunches) {
  CUDL_REQUIRE_CUDA();
  const std::string data = cudl::testing::source_dir() + "/tests/data/";
  const Image content = read_image(data + "chelsea.png"), style = read_image(data + "brick.png");
  for (const StyleOptimizer optimizer : {StyleOptimizer::adam, StyleOptimizer::lbfgs}) {
    StyleOptions o;
    o.size = 48;
    o.iters = 6;
    o.optimizer = optimizer;
    o.print_every = 0;
    std::vector<StyleResult> results;
    for (const bool graphs : {false, true}) {
      Context gpu(Device::cuda(0));
      gpu.set_cuda_graphs(graphs);
      Sequential net = make_style_network(gpu, o, "random:1");
      results.push_back(run_style_transfer(gpu, net, content, {style}, o));
    }
    const auto& plain = results[0].log.at(0);
    const auto& replayed = results[1].log.at(0);
    ASSERT_EQ(plain.size(), replayed.size());
    for (std::size_t k = 0; k < plain.size(); ++k) {
      EXPECT_EQ(replayed[k].total, plain[k].total) << "iteration " << k;
      EXPECT_EQ(replayed[k].style, plain[k].style) << "iteration " << k;
    }
    EXPECT_EQ(results[1].image.pixels, results[0].image.pixels);
  }
}

}  // namespace
