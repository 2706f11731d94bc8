#pragma once
#include <cstdint>
#include <memory>
#include <string_view>

#include "cudl/engine/allocator.hpp"
#include "cudl/engine/cpu_policy.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/dtype.hpp"
#include "cudl/engine/memory_format.hpp"

namespace cudl {

class Backend;
struct CudaResources;  // stream, cuBLAS and cuDNN handles, algorithm caches (CUDA builds only)

// Numerics the CUDA backend may use. Strict fp32 is the default so that the backends agree to
// float rounding; TF32 lets cuBLAS/cuDNN use tensor cores (about 10 mantissa bits per product).
enum class MathMode { strict_fp32, tf32 };

// How the CUDA backend picks a convolution algorithm for a new shape. measured (the default, as
// PyTorch's cudnn.benchmark): every usable candidate is timed once on the call's own inputs and the
// fastest is kept, and written to an on-disk cache (engine/io/conv_algo_cache.hpp) that later runs
// on the same GPU and cuDNN read instead of searching again, so they also repeat the same choice.
// heuristic: cuDNN's ranked guess, no timing, the same choice on every machine with that cuDNN.
// Either way determinism is deterministic()'s: timing picks among deterministic algorithms only
// when it is on.
enum class ConvSearch { heuristic, measured };
// "heuristic" | "measured" (the --conv-algo spelling).
std::string conv_search_name(ConvSearch search);

// The precision a run computes in (--precision). fp32: strict float32 everywhere. tf32: float32
// tensors, TF32 tensor-core products in cuBLAS/cuDNN (CUDA only). bf16 and fp16 are autocast, as
// PyTorch's torch.autocast: convolutions, linear layers and Gram matrices take half-precision
// inputs and weights (fp32 accumulation), and the activations between them are stored in half;
// batch-norm statistics, softmax-cross-entropy, the other losses, reductions and the optimizer run
// in fp32 on fp32 master weights. fp16 training needs loss scaling (layers/loss_scaler.hpp), bf16
// does not (it has fp32's exponent range).
enum class Precision { fp32, tf32, bf16, fp16 };
std::string_view precision_name(Precision p);
// "fp32", "tf32", "bf16" or "fp16"; anything else is an Error listing them.
Precision parse_precision(std::string_view name);
// The storage dtype of autocast's half-precision tensors: bf16, f16, or f32 when autocast is off.
DType autocast_dtype(Precision p);

// The memory format of the activations convolutions write (--memory-format): `automatic` picks
// channels_last where the backend's convolutions read and write it without reorders (the CPU's
// oneDNN half-precision kernels) and NCHW elsewhere; the other two force one.
enum class ActivationFormat { automatic, contiguous, channels_last };
std::string_view activation_format_name(ActivationFormat f);
// "auto", "nchw" or "channels_last"; anything else is an Error listing them.
ActivationFormat parse_activation_format(std::string_view name);

// Where ops run: a device, its allocator and, for CUDA, a stream with cuBLAS and cuDNN handles
// bound to it. Move-only; the handles and the stream are released with it.
class Context {
 public:
  explicit Context(Device device = Device::cpu(), MathMode math = MathMode::strict_fp32);
  ~Context();
  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Device device() const { return device_; }
  Backend& backend() const { return *backend_; }
  Allocator& allocator() const { return *allocator_; }
  const std::shared_ptr<Allocator>& allocator_ptr() const { return allocator_; }
  StreamId stream_id() const;
  MathMode math_mode() const { return math_; }
  void set_math_mode(MathMode math);
  // See Precision. Setting it also sets the math mode (tf32 or strict fp32). bf16 on a GPU without
  // bf16 tensor cores (compute capability below 8.0), or fp16 below 7.0, throws naming the GPU.
  Precision precision() const { return precision_; }
  void set_precision(Precision p);
  // The dtype autocast layers compute in: f32 (autocast off), bf16 or f16.
  DType autocast_dtype() const { return cudl::autocast_dtype(precision_); }
  // Deterministic (the default): the CUDA backend uses only algorithms whose results are
  // bit-identical run to run (cuDNN's deterministic convolutions), so a resumed run ends where an
  // uninterrupted one would. Off lets it pick the fastest (some use atomics).
  bool deterministic() const { return deterministic_; }
  void set_deterministic(bool on) { deterministic_ = on; }
  ConvSearch conv_search() const { return conv_search_; }
  void set_conv_search(ConvSearch search) { conv_search_ = search; }
  // Whether a network runs a Conv2d or Linear followed by its only reader, a ReLU, as one fused op
  // (Backend::conv2d_bias_relu_forward, linear_bias_relu_forward; models/network/sequential.hpp). On by default; off
  // runs the layers one by one, to compare (--fuse false). The results agree to float rounding.
  bool fuse_layers() const { return fuse_layers_; }
  void set_fuse_layers(bool on) { fuse_layers_ = on; }

  // Whether fixed-shape steps written for it (inference in bench, the style objective) replay as
  // CUDA graphs (engine/step_graph.hpp; --cuda-graphs). Off by default until a GPU run has
  // measured it; no effect on the CPU.
  bool cuda_graphs() const { return cuda_graphs_; }
  void set_cuda_graphs(bool on) { cuda_graphs_ = on; }

  // See ActivationFormat: the format a convolution layer's output of `dtype` is stored in (the
  // layers after it keep the format they are given).
  ActivationFormat activation_format() const { return activation_format_; }
  void set_activation_format(ActivationFormat f) { activation_format_ = f; }
  MemoryFormat conv_output_format(DType dtype) const;

  // Routes the context's later allocations (tensors, workspaces) to `allocator`, returning the one
  // it replaces: a StepGraph's private pool while it records. Tensors keep the allocator they came
  // from, so they are freed where they were allocated whichever is current then.
  std::shared_ptr<Allocator> exchange_allocator(std::shared_ptr<Allocator> allocator);

  // The CPU backend's convolution and GEMM paths (engine/cpu_policy.hpp); no effect on a CUDA
  // context. Starts as cpu_policy_from_environment() says (the constructor throws on a bad value).
  CpuConv cpu_conv() const { return cpu_policy_.conv; }
  void set_cpu_conv(CpuConv conv) { cpu_policy_.conv = conv; }
  CpuGemm cpu_gemm() const { return cpu_policy_.gemm; }
  void set_cpu_gemm(CpuGemm gemm) { cpu_policy_.gemm = gemm; }
  CpuPolicy cpu_policy() const { return cpu_policy_; }

  // The CUDA stream, cuBLAS and cuDNN handles; nullptr on the CPU.
  CudaResources* cuda() const { return cuda_.get(); }
  // Waits for everything queued on this context's stream.
  void synchronize() const;

 private:
  struct CudaResourcesDeleter {
    void operator()(CudaResources* r) const;
  };
  Device device_;
  MathMode math_;
  Precision precision_ = Precision::fp32;
  bool deterministic_ = true;
  ConvSearch conv_search_ = ConvSearch::measured;
  bool fuse_layers_ = true;
  bool cuda_graphs_ = false;
  ActivationFormat activation_format_ = ActivationFormat::automatic;
  CpuPolicy cpu_policy_;
  Backend* backend_ = nullptr;
  std::shared_ptr<Allocator> allocator_;
  std::unique_ptr<CudaResources, CudaResourcesDeleter> cuda_;
};

// Scratch memory from the context's pool, returned when it goes out of scope (cuDNN workspaces,
// partial sums of reductions).
class Workspace {
 public:
  Workspace(Context& ctx, std::size_t bytes);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  Allocator* allocator_;
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace cudl
