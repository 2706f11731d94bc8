// `cudl bench`: each kernel on each backend, timed after a warm-up (CUDA events on the GPU),
// reported as GFLOP/s or GB/s and as a share of the machine's ceiling measured in the same run:
// - FLOP/s against a large SGEMM, measured before the cases and again after every few of them
//   (the best run counts: a machine busy at the first measurement does not set a low ceiling);
// - GB/s against a copy moving the same number of bytes, timed right beside the case (so a case
//   whose data fits in cache meets a copy that fits too, and a streaming case a streaming copy).
// Each case reports its median, min and spread (interquartile range over the median); samples are
// added while the coefficient of variation stays above 10% and its time budget lasts, and what
// stays noisy is flagged. `--compare OLD.json NEW.json` sets two runs side by side.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/cpu_threads.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/io/atomic_file.hpp"
#include "cudl/engine/io/files.hpp"
#include "cudl/engine/io/json.hpp"
#include "cudl/engine/op_table.hpp"
#include "cudl/engine/text.hpp"
#include "cudl/engine/timer.hpp"
#include "cudl/layers/optimizer.hpp"
#include "cudl/models/train/model_bench.hpp"
#include "cudl/models/zoo/zoo.hpp"
#if defined(CUDL_HAVE_CUDA)
#include "cudl/kernels/cuda/peers.hpp"
#endif
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {
namespace {

enum class Rate { flops, bytes };

// One benchmark case: `prepare` allocates its tensors on a context and returns the closure timed.
struct BenchCase {
  std::string op;
  std::string shape;
  Rate rate;
  double work;  // FLOPs or bytes moved per run
  std::function<std::function<void()>(Context&)> prepare;
  // A peer row: a library's equivalent of the case `peer_of` (the same op and shape) timed on the
  // same kind of buffer, as a baseline for cudl's own kernel. CUDA only: on the CPU it is absent.
  std::string peer_of = {};
  std::string peer = {};  // what it calls, for the flags column
};

// Timings, their summary and the noisy threshold: the library's (models/train/model_bench.hpp), shared
// with the Python module's cudl.bench.
using Timing = BenchTiming;
constexpr double kNoisyCv = kBenchNoisyCv;

Timing time_run(Context& ctx, const std::function<void()>& run, int repeat, double budget_s = 2.0) {
  return time_repeated(ctx, run, repeat, budget_s);
}

Tensor random_tensor(Context& ctx, const Shape& shape, std::uint64_t seed, DType dtype = DType::f32) {
  Tensor t = Tensor::empty(shape, ctx);
  ctx.backend().fill_uniform(ctx, t, -1.0f, 1.0f, seed, 0);
  return t.cast(ctx, dtype);
}

constexpr double kFloat = 4.0;

// With a half `dtype` (--dtype), a, b and c are half (autocast's linear layer): f32 products.
BenchCase gemm_case(std::int64_t m, std::int64_t n, std::int64_t k, DType dtype = DType::f32) {
  return {"gemm", fmt::format("{}x{}x{}", m, n, k), Rate::flops, 2.0 * m * n * k, [=](Context& ctx) {
            Tensor a = random_tensor(ctx, {m, k}, 1, dtype), b = random_tensor(ctx, {k, n}, 2, dtype);
            Tensor c = Tensor::empty({m, n}, ctx, dtype);
            return std::function<void()>(
                [&ctx, a, b, c]() mutable { ctx.backend().gemm(ctx, false, false, 1.0f, a, b, 0.0f, c); });
          }};
}

// With a half `dtype` every tensor is half except dw, an f32 master-weight gradient (autocast).
std::vector<BenchCase> conv_cases_padded(Shape x, Shape w, Conv2dParams p, DType dtype = DType::f32) {
  Shape y = conv2d_output_shape(x, w, p);
  double flops = 2.0 * static_cast<double>(y.numel()) * static_cast<double>(w[1] * w[2] * w[3]);
  std::string shape = fmt::format("x={} w={}", x, w);
  return {
      {"conv2d_fwd", shape, Rate::flops, flops,
       [=](Context& ctx) {
         Tensor tx = random_tensor(ctx, x, 3, dtype), tw = random_tensor(ctx, w, 4, dtype);
         Tensor ty = Tensor::empty(y, ctx, dtype);
         return std::function<void()>(
             [&ctx, tx, tw, ty, p]() mutable { ctx.backend().conv2d_forward(ctx, tx, tw, p, ty); });
       }},
      {"conv2d_bwd_data", shape, Rate::flops, flops,
       [=](Context& ctx) {
         Tensor dy = random_tensor(ctx, y, 5, dtype), tw = random_tensor(ctx, w, 4, dtype);
         Tensor dx = Tensor::empty(x, ctx, dtype);
         return std::function<void()>(
             [&ctx, dy, tw, dx, p]() mutable { ctx.backend().conv2d_backward_data(ctx, dy, tw, p, dx); });
       }},
      {"conv2d_bwd_filter", shape, Rate::flops, flops,
       [=](Context& ctx) {
         Tensor tx = random_tensor(ctx, x, 3, dtype), dy = random_tensor(ctx, y, 5, dtype);
         Tensor dw = Tensor::empty(w, ctx);
         return std::function<void()>(
             [&ctx, tx, dy, dw, p]() mutable { ctx.backend().conv2d_backward_filter(ctx, tx, dy, p, dw, false); });
       }},
  };
}

// The group count follows from the shapes, as in a grouped weight [K, C/G, R, S]: w [32,1,3,3] on
// x [N,32,H,W] is a depthwise convolution.
std::vector<BenchCase> conv_cases(Shape x, Shape w, int pad, DType dtype) {
  Conv2dParams p;
  p.pad_h = p.pad_w = pad;
  if (w[1] > 0 && x[1] % w[1] == 0) p.groups = static_cast<int>(x[1] / w[1]);
  return conv_cases_padded(x, w, p, dtype);
}

BenchCase relu_case(std::int64_t n) {
  return {"relu_fwd", fmt::format("{}", Shape{n}), Rate::bytes, 2 * kFloat * static_cast<double>(n), [=](Context& ctx) {
            Tensor x = random_tensor(ctx, {n}, 6), y = Tensor::empty({n}, ctx);
            return std::function<void()>(
                [&ctx, x, y]() mutable { ctx.backend().activation_forward(ctx, Activation::relu, 0.0f, x, y); });
          }};
}

BenchCase maxpool_case(const Shape& map) {
  Pool2dParams pool;
  const Shape pooled = pool2d_output_shape(map, pool);
  return {"maxpool2d_fwd", fmt::format("{}", map), Rate::bytes,
          kFloat * static_cast<double>(map.numel() + 2 * pooled.numel()), [=](Context& ctx) {
            Tensor x = random_tensor(ctx, map, 7), y = Tensor::empty(pooled, ctx);
            Tensor arg = Tensor::empty(pooled, ctx, DType::i32);
            return std::function<void()>(
                [&ctx, x, y, arg, pool]() mutable { ctx.backend().maxpool2d_forward(ctx, x, pool, y, arg); });
          }};
}

BenchCase gram_case(const Shape& feat) {
  return {"gram_fwd", fmt::format("{}", feat), Rate::flops,
          2.0 * static_cast<double>(feat[0] * feat[1] * feat[1] * feat[2] * feat[3]), [=](Context& ctx) {
            Tensor x = random_tensor(ctx, feat, 8), g = Tensor::empty({feat[0], feat[1], feat[1]}, ctx);
            return std::function<void()>([&ctx, x, g]() mutable { ctx.backend().gram_forward(ctx, x, g); });
          }};
}

BenchCase softmax_xent_case(std::int64_t rows, std::int64_t classes) {
  return {"softmax_xent_fwd", fmt::format("{}", Shape{rows, classes}), Rate::bytes,
          2 * kFloat * static_cast<double>(rows * classes), [=](Context& ctx) {
            Tensor logits = random_tensor(ctx, {rows, classes}, 9), probs = Tensor::empty({rows, classes}, ctx);
            std::vector<std::int32_t> labels(static_cast<std::size_t>(rows));
            for (std::size_t i = 0; i < labels.size(); ++i)
              labels[i] = static_cast<std::int32_t>(static_cast<std::int64_t>(i) % classes);
            Tensor tl = Tensor::from_host(std::span<const std::int32_t>(labels), {rows}, ctx);
            Tensor loss = Tensor::empty({1}, ctx);
            return std::function<void()>([&ctx, logits, tl, probs, loss]() mutable {
              ctx.backend().softmax_cross_entropy_forward(ctx, logits, tl, probs, loss);
            });
          }};
}

BenchCase adam_case(std::int64_t n) {
  return {"adam_step", fmt::format("{}", Shape{n}), Rate::bytes, 7 * kFloat * static_cast<double>(n),
          [=](Context& ctx) {
            Tensor p = random_tensor(ctx, {n}, 10), g = random_tensor(ctx, {n}, 11);
            Tensor m = Tensor::zeros({n}, ctx), v = Tensor::zeros({n}, ctx);
            return std::function<void()>(
                [&ctx, p, g, m, v]() mutable { ctx.backend().adam_step(ctx, AdamParams{}, p, g, m, v); });
          }};
}

BenchCase sum_case(std::int64_t n) {
  return {"sum", fmt::format("{}", Shape{n}), Rate::bytes, kFloat * static_cast<double>(n), [=](Context& ctx) {
            Tensor x = random_tensor(ctx, {n}, 12), out = Tensor::empty({1}, ctx);
            return std::function<void()>([&ctx, x, out]() mutable { ctx.backend().sum(ctx, x, out); });
          }};
}

// sum's cases: cudl's own reduction and, in a CUDA build, CUB's beside it on a buffer of the same size.
std::vector<BenchCase> sum_cases(std::int64_t n) {
  std::vector<BenchCase> cases{sum_case(n)};
#if defined(CUDL_HAVE_CUDA)
  BenchCase peer = sum_case(n);
  peer.op = "sum:cub";
  peer.peer_of = "sum";
  peer.peer = "cub::DeviceReduce::Sum, f32 accumulator";
  peer.prepare = [=](Context& ctx) {
    Tensor x = random_tensor(ctx, {n}, 12), out = Tensor::empty({1}, ctx);
    return std::function<void()>([&ctx, x, out]() mutable { cub_sum(ctx, x, out); });
  };
  cases.push_back(std::move(peer));
#endif
  return cases;
}

// The cases of one op of the op table (engine/op_table.hpp) at one of its bench sizes.
std::vector<BenchCase> cases_of(const OpSpec& op, const BenchDims& d, DType dtype) {
  const auto shape4 = [&](std::size_t at) { return Shape{d[at], d[at + 1], d[at + 2], d[at + 3]}; };
  if (op.name == "gemm") return {gemm_case(d[0], d[1], d[2], dtype)};
  if (op.name == "conv2d") return conv_cases(shape4(0), shape4(4), static_cast<int>(d[6] / 2), dtype);
  if (op.name == "activation") return {relu_case(d[0])};
  if (op.name == "maxpool2d") return {maxpool_case(shape4(0))};
  if (op.name == "gram") return {gram_case(shape4(0))};
  if (op.name == "softmax_cross_entropy") return {softmax_xent_case(d[0], d[1])};
  if (op.name == "adam_step") return {adam_case(d[0])};
  if (op.name == "sum") return sum_cases(d[0]);
  CUDL_THROW("bench: the op table benches '{}' but bench.cpp has no case for it", op.name);
}

// Every op the table benches, at --sizes small or vgg, in the table's order.
std::vector<BenchCase> make_cases(const std::string& sizes, DType dtype) {
  const bool vgg = sizes == "vgg";
  std::vector<BenchCase> cases;
  for (const OpSpec& op : op_table())
    for (const BenchDims& d : vgg ? op.bench_vgg : op.bench_small)
      for (auto& c : cases_of(op, d, dtype)) cases.push_back(std::move(c));
  return cases;
}

// --shape: the shape syntax of each op, and its cases at a user's shape.
constexpr const char* kShapeHelp =
    "With one op in --ops, time it at this shape instead: gemm MxNxK; conv2d_fwd, conv2d_bwd_data, "
    "conv2d_bwd_filter NxCxHxW,KxCxRxS (padding R/2, S/2); maxpool2d_fwd, gram_fwd NxCxHxW; softmax_xent_fwd "
    "NxK (rows x classes); relu_fwd, adam_step, sum N";

std::vector<BenchCase> cases_at_shape(const std::string& op, const std::string& text, DType dtype) {
  // Dimensions: whole numbers separated by 'x', groups by ','.
  std::vector<std::vector<std::int64_t>> groups(1);
  std::string number;
  const auto flush = [&] {
    CUDL_CHECK(!number.empty(), "--shape '{}': a dimension is missing ({})", text, kShapeHelp);
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), v);
    CUDL_CHECK(ec == std::errc{} && end == number.data() + number.size() && v >= 1 && v <= (1ll << 40),
               "--shape '{}': '{}' is not a whole number in [1, 2^40]", text, number);
    groups.back().push_back(v);
    number.clear();
  };
  for (char c : text) {
    if (c == 'x' || c == ',') {
      flush();
      if (c == ',') groups.emplace_back();
    } else {
      number += c;
    }
  }
  flush();
  const auto want = [&](std::vector<std::size_t> ranks) {
    bool ok = groups.size() == ranks.size();
    for (std::size_t i = 0; ok && i < ranks.size(); ++i) ok = groups[i].size() == ranks[i];
    CUDL_CHECK(ok, "--shape '{}' does not fit {} ({})", text, op, kShapeHelp);
  };
  const auto shape = [](const std::vector<std::int64_t>& d) { return Shape{d[0], d[1], d[2], d[3]}; };
  if (op == "gemm") {
    want({3});
    return {gemm_case(groups[0][0], groups[0][1], groups[0][2], dtype)};
  }
  if (op.starts_with("conv2d_")) {
    want({4, 4});
    const Shape x = shape(groups[0]), w = shape(groups[1]);
    CUDL_CHECK(x[1] == w[1], "--shape '{}': the input has {} channels but the filter takes {}", text, x[1], w[1]);
    Conv2dParams p;
    p.pad_h = w[2] / 2;
    p.pad_w = w[3] / 2;
    std::vector<BenchCase> all = conv_cases_padded(x, w, p, dtype);
    std::erase_if(all, [&](const BenchCase& c) { return c.op != op; });
    return all;
  }
  if (op == "maxpool2d_fwd" || op == "gram_fwd") {
    want({4});
    return {op == "gram_fwd" ? gram_case(shape(groups[0])) : maxpool_case(shape(groups[0]))};
  }
  if (op == "softmax_xent_fwd") {
    want({2});
    return {softmax_xent_case(groups[0][0], groups[0][1])};
  }
  want({1});
  if (op == "relu_fwd") return {relu_case(groups[0][0])};
  if (op == "adam_step") return {adam_case(groups[0][0])};
  if (op == "sum") return sum_cases(groups[0][0]);
  CUDL_THROW("--ops '{}': no such op ({})", op, bench_op_names());
}

// GFLOP/s of a large SGEMM (the best of its samples).
double gemm_peak_gflops(Context& ctx, int repeat) {
  const std::int64_t dim = ctx.device().is_cpu() ? 1024 : 8192;
  BenchCase g = gemm_case(dim, dim, dim);
  auto run_gemm = g.prepare(ctx);
  return g.work / (time_run(ctx, run_gemm, repeat).min_ms * 1e6);
}

// GB/s (read + write) of a copy moving `bytes` in all: `bytes` / 2 read and as many written.
double copy_gbps(Context& ctx, double bytes, int repeat) {
  const auto n = std::max<std::int64_t>(1, static_cast<std::int64_t>(bytes / (2.0 * kFloat)));
  Tensor src = Tensor::zeros({n}, ctx), dst = Tensor::empty({n}, ctx);
  const Timing t = time_run(
      ctx, [&] { ctx.backend().copy(ctx, src, dst); }, repeat);
  return 2.0 * kFloat * static_cast<double>(n) / (t.min_ms * 1e6);
}

// The streaming copy's bandwidth, for the table's header and the JSON: 128 MiB on the CPU, 1 GiB on
// a GPU (both far beyond the caches).
double streaming_copy_gbps(Context& ctx, int repeat) {
  return copy_gbps(ctx, ctx.device().is_cpu() ? 2.0 * (32ll << 20) * kFloat : 2.0 * (256ll << 20) * kFloat, repeat);
}

std::vector<std::string> non_empty_items(const std::string& text) {
  std::vector<std::string> items = split_list(text);
  std::erase(items, std::string());
  return items;
}

constexpr std::int64_t kMaxBatch = 1 << 16;

// --dtype, or without it the dtype --precision computes convolutions and GEMMs in.
DType case_dtype(const std::string& name, Precision precision) {
  if (name.empty()) return autocast_dtype(precision);
  return name == "bf16" ? DType::bf16 : name == "f16" ? DType::f16 : DType::f32;
}

struct Options {
  std::string devices = "cpu,cuda";
  std::string ops;
  std::string models;
  std::string batch_sizes;
  bool profile = false;
  std::string sizes = "small";
  std::string dtype;  // empty: as --precision
  int repeat = 10;
  std::string json_path;
  std::string shape;
  std::vector<std::string> compare;
  ComputeOptions compute;
  PipelineBenchArgs pipeline;
};

// Per call of the layer (time_run adds samples while they are noisy, so the count varies), with
// the warm-up excluded: the first call pays one-time costs (oneDNN's JIT GEMM kernels, seconds of
// first touches) that would land on whichever layer met them first.
void print_layer_profile(const Sequential& model, const char* what) {
  fmt::print("  per-layer ms per {} (each layer waited for; totals include that overhead):\n", what);
  for (const auto& t : model.profile()) {
    const double calls = static_cast<double>(std::max<std::int64_t>(1, t.calls));
    fmt::print("    {:<16} forward {:>9.3f}  backward {:>9.3f}{}\n", t.name, t.forward_ms / calls,
               t.backward_ms / calls,
               t.fused_into.empty() ? "" : fmt::format("  (forward fused into {}: {})", t.fused_into, t.fused_op));
  }
}

// Images per second of a whole training step (forward, loss, backward, Adam) and of inference,
// on synthetic data of the model's input shape, with the pool's peak memory (models/train/model_bench.hpp).
void bench_models(Context& ctx, const Options& opt, nlohmann::json& results) {
  for (const auto& name : non_empty_items(opt.models)) {
    std::vector<std::int64_t> batches;
    if (!opt.batch_sizes.empty()) batches = parse_whole_number_list("--batch-sizes", opt.batch_sizes, 1, kMaxBatch);
    if (batches.empty()) batches = default_bench_batches(name);
    bench_model(ctx, name, batches, opt.repeat, opt.profile, [&](const ModelBenchResult& r, const Sequential& model) {
      const Timing& t = r.timing;
      const std::string shape = fmt::format("{} batch {}", name, r.batch);
      if (opt.profile) print_layer_profile(model, r.what.c_str());
      fmt::print("{:<18} {:<34} {:<7} {:>10.3f} {:>10.3f} {:>6.1f}% {:>15} {:>7} {:>8}  peak mem {}{}\n", r.what, shape,
                 ctx.device().str(), t.median_ms, t.min_ms, 100 * t.spread(),
                 fmt::format("{:.1f} img/s", r.images_per_second), "-", "-", format_bytes(r.peak_bytes),
                 t.noisy() ? fmt::format("; noisy (cv {:.0f}%, {} samples)", 100 * t.cv, t.samples) : "");
      results.push_back({{"op", r.what},
                         {"backend", ctx.device().str()},
                         {"shape", shape},
                         {"model", name},
                         {"batch", r.batch},
                         {"median_ms", t.median_ms},
                         {"min_ms", t.min_ms},
                         {"cv", t.cv},
                         {"samples", t.samples},
                         {"rate", r.images_per_second},
                         {"rate_unit", "img/s"},
                         {"peak_memory_bytes", r.peak_bytes}});
    });
  }
}

// The machine and the build, for the JSON: results are only comparable with their context.
nlohmann::json machine_json() {
  nlohmann::json m;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.starts_with("model name")) {
      m["cpu"] = line.substr(line.find(':') + 2);
      break;
    }
  m["cores"] = std::thread::hardware_concurrency();
  std::ifstream loadavg("/proc/loadavg");
  double l1 = 0, l5 = 0, l15 = 0;
  if (loadavg >> l1 >> l5 >> l15) m["load_average"] = {l1, l5, l15};
  nlohmann::json gpus = nlohmann::json::array();
  for (const CudaDeviceInfo& d : cuda_devices())
    gpus.push_back({{"index", d.index},
                    {"name", d.name},
                    {"compute_capability", fmt::format("{}.{}", d.cc_major, d.cc_minor)},
                    {"multiprocessors", d.multiprocessors}});
  m["gpus"] = gpus;
  const BuildInfo build = build_info();
  m["build"] = {{"cudl", build.cudl_version},       {"commit", CUDL_GIT_COMMIT}, {"build_type", CUDL_BUILD_TYPE},
                {"compiler", CUDL_COMPILER},        {"cpu_blas", build.blas},    {"cuda_runtime", build.cuda_runtime},
                {"cuda_driver", build.cuda_driver}, {"cudnn", build.cudnn},      {"cublas", build.cublas}};
  return m;
}

struct Row {
  BenchCase c;
  Device device;
  Timing t;
  double same_size_copy_gbps = 0;  // bandwidth cases only
};

// Other processes' busy cores above which a run's timings are flagged as taken under load.
constexpr double kUnderLoadCores = 0.25;

void run_bench(const Options& opt) {
  check_outputs_spare_inputs({}, {{"--json", opt.json_path}});
  check_writable_output("--json", opt.json_path);
  std::vector<Device> devices;
  for (const auto& name : non_empty_items(opt.devices)) {
    Device d = Device::parse(name);
    if (d.is_cuda() && cuda_device_count() == 0) {
      fmt::print("{}: skipped (no CUDA device)\n", name);
      continue;
    }
    devices.push_back(d);
  }
  CUDL_CHECK(!devices.empty(), "bench: no usable device in '{}'", opt.devices);
  auto wanted = non_empty_items(opt.ops);
  // With --models alone, only the models run; --ops selects kernels (all by default).
  std::vector<BenchCase> cases;
  if (!opt.shape.empty()) {
    CUDL_CHECK(wanted.size() == 1, "--shape needs exactly one op in --ops (got '{}')", opt.ops);
    cases = cases_at_shape(wanted[0], opt.shape, case_dtype(opt.dtype, opt.compute.precision));
  } else if (opt.models.empty() || !wanted.empty()) {
    cases = make_cases(opt.sizes, case_dtype(opt.dtype, opt.compute.precision));
    std::erase_if(cases, [&](const BenchCase& c) {
      const std::string& op = c.peer_of.empty() ? c.op : c.peer_of;  // a peer comes with its op
      return !wanted.empty() && std::find(wanted.begin(), wanted.end(), op) == wanted.end();
    });
    CUDL_CHECK(!cases.empty(), "bench: no op matches --ops '{}'", opt.ops);
  }

  // Read before the cases run (the load average then is the one that shaped them), and only for --json.
  const nlohmann::json machine = opt.json_path.empty() ? nlohmann::json() : machine_json();
  nlohmann::json results = nlohmann::json::array();
  std::map<std::pair<std::string, std::string>, double> cpu_ms;  // (op, shape) -> median on the CPU
  bool any_noisy = false, any_above = false;
  const OtherLoadMeter other_load;  // other processes' CPU time while the cases run: flags a busy machine
  fmt::print("{:<18} {:<34} {:<7} {:>10} {:>10} {:>7} {:>15} {:>7} {:>8}  {}\n", "op", "shape", "device", "median ms",
             "min ms", "spread", "rate", "% peak", "speedup", "flags");
  for (Device device : devices) {
    Context ctx(device);
    apply_compute_options(ctx, opt.compute);
    if (cases.empty()) {
      bench_models(ctx, opt, results);
      continue;
    }
    // Every case first, the SGEMM ceiling measured before them and after every kPeakEvery of them
    // (the best counts), then the table: each share against that best ceiling.
    constexpr std::size_t kPeakEvery = 4;
    double gflops = gemm_peak_gflops(ctx, opt.repeat);
    const double streaming_gbps = streaming_copy_gbps(ctx, opt.repeat);
    std::vector<Row> rows;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const BenchCase& c = cases[i];
      if (!c.peer_of.empty() && !device.is_cuda()) continue;
      Row row{c, device, {}, 0.0};
      {
        auto run = c.prepare(ctx);
        row.t = time_run(ctx, run, opt.repeat);
      }
      if (c.rate == Rate::bytes) row.same_size_copy_gbps = copy_gbps(ctx, c.work, opt.repeat);
      rows.push_back(std::move(row));
      if ((i + 1) % kPeakEvery == 0) gflops = std::max(gflops, gemm_peak_gflops(ctx, opt.repeat));
    }
    gflops = std::max(gflops, gemm_peak_gflops(ctx, opt.repeat));
    fmt::print(
        "-- {}: peak {:.1f} GFLOP/s (SGEMM, best of {} measurements), {:.1f} GB/s (streaming copy); "
        "bandwidth cases against a copy of their own size\n",
        device, gflops, 2 + cases.size() / kPeakEvery, streaming_gbps);
    for (const Row& r : rows) {
      const BenchCase& c = r.c;
      const double rate = c.work / (r.t.median_ms * 1e6);  // GFLOP/s or GB/s
      const double ceiling = c.rate == Rate::flops ? gflops : r.same_size_copy_gbps;
      const double share = 100.0 * rate / ceiling;
      const char* unit = c.rate == Rate::flops ? "GFLOP/s" : "GB/s";
      std::optional<double> speedup;
      if (device.is_cpu()) {
        cpu_ms[{c.op, c.shape}] = r.t.median_ms;
      } else if (auto it = cpu_ms.find({c.op, c.shape}); it != cpu_ms.end()) {
        speedup = it->second / r.t.median_ms;
      }
      std::vector<std::string> flags;
      std::optional<double> own_over_peer;  // cudl's time over the peer's, same op and shape
      if (!c.peer_of.empty()) {
        for (const Row& own : rows)
          if (own.c.op == c.peer_of && own.c.shape == c.shape) own_over_peer = own.t.median_ms / r.t.median_ms;
        flags.push_back(own_over_peer ? fmt::format("peer of {} ({}): {} takes {:.2f}x its time", c.peer_of, c.peer,
                                                    c.peer_of, *own_over_peer)
                                      : fmt::format("peer of {} ({})", c.peer_of, c.peer));
      }
      if (r.t.noisy()) flags.push_back(fmt::format("noisy (cv {:.0f}%, {} samples)", 100 * r.t.cv, r.t.samples));
      if (share > 100.0)
        flags.push_back(c.rate == Rate::bytes      ? "above its copy (reads more than it writes)"
                        : c.op.starts_with("conv") ? "above the SGEMM (an algorithm with fewer multiply-adds)"
                                                   : "above the SGEMM (measured while the machine was busier?)");
      any_noisy = any_noisy || r.t.noisy();
      any_above = any_above || share > 100.0;
      std::string joined;
      for (const auto& f : flags) joined += (joined.empty() ? "" : "; ") + f;
      fmt::print("{:<18} {:<34} {:<7} {:>10.3f} {:>10.3f} {:>6.1f}% {:>15} {:>6.1f}% {:>8}  {}\n", c.op, c.shape,
                 device.str(), r.t.median_ms, r.t.min_ms, 100 * r.t.spread(), fmt::format("{:.1f} {}", rate, unit),
                 share, speedup ? fmt::format("{:.1f}x", *speedup) : std::string("-"), joined);
      nlohmann::json row = {{"op", c.op},
                            {"backend", device.str()},
                            {"shape", c.shape},
                            {"median_ms", r.t.median_ms},
                            {"min_ms", r.t.min_ms},
                            {"q1_ms", r.t.q1_ms},
                            {"q3_ms", r.t.q3_ms},
                            {"cv", r.t.cv},
                            {"samples", r.t.samples},
                            {"rate", rate},
                            {"rate_unit", unit},
                            {"peak_share", share / 100.0},
                            {"ceiling", ceiling},
                            {"peak_gflops", gflops},
                            {"peak_gbps", streaming_gbps}};
      if (speedup) row["speedup_vs_cpu"] = *speedup;
      if (!c.peer_of.empty()) {
        row["peer_of"] = c.peer_of;
        row["peer"] = c.peer;
        if (own_over_peer) row["own_time_over_peer"] = *own_over_peer;
      }
      if (r.t.noisy()) row["noisy"] = true;
      if (share > 100.0) row["above_ceiling"] = true;
      results.push_back(row);
    }
    bench_models(ctx, opt, results);
  }
  if (any_noisy)
    fmt::print(
        "noisy: the samples' coefficient of variation stayed above {:.0f}% (another process busy?); "
        "trust the min more than the median there\n",
        100 * kNoisyCv);
  if (any_above)
    fmt::print(
        "% peak above 100: a convolution algorithm doing fewer multiply-adds than the direct count, a case "
        "that reads more than it writes (a copy reads and writes alike), or a ceiling measured at a busier "
        "moment (then the case is usually noisy too)\n");
  // Timings shared with other busy processes are not the machine's (the review's medians under a
  // load of 4-5 were multiples of the 4 ms scheduler tick, spread 0.1%, and looked quiet).
  const double busy = other_load.busy_cores();
  const bool under_load = busy > kUnderLoadCores;
  if (under_load)
    fmt::print(
        "under load: other processes kept {:.1f} of {} cores busy while these ran ({} host thread{} here): the "
        "times are not this machine's quiet numbers; rerun on a quiet machine before comparing\n",
        busy, available_cpus(), cpu_threads(), cpu_threads() == 1 ? "" : "s");
  if (!opt.json_path.empty()) {
    nlohmann::json doc = {{"sizes", opt.sizes},
                          {"dtype", dtype_name(case_dtype(opt.dtype, opt.compute.precision))},
                          {"threads", cpu_threads()},
                          {"other_load_cores", busy},
                          {"under_load", under_load},
                          {"repeat", opt.repeat},
                          {"deterministic", opt.compute.deterministic},
                          {"precision", precision_name(opt.compute.precision)},
                          {"conv_algo", conv_search_name(opt.compute.conv_algo)},
                          {"cuda_graphs", opt.compute.cuda_graphs},
                          {"fuse", opt.compute.fuse},
                          {"machine", machine},
                          {"results", results}};
    if (!opt.shape.empty()) doc["shape"] = opt.shape;
    write_file_atomically(opt.json_path, doc.dump(2) + "\n");
    fmt::print("wrote {}\n", opt.json_path);
  }
}

// `cudl bench --compare OLD.json NEW.json`: the cases both runs hold, old time over new time, and a
// regression flag where NEW is slower by more than the noise of the two runs allows.
void compare_runs(const std::string& old_path, const std::string& new_path) {
  // One case of a results file: its key fields as strings, its times as positive finite numbers.
  struct Case {
    std::string op, shape, backend;
    double median_ms = 0, cv = 0;
  };
  const auto load = [](const std::string& path) {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    CUDL_CHECK(std::filesystem::is_regular_file(st), "--compare: cannot read '{}': {}", path,
               !std::filesystem::exists(st)        ? "no such file"
               : std::filesystem::is_directory(st) ? "it is a folder, not a results file"
                                                   : "not a regular file");
    const std::vector<std::uint8_t> bytes = io::read_file(path, "--compare");
    const nlohmann::json doc =
        io::parse_json(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                       fmt::format("--compare: '{}'", path));
    CUDL_CHECK(doc.is_object() && doc.contains("results") && doc["results"].is_array(),
               "--compare: '{}' is not a `cudl bench --json` file (no \"results\" list)", path);
    std::map<std::string, Case> rows;
    const auto& results = doc["results"];
    for (std::size_t i = 0; i < results.size(); ++i) {
      const nlohmann::json& r = results[i];
      CUDL_CHECK(r.is_object(), "--compare: '{}': results[{}] is not an object, got {}", path, i, io::json_excerpt(r));
      if (!r.contains("op") || !r.contains("median_ms")) continue;
      Case c;
      const auto text = [&](const char* field) {
        const auto it = r.find(field);
        if (it == r.end()) return std::string();
        CUDL_CHECK(it->is_string(), "--compare: '{}': results[{}].{} must be a string, got {}", path, i, field,
                   io::json_excerpt(*it));
        return it->get<std::string>();
      };
      const auto number = [&](const char* field, bool positive) {
        const auto it = r.find(field);
        if (it == r.end()) return 0.0;
        const double v = it->is_number() ? it->get<double>() : std::nan("");
        CUDL_CHECK(std::isfinite(v) && (positive ? v > 0 : v >= 0),
                   "--compare: '{}': results[{}].{} must be a finite number {} 0, got {}", path, i, field,
                   positive ? ">" : ">=", io::json_excerpt(*it));
        return v;
      };
      c.op = text("op");
      c.shape = text("shape");
      c.backend = text("backend");
      c.median_ms = number("median_ms", true);
      c.cv = number("cv", false);
      rows[fmt::format("{}|{}|{}", c.op, c.shape, c.backend)] = c;
    }
    return rows;
  };
  const auto before = load(old_path), after = load(new_path);
  fmt::print("{:<18} {:<34} {:<7} {:>10} {:>10} {:>9}  {}\n", "op", "shape", "device", "old ms", "new ms", "old/new",
             "verdict");
  int regressions = 0, compared = 0;
  for (const auto& [key, n] : after) {
    const auto it = before.find(key);
    if (it == before.end()) continue;
    const Case& o = it->second;
    const double old_ms = o.median_ms, new_ms = n.median_ms;
    // The noise allowance: twice the runs' combined coefficient of variation, at least 5%.
    const double noise = std::max(0.05, 2.0 * (o.cv + n.cv));
    const double ratio = old_ms / new_ms;
    std::string verdict = "same within noise";
    if (new_ms > old_ms * (1.0 + noise)) {
      verdict = fmt::format("REGRESSION (slower by {:.0f}%, noise {:.0f}%)", 100 * (new_ms / old_ms - 1), 100 * noise);
      ++regressions;
    } else if (old_ms > new_ms * (1.0 + noise)) {
      verdict = fmt::format("faster by {:.0f}%", 100 * (old_ms / new_ms - 1));
    }
    ++compared;
    fmt::print("{:<18} {:<34} {:<7} {:>10.3f} {:>10.3f} {:>8.2f}x  {}\n", n.op, n.shape, n.backend, old_ms, new_ms,
               ratio, verdict);
  }
  CUDL_CHECK(compared > 0, "--compare: '{}' and '{}' have no case in common (op, shape and device)", old_path,
             new_path);
  fmt::print("{} cases compared, {} regression(s) beyond the noise\n", compared, regressions);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto opt = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("bench", "Time every kernel on each backend against the machine's measured peak");
  cmd->add_option("--device", opt->devices, "Comma-separated backends to run")
      ->check(device_name(/*list=*/true))
      ->capture_default_str();
  add_compute_options(cmd, opt->compute);
  cmd->add_option("--ops", opt->ops, "Comma-separated ops to run (default: all)");
  cmd->add_option("--dtype", opt->dtype,
                  "Element type of the gemm and conv cases: f32, or bf16/f16 (half inputs and outputs, f32 "
                  "accumulation, conv2d_bwd_filter's dw f32 - autocast's choices); default: as --precision")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--sizes", opt->sizes, "Problem sizes: small (seconds on a CPU) or vgg (VGG19 layer shapes)")
      ->check(CLI::IsMember({"small", "vgg"}))
      ->capture_default_str();
  cmd->add_option("--repeat", opt->repeat, "Timed repetitions after the warm-up")
      ->transform(whole_number(1, 100000))
      ->capture_default_str();
  cmd->add_option("--models", opt->models,
                  "Comma-separated models to time end to end (train step and inference), e.g. mnist_cnn,vgg19");
  cmd->add_option("--batch-sizes", opt->batch_sizes, "Batch sizes for --models (default 128; 1,32,64 for VGG)")
      ->transform(whole_number_list(1, kMaxBatch));
  cmd->add_flag("--profile", opt->profile, "With --models: time every layer's forward and backward");
  cmd->add_option("--shape", opt->shape, kShapeHelp);
  cmd->add_option("--json", opt->json_path, "Write the results as JSON to this file");
  cmd->add_option("--compare", opt->compare,
                  "OLD.json NEW.json: compare two --json runs case by case (old/new time) and flag regressions "
                  "beyond their noise; runs nothing")
      ->expected(2);
  add_pipeline_bench_options(cmd, opt->pipeline);
  cmd->callback([opt] {
    if (!opt->compare.empty()) {
      compare_runs(opt->compare[0], opt->compare[1]);
      return;
    }
    if (!opt->pipeline.dir.empty()) {
      const auto models = non_empty_items(opt->models);
      CUDL_CHECK(models.size() == 1, "bench --pipeline: name one model with --models (its train step is timed)");
      const auto batches =
          parse_whole_number_list("--batch-sizes", opt->batch_sizes.empty() ? "64" : opt->batch_sizes, 1, kMaxBatch);
      run_pipeline_bench(opt->pipeline, models[0], batches.front());
      return;
    }
    run_bench(*opt);
  });
}

}  // namespace cudl::cli
