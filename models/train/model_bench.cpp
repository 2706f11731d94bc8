#include "cudl/models/train/model_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>
#include <string_view>
#include <utility>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/step_graph.hpp"
#include "cudl/engine/timer.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/train/step_capture.hpp"
#include "cudl/models/zoo/zoo.hpp"

namespace cudl {

BenchTiming summarize_timings(std::vector<double> ms) {
  CUDL_CHECK(!ms.empty(), "summarize_timings: no samples");
  std::sort(ms.begin(), ms.end());
  BenchTiming t;
  const std::size_t n = ms.size();
  t.samples = static_cast<int>(n);
  t.median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  t.min_ms = ms.front();
  t.q1_ms = ms[n / 4];
  t.q3_ms = ms[(3 * n) / 4 < n ? (3 * n) / 4 : n - 1];
  double mean = 0;
  for (double v : ms) mean += v;
  mean /= static_cast<double>(n);
  double var = 0;
  for (double v : ms) var += (v - mean) * (v - mean);
  t.cv = n > 1 && mean > 0 ? std::sqrt(var / static_cast<double>(n - 1)) / mean : 0.0;
  return t;
}

BenchTiming time_repeated(Context& ctx, const std::function<void()>& run, int repeat, double budget_s) {
  for (int i = 0; i < 2; ++i) run();  // warm-up: algorithm choice, caches, pool
  ctx.synchronize();
  std::vector<double> ms;
  Timer timer(ctx);
  const auto begin = std::chrono::steady_clock::now();
  const auto elapsed_s = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  };
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < repeat; ++i) {
      timer.start();
      run();
      ms.push_back(timer.stop_ms());
    }
    if (!summarize_timings(ms).noisy() || elapsed_s() > budget_s) break;
  }
  return summarize_timings(ms);
}

std::vector<std::int64_t> default_bench_batches(const std::string& model) {
  if (model.starts_with("vgg") && !model.ends_with("_cifar")) return {1, 32, 64};
  return {128};
}

void bench_model(Context& ctx, const std::string& name, const std::vector<std::int64_t>& batches, int repeat,
                 bool profile, const std::function<void(const ModelBenchResult&, const Sequential&)>& on_result) {
  const ModelSpec spec = model_spec(name);
  Sequential model = make_model(name);
  model.build(ctx, 1);
  Optimizer optimizer(ctx, model, OptimizerConfig{});
  for (std::int64_t batch : batches) {
    const Shape input{batch, spec.input[0], spec.input[1], spec.input[2]};
    Tensor x = Tensor::empty(input, ctx);
    ctx.backend().fill_uniform(ctx, x, -1.0f, 1.0f, 21, 0);
    ctx.backend().scale(ctx, x, 0.5f);
    ctx.backend().axpy(ctx, 1.0f, Tensor::full(input, 0.5f, ctx), x);  // pixels in [0, 1]
    std::vector<std::int32_t> host_labels(static_cast<std::size_t>(batch));
    // Labels cycle through the model's classes (a model file may have fewer than ten).
    const std::size_t classes = static_cast<std::size_t>(std::max(1, spec.num_classes));
    for (std::size_t i = 0; i < host_labels.size(); ++i) host_labels[i] = static_cast<std::int32_t>(i % classes);
    Tensor labels = Tensor::from_host(std::span<const std::int32_t>(host_labels), {batch}, ctx);
    Tensor loss = Tensor::empty({1}, ctx);
    auto launches = [&] {
      model.zero_grad(ctx);
      Tensor logits = model.forward(ctx, x, true);
      Tensor probs = Tensor::empty(logits.shape(), ctx), dlogits = Tensor::empty(logits.shape(), ctx);
      ctx.backend().softmax_cross_entropy_forward(ctx, logits, labels, probs, loss);
      ctx.backend().softmax_cross_entropy_backward(ctx, probs, labels, 1.0f, dlogits);
      model.backward(ctx, dlogits);
      optimizer.apply(ctx);
    };
    // With --cuda-graphs the train and inference steps replay as graphs (fresh ones per batch
    // size), as `cudl train` replays its step (models/train/step_capture.hpp: the optimizer's
    // per-step values and the dropout counters live on the device); not under --profile, whose
    // per-layer events need the launches to run one by one.
    TrainStepGraph train_graph(model);
    auto train_step = [&] {
      optimizer.prepare(ctx, 1e-4f);  // host work: the step count and rate, before every step
      if (profile)
        launches();
      else
        train_graph.run(ctx, launches);
    };
    StepGraph inference_graph("inference step");
    auto forward = [&] { (void)model.forward(ctx, x, false); };
    auto inference = [&] {
      if (profile)
        forward();
      else
        inference_graph.run(ctx, forward);
    };
    for (auto [what, run] : {std::pair<const char*, std::function<void()>>{"train_step", train_step},
                             std::pair<const char*, std::function<void()>>{"inference", inference}}) {
      ctx.allocator().reset_peak_stats();
      // Inference holds the weights constant, as eval and predict do: the CPU convolutions lay
      // them out once instead of on every call (ResNet-50 at batch 1: 53 reorders, about 12 ms).
      const ConstantHold weights =
          std::string_view(what) == "inference" ? model.hold_parameters_constant(ctx) : nullptr;
      if (profile) run();  // the warm-up, outside the profile
      model.set_profiling(profile);
      ModelBenchResult r;
      r.what = what;
      r.model = name;
      r.batch = batch;
      r.timing = time_repeated(ctx, run, std::max(1, repeat / 2));
      r.images_per_second = static_cast<double>(batch) / (r.timing.median_ms / 1e3);
      // A graph's private pool holds its step's memory beside the context's pool.
      const bool inferring = std::string_view(what) == "inference";
      r.peak_bytes = ctx.allocator().stats().peak_allocated_bytes +
                     (inferring ? inference_graph.private_peak_bytes() : train_graph.private_peak_bytes());
      on_result(r, model);
    }
  }
}

}  // namespace cudl
