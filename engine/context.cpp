#include "cudl/engine/context.hpp"

#include <cstdlib>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/error.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#endif

namespace cudl {

void Context::CudaResourcesDeleter::operator()(CudaResources* r) const {
#if defined(CUDL_HAVE_CUDA)
  destroy_cuda_resources(r);
#else
  (void)r;
#endif
}

Context::Context(Device device, MathMode math)
    : device_(device), math_(math), cpu_policy_(cpu_policy_from_environment()) {
  if (device.is_cpu()) {
    backend_ = &cpu_backend();
    allocator_ = allocator_for(device);
    return;
  }
#if defined(CUDL_HAVE_CUDA)
  int count = cuda_device_count();
  CUDL_CHECK(count > 0, "context: {} requested but no CUDA device is available (use --device cpu)", device);
  CUDL_CHECK(device.index < count, "context: {} requested but only {} CUDA device(s) exist", device, count);
  cuda_.reset(create_cuda_resources(device.index, math).release());
  backend_ = &cuda_backend();
  allocator_ = allocator_for(device);
#else
  CUDL_THROW("context: {} requested but cudl was built without the CUDA backend (-DCUDL_CUDA=OFF)", device);
#endif
}

Context::~Context() = default;

std::shared_ptr<Allocator> Context::exchange_allocator(std::shared_ptr<Allocator> allocator) {
  CUDL_CHECK(allocator && allocator->device() == device_, "context {}: the allocator must serve this device", device_);
  allocator_.swap(allocator);
  return allocator;
}
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;

StreamId Context::stream_id() const {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_) return reinterpret_cast<StreamId>(cuda_->stream);
#endif
  return 0;
}

void Context::set_math_mode(MathMode math) {
  math_ = math;
#if defined(CUDL_HAVE_CUDA)
  if (cuda_) apply_math_mode(*cuda_, math);
#endif
}

std::string conv_search_name(ConvSearch search) { return search == ConvSearch::measured ? "measured" : "heuristic"; }

std::string_view precision_name(Precision p) {
  switch (p) {
    case Precision::fp32:
      return "fp32";
    case Precision::tf32:
      return "tf32";
    case Precision::bf16:
      return "bf16";
    case Precision::fp16:
      return "fp16";
  }
  return "?";
}

Precision parse_precision(std::string_view name) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16, Precision::fp16})
    if (precision_name(p) == name) return p;
  CUDL_THROW("unknown precision '{}': expected fp32, tf32, bf16 or fp16", name);
}

std::string_view activation_format_name(ActivationFormat f) {
  switch (f) {
    case ActivationFormat::automatic:
      return "auto";
    case ActivationFormat::contiguous:
      return "nchw";
    case ActivationFormat::channels_last:
      return "channels_last";
  }
  return "?";
}

ActivationFormat parse_activation_format(std::string_view name) {
  for (ActivationFormat f :
       {ActivationFormat::automatic, ActivationFormat::contiguous, ActivationFormat::channels_last})
    if (activation_format_name(f) == name) return f;
  CUDL_THROW("unknown memory format '{}': expected auto, nchw or channels_last", name);
}

MemoryFormat Context::conv_output_format(DType dtype) const {
  switch (activation_format_) {
    case ActivationFormat::contiguous:
      return MemoryFormat::contiguous;
    case ActivationFormat::channels_last:
      return MemoryFormat::channels_last;
    case ActivationFormat::automatic:
      break;
  }
  return backend_->preferred_conv_format(*this, dtype);
}

std::string_view cpu_conv_name(CpuConv c) {
  switch (c) {
    case CpuConv::fastest:
      return "fastest";
    case CpuConv::direct:
      return "direct";
    case CpuConv::im2col:
      return "im2col";
  }
  return "?";
}

std::string_view cpu_gemm_name(CpuGemm g) { return g == CpuGemm::openblas ? "openblas" : "onednn"; }

CpuConv parse_cpu_conv(std::string_view name, std::string_view what) {
  for (CpuConv c : {CpuConv::fastest, CpuConv::direct, CpuConv::im2col})
    if (cpu_conv_name(c) == name) return c;
  CUDL_THROW("{}: unknown value '{}': expected fastest, direct or im2col", what, name);
}

CpuGemm parse_cpu_gemm(std::string_view name, std::string_view what) {
  for (CpuGemm g : {CpuGemm::onednn, CpuGemm::openblas})
    if (cpu_gemm_name(g) == name) return g;
  CUDL_THROW("{}: unknown value '{}': expected onednn or openblas", what, name);
}

CpuPolicy cpu_policy_from_environment() {
  CpuPolicy policy;
  const char* conv = std::getenv("CUDL_CPU_CONV");
  if (conv != nullptr && *conv != '\0') policy.conv = parse_cpu_conv(conv, "CUDL_CPU_CONV");
  const char* gemm = std::getenv("CUDL_CPU_GEMM");
  if (gemm != nullptr && *gemm != '\0') policy.gemm = parse_cpu_gemm(gemm, "CUDL_CPU_GEMM");
  return policy;
}

DType autocast_dtype(Precision p) {
  if (p == Precision::bf16) return DType::bf16;
  if (p == Precision::fp16) return DType::f16;
  return DType::f32;
}

void Context::set_precision(Precision p) {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_ && (p == Precision::bf16 || p == Precision::fp16)) {
    const int needed = p == Precision::bf16 ? 8 : 7;
    // This device alone: cuda_devices() would make every GPU current, creating a context on each
    // from every rank of a data-parallel job.
    if (const std::optional<CudaDeviceInfo> info = cuda_device(device_.index))
      CUDL_CHECK(info->cc_major >= needed,
                 "precision {}: {} ({}) has compute capability {}.{}; {} tensor cores need {}.0 or newer (use "
                 "--precision fp32)",
                 precision_name(p), device_, info->name, info->cc_major, info->cc_minor, precision_name(p), needed);
  }
#endif
  precision_ = p;
  const MathMode math = p == Precision::tf32 ? MathMode::tf32 : MathMode::strict_fp32;
  if (math != math_) set_math_mode(math);
}

void Context::synchronize() const {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_) synchronize_cuda(*cuda_);
#endif
}

Workspace::Workspace(Context& ctx, std::size_t bytes) : allocator_(&ctx.allocator()), bytes_(bytes) {
  if (bytes > 0) ptr_ = allocator_->allocate(bytes, ctx.stream_id());
}

Workspace::~Workspace() {
  if (ptr_) allocator_->deallocate(ptr_);
}

}  // namespace cudl
