// `cudl convert`: a checkpoint (or any weights file) to an inference weights file: parameters and
// buffers only, in f32 or rounded to bf16/fp16 (--save-dtype; half the size). Training keeps f32
// master weights in its checkpoints; this is the export step, as PyTorch's `model.half()` +
// save_file. What eval, predict and classify read from a checkpoint (model, dataset, class names,
// preprocessing, a replaced head) is kept; the optimizer state and the resume bookkeeping are not,
// so the result is not a checkpoint to --resume from.
#include <fmt/format.h>

#include <map>
#include <string>

#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/checkpoint/saved_run.hpp"
#include "cudl/models/train/finetune.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tools/cudl/checks.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

namespace {

struct ConvertArgs {
  std::string model, weights, output, save_dtype = "fp32";
  bool strict = false;
};

DType save_dtype(const std::string& name) {
  if (name == "fp32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  return DType::f16;  // "fp16": the option's check admits nothing else
}

// The header keys eval, predict and classify use (read_saved_run): the model, the seed (a flat
// folder's test split) and every "extra.*" key. "format" (what makes a file resumable), the
// epoch/step counts, the optimizer's settings and the Dropout counters stay behind with the state.
std::map<std::string, std::string> inference_metadata(const std::string& path) {
  std::map<std::string, std::string> kept;
  for (const auto& [key, value] : read_safetensors_metadata(path))
    if (key == "model" || key == "seed" || key.starts_with("extra.")) kept[key] = value;
  return kept;
}

void run_convert(const ConvertArgs& a) {
  check_outputs_spare_inputs({{"--weights", a.weights}}, {{"--output", a.output}});
  check_writable_output("--output", a.output);
  const SavedRun saved = read_saved_run(a.weights);
  const std::string model_name = resolve_model("convert", a.model, a.weights, saved);
  Sequential model = make_model(model_name);
  apply_saved_head(a.weights, model);
  Context ctx(Device::cpu());
  model.build(ctx, 0);
  load_weights_reporting_unused(a.weights, ctx, model, a.strict);
  std::map<std::string, std::string> metadata = inference_metadata(a.weights);
  if (!metadata.count("model")) metadata["model"] = model_name;
  const DType dtype = save_dtype(a.save_dtype);
  save_weights(a.output, ctx, model, metadata, dtype);
  fmt::print("wrote {}: {} parameters of {} as {}\n", a.output, model.parameter_count(), model_name, dtype_name(dtype));
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* cmd = app.add_subcommand(
      "convert",
      "Write a checkpoint's weights as an inference weights file (no optimizer state), optionally in bf16/fp16");
  cmd->add_option("--weights", a->weights, "The checkpoint or weights file (safetensors) to read")
      ->required()
      ->check(input_file());
  cmd->add_option("--output", a->output, "Where the weights file goes (safetensors, written atomically)")->required();
  cmd->add_option("--model", a->model, "Model name or model file (default: the checkpoint's)");
  cmd->add_option("--save-dtype", a->save_dtype,
                  "Precision of the written tensors: fp32 (exact), bf16 or fp16 (rounded to nearest even; half the "
                  "size, for inference: eval/predict/classify widen them back)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  add_strict_option(cmd, a->strict);
  cmd->callback([a] { run_convert(*a); });
}

}  // namespace cudl::cli
