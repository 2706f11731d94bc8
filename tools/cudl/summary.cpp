#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <optional>

#include "cudl/engine/error.hpp"
#include "cudl/models/onnx/onnx.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

namespace {
// "[N,32,26,26]": the batch dimension is whatever the caller feeds.
std::string batch_shape(const Shape& s) {
  std::string out = "[N";
  for (int i = 1; i < s.rank(); ++i) out += fmt::format(",{}", s[i]);
  return out + "]";
}

std::string thousands(std::int64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// The model to summarise: a built-in name, a JSON model file, or an ONNX file (with its weights).
struct Summarised {
  ModelSpec spec;
  Sequential model;
  std::optional<OnnxModel> onnx;
};

Summarised summarised_model(const std::string& name) {
  Summarised s;
  if (is_model_file(name)) {
    ModelFile file = read_model_file(name);
    s.spec = std::move(file.spec);
    s.model = std::move(file.model);
  } else if (is_onnx_file(name)) {
    s.onnx = read_onnx(name);
    s.spec = s.onnx->file.spec;
    s.model = std::move(s.onnx->file.model);
  } else {
    s.spec = model_spec(name);
    s.model = make_model(name);
  }
  return s;
}

// --export FILE.onnx: the network with its weights (--weights, the ONNX file's own, or a fresh
// initialisation from seed 0 when there are none) as an ONNX model.
void export_onnx_file(Summarised& s, const std::string& weights, bool strict, const std::string& path) {
  Context ctx(Device::cpu());
  s.model.build(ctx, 0);
  if (!weights.empty())
    load_weights_reporting_unused(weights, ctx, s.model, strict);
  else if (s.onnx)
    load_onnx_weights(*s.onnx, ctx, s.model);
  export_onnx(path, ctx, s.model, s.spec);
}
}  // namespace

void add_summary_command(CLI::App& app) {
  auto name = std::make_shared<std::string>();
  auto export_path = std::make_shared<std::string>();
  auto weights = std::make_shared<std::string>();
  auto strict = std::make_shared<bool>(false);
  auto compute = std::make_shared<ComputeOptions>();
  auto* cmd = app.add_subcommand("summary", "Print a model's layers, output shapes and parameter counts");
  cmd->add_option("--model", *name,
                  "Model name (see the list in --help of train), a model file NAME.json or an ONNX model NAME.onnx")
      ->required();
  cmd->add_option("--export", *export_path,
                  "Also write the model here: NAME.json as a JSON model file (every layer and field spelled out), "
                  "NAME.onnx as an ONNX model with its weights");
  cmd->add_option("--weights", *weights,
                  "With --export NAME.onnx: the weights to write (safetensors; default: an ONNX model's own, else "
                  "a fresh initialisation from seed 0)")
      ->check(input_file());
  add_strict_option(cmd, *strict);
  add_precision_option(cmd, compute->precision);
  add_fuse_option(cmd, compute->fuse);
  cmd->callback([name, export_path, weights, strict, compute] {
    const bool model_is_file = name->ends_with(".json") || name->ends_with(".onnx");
    check_outputs_spare_inputs({{"--model", model_is_file ? *name : std::string()}, {"--weights", *weights}},
                               {{"--export", *export_path}});
    check_writable_output("--export", *export_path);
    const bool to_onnx = is_onnx_file(*export_path);
    CUDL_CHECK(!to_onnx || onnx_available(),
               "summary: --export '{}': cudl was built without ONNX support (install libonnx-dev and rebuild with "
               "CUDL_ONNX=AUTO or ON)",
               *export_path);
    CUDL_CHECK(weights->empty() || to_onnx,
               "summary: --weights is for --export NAME.onnx (a JSON model file holds no "
               "weights)");
    Summarised s = summarised_model(*name);
    ModelSpec& spec = s.spec;
    Sequential& model = s.model;
    const Shape input{1, spec.input[0], spec.input[1], spec.input[2]};
    const DType dtype = autocast_dtype(compute->precision);
    auto rows = model.summary(input, dtype);
    // A layer that names its inputs (a graph's joins and branches) shows them after its type.
    for (auto& r : rows) {
      if (!r.inputs.empty()) r.description += fmt::format(" <- {}", fmt::join(r.inputs, ", "));
      // The pair runs as one op (conv2d_bias_relu_forward) unless --fuse false.
      if (compute->fuse && !r.fused_with.empty()) r.description += fmt::format(" [fused with {}]", r.fused_with);
    }
    // Columns as wide as their longest entry (a ConvTranspose2d's description runs long).
    std::size_t name_w = 16, type_w = 40;
    for (const auto& r : rows) {
      name_w = std::max(name_w, r.name.size() + 1);
      type_w = std::max(type_w, r.description.size() + 1);
    }
    const std::size_t width = name_w + type_w + 40;
    const std::string rule(width, '_'), double_rule(width, '=');
    fmt::print("Model: \"{}\"  ({})\n{}\n", spec.name, spec.description, rule);
    fmt::print("{:<{}} {:<{}} {:<20} {:<5} {:>12}\n{}\n", "Layer", name_w, "Type", type_w, "Output Shape", "Dtype",
               "Param #", double_rule);
    fmt::print("{:<{}} {:<{}} {:<20} {:<5} {:>12}\n", "input", name_w, "", type_w, batch_shape(input), "f32", 0);
    for (const auto& r : rows)
      fmt::print("{:<{}} {:<{}} {:<20} {:<5} {:>12}\n", r.name, name_w, r.description, type_w,
                 batch_shape(r.output_shape), dtype_name(r.output_dtype), thousands(r.params));
    fmt::print("{}\nTotal params: {} (f32 master weights", double_rule, thousands(model.parameter_count()));
    if (is_half(dtype))
      fmt::print(", plus {} copies of {:.1f} MiB for --precision {}", dtype_name(dtype),
                 static_cast<double>(model.parameter_count()) * 2.0 / (1 << 20), precision_name(compute->precision));
    fmt::print(")\n");
    if (to_onnx) {
      export_onnx_file(s, *weights, *strict, *export_path);
      fmt::print("wrote {}\n", *export_path);
    } else if (!export_path->empty()) {
      export_model_file(*export_path, model, spec);
      fmt::print("wrote {}\n", *export_path);
    }
  });
}

}  // namespace cudl::cli
