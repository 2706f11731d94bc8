#pragma once
// Timing for benchmarks, and the end-to-end model benchmark (a whole training step and inference
// on synthetic data), shared by `cudl bench --models` (tools/cudl/bench.cpp, which prints and
// writes JSON) and the Python module's cudl.bench (python/src/jobs.cpp, which returns dicts).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/models/network/sequential.hpp"

namespace cudl {

// A timing is "noisy" above this coefficient of variation of its samples.
constexpr double kBenchNoisyCv = 0.10;

struct BenchTiming {
  double median_ms = 0, min_ms = 0, q1_ms = 0, q3_ms = 0;
  double cv = 0;  // standard deviation over mean
  int samples = 0;
  double spread() const { return median_ms > 0 ? (q3_ms - q1_ms) / median_ms : 0.0; }  // IQR / median
  bool noisy() const { return cv > kBenchNoisyCv; }
};

// Median, min, quartiles and coefficient of variation of samples in milliseconds (at least one).
BenchTiming summarize_timings(std::vector<double> ms);

// Times `run` after a warm-up: `repeat` samples, then more in rounds of `repeat` (up to 10x) while
// their coefficient of variation is above kBenchNoisyCv and `budget_s` seconds have not passed,
// so a noisy machine gets more samples rather than a wrong median.
BenchTiming time_repeated(Context& ctx, const std::function<void()>& run, int repeat, double budget_s = 2.0);

struct ModelBenchResult {
  std::string what;  // "train_step" (forward, loss, backward, Adam) or "inference"
  std::string model;
  std::int64_t batch = 0;
  BenchTiming timing;
  double images_per_second = 0;
  std::size_t peak_bytes = 0;  // the pool's peak allocated bytes during the timing
};

// The batch sizes `cudl bench --models` times without --batch-sizes: 1, 32 and 64 for the ImageNet
// VGGs, 128 otherwise.
std::vector<std::int64_t> default_bench_batches(const std::string& model);

// Times `model`'s train step and inference at each batch size on ctx's device (images in [0, 1],
// labels cycling through the classes), `repeat` / 2 samples or more (time_repeated). With
// `profile`, every layer is timed too (after a warm-up call); `on_result` sees each result and the
// model (whose profile() then holds that run's per-layer times) as soon as it is measured.
void bench_model(Context& ctx, const std::string& model, const std::vector<std::int64_t>& batches, int repeat,
                 bool profile, const std::function<void(const ModelBenchResult&, const Sequential&)>& on_result);

}  // namespace cudl
