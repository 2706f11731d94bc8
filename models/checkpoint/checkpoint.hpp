#pragma once
// Checkpoints and weight files in safetensors, under torchvision's names ("features.0.weight"), so
// a file converted from torchvision loads into our VGG and ours load into PyTorch.
//
// A checkpoint holds, besides every parameter and buffer: the optimizer's state per parameter as
// "optimizer.<state>.<parameter name>" (e.g. "optimizer.exp_avg.features.0.weight"), and in the
// metadata "format" = "cudl-checkpoint-1", the CheckpointInfo fields ("model", "epoch", "step",
// "seed", and each extra key as "extra.<key>"), the optimizer's kind, step count and settings
// ("optimizer", "optimizer.steps", "optimizer.lr", ...) and each Dropout layer's mask counter
// ("dropout.<layer name>"), so a resumed run continues exactly where it stopped.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cudl/layers/optimizer.hpp"
#include "cudl/models/network/sequential.hpp"

namespace cudl {

struct CheckpointInfo {
  std::string model;  // e.g. "vgg16"
  std::int64_t epoch = 0;
  std::int64_t step = 0;
  std::uint64_t seed = 0;
  std::map<std::string, std::string> extra;
};

// A fingerprint of the model's layers (names and what each is, e.g. "Conv2d(3, 16, kernel_size=3)"):
// checkpoints keep it as extra.model_fingerprint, so a model file may be renamed or copied.
std::uint64_t model_fingerprint(const Sequential& model);
// Whether a checkpoint's model is `model`: the same name, or both model files (NAME.json, however
// spelled) when the checkpoint has the fingerprint to compare layers with (load_checkpoint's
// caller compares it once the model exists).
bool same_model_name(const CheckpointInfo& info, const std::string& model);

// Writes a checkpoint atomically (see write_safetensors). `optimizer` may be null (weights only,
// plus the info and the Dropout counters).
void save_checkpoint(const std::string& path, Context& ctx, Sequential& model, Optimizer* optimizer,
                     const CheckpointInfo& info);

// Restores what save_checkpoint wrote, strictly: every parameter and buffer of the model must be in
// the file with the same shape and finite values, the epoch and step counts within [0, 2^53], the
// file may hold no other parameter names, and with an optimizer
// its kind, step count and state for every parameter must be there too (with a null optimizer the
// file's "optimizer.*" tensors are ignored). All mismatches are reported in one Error before
// anything is written, so a failed load leaves the model and the optimizer as they were.
CheckpointInfo load_checkpoint(const std::string& path, Context& ctx, Sequential& model, Optimizer* optimizer);

// The CheckpointInfo of a checkpoint from its header alone (cheap, no tensor is read), with the
// same checks load_checkpoint makes of the metadata (format, counts in [0, 2^53], integers), so a
// bad resume file is refused before a dataset is read.
CheckpointInfo read_checkpoint_info(const std::string& path);

// Parameters and buffers only, under their model names; `metadata` goes into the header as is.
// `dtype` bf16 or f16 rounds every tensor to half precision (an inference export, half the size;
// load_weights widens it back), f32 keeps the values exactly.
void save_weights(const std::string& path, Context& ctx, Sequential& model,
                  const std::map<std::string, std::string>& metadata = {}, DType dtype = DType::f32);

// Loads parameters and buffers: every one the model has must be in the file with the same shape
// (F32, F16, BF16 or F64, converted to float) and finite values (a NaN or inf is an Error naming the
// first such tensor, so a diverged run's file cannot produce NaN results). Names the model lacks
// are allowed when `allow_unused` (style transfer loads a full VGG19 file into a truncated network,
// leaving classifier.* unused) and returned, sorted, for the caller to report; "optimizer.*"
// tensors of a checkpoint are never weights and are neither loaded nor returned.
std::vector<std::string> load_weights(const std::string& path, Context& ctx, Sequential& model,
                                      bool allow_unused = true);

}  // namespace cudl
