// `cudl bench`: each kernel on each backend, timed after a warm-up (CUDA events on the GPU),
// reported as GFLOP/s or GB/s and as a share of the machine's peak measured on the spot (a large
// GEMM for FLOP/s, a large device copy for bandwidth).
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/backend.hpp"
#include "engine/context.hpp"
#include "engine/io/atomic_file.hpp"
#include "engine/timer.hpp"
#include "layers/optimizer.hpp"
#include "models/zoo.hpp"
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
};

struct Timing {
  double median_ms = 0, min_ms = 0;
};

Timing time_run(Context& ctx, const std::function<void()>& run, int repeat) {
  for (int i = 0; i < 2; ++i) run();  // warm-up: algorithm choice, caches, pool
  ctx.synchronize();
  std::vector<double> ms;
  Timer timer(ctx);
  for (int i = 0; i < repeat; ++i) {
    timer.start();
    run();
    ms.push_back(timer.stop_ms());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

Tensor random_tensor(Context& ctx, const Shape& shape, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape, ctx);
  ctx.backend().fill_uniform(ctx, t, -1.0f, 1.0f, seed, 0);
  return t;
}

constexpr double kFloat = 4.0;

BenchCase gemm_case(std::int64_t m, std::int64_t n, std::int64_t k) {
  return {"gemm", fmt::format("{}x{}x{}", m, n, k), Rate::flops, 2.0 * m * n * k, [=](Context& ctx) {
            Tensor a = random_tensor(ctx, {m, k}, 1), b = random_tensor(ctx, {k, n}, 2);
            Tensor c = Tensor::empty({m, n}, ctx);
            return std::function<void()>(
                [&ctx, a, b, c]() mutable { ctx.backend().gemm(ctx, false, false, 1.0f, a, b, 0.0f, c); });
          }};
}

std::vector<BenchCase> conv_cases(Shape x, Shape w, int pad) {
  Conv2dParams p;
  p.pad_h = p.pad_w = pad;
  Shape y = conv2d_output_shape(x, w, p);
  double flops = 2.0 * static_cast<double>(y.numel()) * static_cast<double>(w[1] * w[2] * w[3]);
  std::string shape = fmt::format("x={} w={}", x, w);
  return {
      {"conv2d_fwd", shape, Rate::flops, flops,
       [=](Context& ctx) {
         Tensor tx = random_tensor(ctx, x, 3), tw = random_tensor(ctx, w, 4), ty = Tensor::empty(y, ctx);
         return std::function<void()>(
             [&ctx, tx, tw, ty, p]() mutable { ctx.backend().conv2d_forward(ctx, tx, tw, p, ty); });
       }},
      {"conv2d_bwd_data", shape, Rate::flops, flops,
       [=](Context& ctx) {
         Tensor dy = random_tensor(ctx, y, 5), tw = random_tensor(ctx, w, 4), dx = Tensor::empty(x, ctx);
         return std::function<void()>(
             [&ctx, dy, tw, dx, p]() mutable { ctx.backend().conv2d_backward_data(ctx, dy, tw, p, dx); });
       }},
      {"conv2d_bwd_filter", shape, Rate::flops, flops,
       [=](Context& ctx) {
         Tensor tx = random_tensor(ctx, x, 3), dy = random_tensor(ctx, y, 5), dw = Tensor::empty(w, ctx);
         return std::function<void()>(
             [&ctx, tx, dy, dw, p]() mutable { ctx.backend().conv2d_backward_filter(ctx, tx, dy, p, dw, false); });
       }},
  };
}

std::vector<BenchCase> make_cases(const std::string& sizes) {
  const bool vgg = sizes == "vgg";
  std::vector<BenchCase> cases;
  // GEMM: a square problem, and VGG's first classifier layer at batch 64.
  cases.push_back(vgg ? gemm_case(64, 4096, 25088) : gemm_case(256, 256, 256));
  // Convolutions at VGG19 layer shapes (conv1_2, conv3_1, conv5_1) or one small layer.
  if (vgg) {
    for (auto [x, w] : std::vector<std::pair<Shape, Shape>>{{{16, 64, 224, 224}, {64, 64, 3, 3}},
                                                            {{16, 128, 56, 56}, {256, 128, 3, 3}},
                                                            {{16, 512, 14, 14}, {512, 512, 3, 3}}})
      for (auto& c : conv_cases(x, w, 1)) cases.push_back(c);
  } else {
    for (auto& c : conv_cases({4, 32, 32, 32}, {32, 32, 3, 3}, 1)) cases.push_back(c);
  }
  const std::int64_t n = vgg ? (64ll << 20) : (1ll << 20);  // elements of the elementwise cases
  const Shape map = vgg ? Shape{16, 64, 224, 224} : Shape{4, 32, 64, 64};
  cases.push_back({"relu_fwd", fmt::format("{}", Shape{n}), Rate::bytes, 2 * kFloat * n, [=](Context& ctx) {
                     Tensor x = random_tensor(ctx, {n}, 6), y = Tensor::empty({n}, ctx);
                     return std::function<void()>([&ctx, x, y]() mutable {
                       ctx.backend().activation_forward(ctx, Activation::relu, 0.0f, x, y);
                     });
                   }});
  Pool2dParams pool;
  Shape pooled = pool2d_output_shape(map, pool);
  cases.push_back({"maxpool2d_fwd", fmt::format("{}", map), Rate::bytes,
                   kFloat * static_cast<double>(map.numel() + 2 * pooled.numel()), [=](Context& ctx) {
                     Tensor x = random_tensor(ctx, map, 7), y = Tensor::empty(pooled, ctx);
                     Tensor arg = Tensor::empty(pooled, ctx, DType::i32);
                     return std::function<void()>(
                         [&ctx, x, y, arg, pool]() mutable { ctx.backend().maxpool2d_forward(ctx, x, pool, y, arg); });
                   }});
  const Shape feat = vgg ? Shape{1, 512, 64, 64} : Shape{1, 64, 64, 64};
  cases.push_back({"gram_fwd", fmt::format("{}", feat), Rate::flops,
                   2.0 * static_cast<double>(feat[1] * feat[1] * feat[2] * feat[3]), [=](Context& ctx) {
                     Tensor x = random_tensor(ctx, feat, 8), g = Tensor::empty({1, feat[1], feat[1]}, ctx);
                     return std::function<void()>([&ctx, x, g]() mutable { ctx.backend().gram_forward(ctx, x, g); });
                   }});
  const std::int64_t rows = vgg ? 4096 : 256, classes = 1000;
  cases.push_back(
      {"softmax_xent_fwd", fmt::format("{}", Shape{rows, classes}), Rate::bytes,
       2 * kFloat * static_cast<double>(rows * classes), [=](Context& ctx) {
         Tensor logits = random_tensor(ctx, {rows, classes}, 9), probs = Tensor::empty({rows, classes}, ctx);
         std::vector<std::int32_t> labels(static_cast<std::size_t>(rows));
         for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int32_t>(i % classes);
         Tensor tl = Tensor::from_host(std::span<const std::int32_t>(labels), {rows}, ctx);
         Tensor loss = Tensor::empty({1}, ctx);
         return std::function<void()>([&ctx, logits, tl, probs, loss]() mutable {
           ctx.backend().softmax_cross_entropy_forward(ctx, logits, tl, probs, loss);
         });
       }});
  cases.push_back({"adam_step", fmt::format("{}", Shape{n}), Rate::bytes, 7 * kFloat * n, [=](Context& ctx) {
                     Tensor p = random_tensor(ctx, {n}, 10), g = random_tensor(ctx, {n}, 11);
                     Tensor m = Tensor::zeros({n}, ctx), v = Tensor::zeros({n}, ctx);
                     return std::function<void()>(
                         [&ctx, p, g, m, v]() mutable { ctx.backend().adam_step(ctx, AdamParams{}, p, g, m, v); });
                   }});
  cases.push_back({"sum", fmt::format("{}", Shape{n}), Rate::bytes, kFloat * n, [=](Context& ctx) {
                     Tensor x = random_tensor(ctx, {n}, 12), out = Tensor::empty({1}, ctx);
                     return std::function<void()>([&ctx, x, out]() mutable { ctx.backend().sum(ctx, x, out); });
                   }});
  return cases;
}

struct Peak {
  double gflops = 0, gbps = 0;
};

// The machine's ceilings, measured now: a large SGEMM for FLOP/s and a device-to-device copy
// (read + write) for bandwidth.
Peak measure_peak(Context& ctx, int repeat) {
  const std::int64_t dim = ctx.device().is_cpu() ? 1024 : 8192;
  BenchCase g = gemm_case(dim, dim, dim);
  auto run_gemm = g.prepare(ctx);
  Timing tg = time_run(ctx, run_gemm, repeat);
  const std::int64_t n = ctx.device().is_cpu() ? (32ll << 20) : (256ll << 20);
  Tensor src = Tensor::zeros({n}, ctx), dst = Tensor::empty({n}, ctx);
  Timing tc = time_run(
      ctx, [&] { ctx.backend().copy(ctx, src, dst); }, repeat);
  return {g.work / (tg.min_ms * 1e6), 2.0 * kFloat * static_cast<double>(n) / (tc.min_ms * 1e6)};
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) items.push_back(item);
  return items;
}

constexpr std::int64_t kMaxBatch = 1 << 16;

struct Options {
  std::string devices = "cpu,cuda";
  std::string ops;
  std::string models;
  std::string batch_sizes;
  bool profile = false;
  std::string sizes = "small";
  int repeat = 10;
  std::string json_path;
  ComputeOptions compute;
};

void print_layer_profile(const Sequential& model, const char* what, int runs) {
  fmt::print("  per-layer ms per {} (each layer waited for; totals include that overhead):\n", what);
  for (const auto& t : model.profile())
    fmt::print("    {:<16} forward {:>9.3f}  backward {:>9.3f}\n", t.name, t.forward_ms / runs, t.backward_ms / runs);
}

// Images per second of a whole training step (forward, loss, backward, Adam) and of inference,
// on synthetic data of the model's input shape, with the pool's peak memory.
void bench_models(Context& ctx, const Options& opt, nlohmann::json& results) {
  for (const auto& name : split_list(opt.models)) {
    const ModelSpec& spec = model_spec(name);
    std::vector<std::int64_t> batches;
    if (!opt.batch_sizes.empty()) batches = parse_whole_number_list("--batch-sizes", opt.batch_sizes, 1, kMaxBatch);
    if (batches.empty())
      batches = name.starts_with("vgg") && !name.ends_with("_cifar") ? std::vector<std::int64_t>{1, 32, 64}
                                                                     : std::vector<std::int64_t>{128};
    Sequential model = make_model(name);
    model.build(ctx, 1);
    Optimizer optimizer(ctx, model, OptimizerConfig{});
    for (std::int64_t batch : batches) {
      const Shape input{batch, spec.input[0], spec.input[1], spec.input[2]};
      Tensor x = random_tensor(ctx, input, 21);
      ctx.backend().scale(ctx, x, 0.5f);
      ctx.backend().axpy(ctx, 1.0f, Tensor::full(input, 0.5f, ctx), x);  // pixels in [0, 1]
      std::vector<std::int32_t> host_labels(static_cast<std::size_t>(batch));
      for (std::size_t i = 0; i < host_labels.size(); ++i) host_labels[i] = static_cast<std::int32_t>(i % 10);
      Tensor labels = Tensor::from_host(std::span<const std::int32_t>(host_labels), {batch}, ctx);
      Tensor loss = Tensor::empty({1}, ctx);
      auto train_step = [&] {
        model.zero_grad(ctx);
        Tensor logits = model.forward(ctx, x, true);
        Tensor probs = Tensor::empty(logits.shape(), ctx), dlogits = Tensor::empty(logits.shape(), ctx);
        ctx.backend().softmax_cross_entropy_forward(ctx, logits, labels, probs, loss);
        ctx.backend().softmax_cross_entropy_backward(ctx, probs, labels, 1.0f, dlogits);
        model.backward(ctx, dlogits);
        optimizer.step(ctx, 1e-4f);
      };
      auto inference = [&] { (void)model.forward(ctx, x, false); };
      for (auto [what, run] : {std::pair<const char*, std::function<void()>>{"train_step", train_step},
                               std::pair<const char*, std::function<void()>>{"inference", inference}}) {
        ctx.allocator().reset_peak_stats();
        model.set_profiling(opt.profile);
        Timing t = time_run(ctx, run, std::max(1, opt.repeat / 2));
        const double images_per_second = static_cast<double>(batch) / (t.median_ms / 1e3);
        const std::size_t peak = ctx.allocator().stats().peak_allocated_bytes;
        const std::string shape = fmt::format("{} batch {}", name, batch);
        if (opt.profile) print_layer_profile(model, what, std::max(1, opt.repeat / 2) + 2);
        fmt::print("{:<18} {:<34} {:<7} {:>10.3f} {:>10.3f} {:>12} {:>7} peak mem {}\n", what, shape,
                   ctx.device().str(), t.median_ms, t.min_ms, fmt::format("{:.1f} img/s", images_per_second), "-",
                   format_bytes(peak));
        results.push_back({{"op", what},
                           {"backend", ctx.device().str()},
                           {"shape", shape},
                           {"model", name},
                           {"batch", batch},
                           {"median_ms", t.median_ms},
                           {"min_ms", t.min_ms},
                           {"rate", images_per_second},
                           {"rate_unit", "img/s"},
                           {"peak_memory_bytes", peak}});
      }
    }
  }
}

void run_bench(const Options& opt) {
  check_writable_output("--json", opt.json_path);
  std::vector<Device> devices;
  for (const auto& name : split_list(opt.devices)) {
    Device d = Device::parse(name);
    if (d.is_cuda() && cuda_device_count() == 0) {
      fmt::print("{}: skipped (no CUDA device)\n", name);
      continue;
    }
    devices.push_back(d);
  }
  CUDL_CHECK(!devices.empty(), "bench: no usable device in '{}'", opt.devices);
  auto wanted = split_list(opt.ops);
  // With --models alone, only the models run; --ops selects kernels (all by default).
  std::vector<BenchCase> cases;
  if (opt.models.empty() || !wanted.empty()) {
    cases = make_cases(opt.sizes);
    std::erase_if(cases, [&](const BenchCase& c) {
      return !wanted.empty() && std::find(wanted.begin(), wanted.end(), c.op) == wanted.end();
    });
    CUDL_CHECK(!cases.empty(), "bench: no op matches --ops '{}'", opt.ops);
  }

  nlohmann::json results = nlohmann::json::array();
  std::map<std::pair<std::string, std::string>, double> cpu_ms;  // (op, shape) -> median on the CPU
  bool above_copy_peak = false;  // a bandwidth-bound case beat the copy: its data stayed in cache
  fmt::print("{:<18} {:<34} {:<7} {:>10} {:>10} {:>12} {:>8} {:>8}\n", "op", "shape", "device", "median ms", "min ms",
             "rate", "% peak", "speedup");
  for (Device device : devices) {
    Context ctx(device);
    apply_compute_options(ctx, opt.compute);
    if (cases.empty()) {
      bench_models(ctx, opt, results);
      continue;
    }
    Peak peak = measure_peak(ctx, opt.repeat);
    fmt::print("-- {}: peak {:.1f} GFLOP/s (SGEMM), {:.1f} GB/s (copy), measured now\n", device, peak.gflops,
               peak.gbps);
    for (const auto& c : cases) {
      auto run = c.prepare(ctx);
      Timing t = time_run(ctx, run, opt.repeat);
      const double rate = c.work / (t.median_ms * 1e6);  // GFLOP/s or GB/s
      const double share = 100.0 * rate / (c.rate == Rate::flops ? peak.gflops : peak.gbps);
      const char* unit = c.rate == Rate::flops ? "GFLOP/s" : "GB/s";
      std::optional<double> speedup;
      if (device.is_cpu()) {
        cpu_ms[{c.op, c.shape}] = t.median_ms;
      } else if (auto it = cpu_ms.find({c.op, c.shape}); it != cpu_ms.end()) {
        speedup = it->second / t.median_ms;
      }
      const bool in_cache = c.rate == Rate::bytes && share > 100.0;
      above_copy_peak = above_copy_peak || in_cache;
      fmt::print("{:<18} {:<34} {:<7} {:>10.3f} {:>10.3f} {:>12} {:>6.1f}%{} {:>8}\n", c.op, c.shape, device.str(),
                 t.median_ms, t.min_ms, fmt::format("{:.1f} {}", rate, unit), share, in_cache ? "*" : " ",
                 speedup ? fmt::format("{:.1f}x", *speedup) : std::string("-"));
      nlohmann::json row = {{"op", c.op},
                            {"backend", device.str()},
                            {"shape", c.shape},
                            {"median_ms", t.median_ms},
                            {"min_ms", t.min_ms},
                            {"rate", rate},
                            {"rate_unit", unit},
                            {"peak_share", share / 100.0},
                            {"peak_gflops", peak.gflops},
                            {"peak_gbps", peak.gbps}};
      if (speedup) row["speedup_vs_cpu"] = *speedup;
      if (in_cache) row["fits_in_cache"] = true;
      results.push_back(row);
    }
    bench_models(ctx, opt, results);
  }
  if (above_copy_peak)
    fmt::print(
        "* above 100% of the copy bandwidth: that case's data fits in cache, while the peak copy streams "
        "from memory\n");
  if (!opt.json_path.empty()) {
    nlohmann::json doc = {
        {"sizes", opt.sizes}, {"repeat", opt.repeat}, {"deterministic", opt.compute.deterministic},
        {"precision", opt.compute.precision},
        {"conv_algo", opt.compute.conv_algo},
        {"results", results}};
    write_file_atomically(opt.json_path, doc.dump(2) + "\n");
    fmt::print("wrote {}\n", opt.json_path);
  }
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
  cmd->add_option("--json", opt->json_path, "Write the results as JSON to this file");
  cmd->callback([opt] { run_bench(*opt); });
}

}  // namespace cudl::cli
