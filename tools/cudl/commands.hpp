#pragma once
// Subcommands of the `cudl` CLI. Each registers its options on the app and returns the
// callback that runs it; main() turns any exception into one line on stderr and exit code 1.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "cudl/engine/context.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {
class Context;
class Sequential;
}  // namespace cudl

namespace cudl::cli {

void add_info_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_summary_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_plot_command(CLI::App& app);
void add_style_command(CLI::App& app);
void add_classify_command(CLI::App& app);
void add_predict_command(CLI::App& app);
void add_convert_command(CLI::App& app);

// `cudl bench --pipeline DIR` (tools/cudl/bench_pipeline.cpp): the image-folder pipeline's
// images/s alone, the model's CPU train step alone, and both together.
struct PipelineBenchArgs {
  std::string dir;
  std::string augment = "random-resized-crop,flip,color-jitter";
  int workers = 0, image_size = 0;  // 0: defaults
  std::int64_t batches = 20;        // timed through the pipeline alone
  std::int64_t steps = 5;           // timed train steps, alone and fed by the pipeline
};
void add_pipeline_bench_options(CLI::App* cmd, PipelineBenchArgs& a);
void run_pipeline_bench(const PipelineBenchArgs& a, const std::string& model_name, std::int64_t batch_size);

// How ops run, shared by train, eval, predict, classify, style and bench:
//   --precision fp32|tf32|bf16|fp16  strict fp32, TF32 tensor cores (CUDA), or bf16/fp16 autocast
//                                    on tensor cores or the CPU's AMX (engine/context.hpp)
//   --deterministic true|false       cuDNN's deterministic algorithms only (default true), so runs
//                                    repeat bit for bit; false lets it pick the fastest
//   --conv-algo heuristic|measured   cuDNN's guess, or time every algorithm once per shape (as
//                                    PyTorch's cudnn.benchmark) and keep the winners in an
//                                    on-disk cache for later runs (default measured)
//   --fuse true|false                a Conv2d or Linear and the ReLU after it as one op (default true;
//                                    Context::fuse_layers)
//   --cuda-graphs true|false         replay fixed-shape steps as CUDA graphs (engine/step_graph.hpp)
//   --memory-format auto|nchw|channels_last  the convolutions' activation layout (Context's ActivationFormat)
// The CPU has one algorithm and no TF32; apply_compute_options notes what it ignores.
struct ComputeOptions {
  bool deterministic = true;
  Precision precision = Precision::fp32;
  ConvSearch conv_algo = ConvSearch::measured;
  bool fuse = true;
  bool cuda_graphs = false;
  ActivationFormat memory_format = ActivationFormat::automatic;
};
void add_compute_options(CLI::App* cmd, ComputeOptions& options);
// --fuse alone (summary shows the layers it fuses).
void add_fuse_option(CLI::App* cmd, bool& fuse);
// --precision alone (summary shows the dtypes it gives each layer).
void add_precision_option(CLI::App* cmd, Precision& precision);
// Sets them on ctx; on the CPU, one note on stderr when tf32 or CUDA graphs were asked for (measured,
// the default, has nothing to choose between there and says nothing).
void apply_compute_options(Context& ctx, const ComputeOptions& options);

// --strict: tensors in the weights file that the model does not use are an error, not a warning.
void add_strict_option(CLI::App* cmd, bool& strict);
// load_weights, then one warning line on stderr listing the file's tensors the model did not use
// (a typo'd or wrong-model file loads "fine" otherwise); with `strict` they are an error instead.
void load_weights_reporting_unused(const std::string& path, Context& ctx, Sequential& model, bool strict);

// ONNX models (tools/cudl/onnx_model.cpp). The weights to load: an ONNX file given as --weights,
// or as --model without --weights, becomes a private temporary safetensors file of its
// initializers (whose metadata names the ONNX file as the model), so every command loads and
// checks them as it does a checkpoint; anything else is returned as is.
std::string resolve_onnx_weights(const std::string& command, const std::string& model, const std::string& weights);
// --input-normalize imagenet|none for classify and predict.
void add_input_normalize_option(CLI::App* cmd, std::string& value);
// x normalised by ImageNet's mean and std when `option` says imagenet, or when it is empty and
// `model_name` is an ONNX file whose first layer does not normalise (torchvision's models expect
// normalised input; cudl's own, and their exports, normalise inside).
Tensor normalize_input(Context& ctx, const Tensor& x, const std::string& model_name, const Sequential& model,
                       const std::string& option);

}  // namespace cudl::cli
