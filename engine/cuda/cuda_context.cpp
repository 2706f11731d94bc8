// CUDA side of the engine: contexts' resources, status checks, device queries and copies.
// Plain C++ against the CUDA runtime, cuBLAS and cuDNN APIs (no kernels here).
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "cudl/engine/caching_allocator.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/cuda/cuda_runtime.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/op_kinds.hpp"

namespace cudl {

namespace cuda_detail {

std::string call_name(const char* call_text) {
  std::string_view text(call_text);
  auto paren = text.find('(');
  return std::string(paren == std::string_view::npos ? text : text.substr(0, paren));
}

namespace {
std::string describe(const char* call, const std::string& what, const char* status_text) {
  return what.empty() ? fmt::format("{} failed: {}", call_name(call), status_text)
                      : fmt::format("{} failed: {} ({})", call_name(call), status_text, what);
}
}  // namespace

void throw_cuda(cudaError_t status, const char* call, const char* file, int line, const std::string& what) {
  cudaGetLastError();  // clear the sticky-free error so the next call starts clean
  std::string message = detail::with_location(describe(call, what, cudaGetErrorName(status)), file, line);
  if (status == cudaErrorMemoryAllocation) throw OutOfMemoryError(message);
  throw Error(message);
}

void throw_cublas(cublasStatus_t status, const char* call, const char* file, int line, const std::string& what) {
  throw Error(detail::with_location(describe(call, what, cublasGetStatusName(status)), file, line));
}

void throw_cudnn(cudnnStatus_t status, const char* call, const char* file, int line, const std::string& what) {
  throw Error(detail::with_location(describe(call, what, cudnnGetErrorString(status)), file, line));
}

bool sync_check_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("CUDL_SYNC_CHECK");
    return value != nullptr && std::string_view(value) == "1";
  }();
  return enabled;
}

void sync_check(const char* what, const char* file, int line) {
  if (!sync_check_enabled()) [[likely]]
    return;
  cudaError_t status = cudaDeviceSynchronize();
  if (status != cudaSuccess)
    throw_cuda(status, "cudaDeviceSynchronize", file, line,
               fmt::format("CUDL_SYNC_CHECK=1: the device faulted while running {}", call_name(what)));
}

}  // namespace cuda_detail

// ---- the current device ----

void make_device_current(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
  CUDL_CUDA_CHECK(cudaSetDevice(device), "make cuda:{} current", device);
}

CudaDeviceGuard::CudaDeviceGuard(int device) {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) {
    cudaGetLastError();
    current = -1;
  }
  if (current == device) return;
  CUDL_CUDA_CHECK(cudaSetDevice(device), "make cuda:{} current", device);
  previous_ = current;
}

CudaDeviceGuard::CudaDeviceGuard(int device, std::nothrow_t) noexcept {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) {
    cudaGetLastError();
    current = -1;
  }
  if (current == device) return;
  if (cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  previous_ = current;
}

CudaDeviceGuard::~CudaDeviceGuard() {
  if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
}

// ---- devices ----

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

bool cuda_compiled() { return true; }

std::optional<CudaDeviceInfo> cuda_device(int index) {
  cudaDeviceProp prop{};
  if (index < 0 || index >= cuda_device_count() || cudaGetDeviceProperties(&prop, index) != cudaSuccess) {
    cudaGetLastError();
    return std::nullopt;
  }
  CudaDeviceInfo info;
  info.index = index;
  info.name = prop.name;
  info.total_memory = prop.totalGlobalMem;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  {
    CudaDeviceGuard guard(index, std::nothrow);
    int current = -1;
    std::size_t free_bytes = 0, total_bytes = 0;
    // Only when the device did become current: otherwise cudaMemGetInfo would read another one.
    if (cudaGetDevice(&current) == cudaSuccess && current == index &&
        cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
      info.free_memory = free_bytes;
  }
  cudaGetLastError();
  return info;
}

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> devices;
  const int count = cuda_device_count();
  for (int i = 0; i < count; ++i)
    if (std::optional<CudaDeviceInfo> info = cuda_device(i)) devices.push_back(std::move(*info));
  return devices;
}

namespace {
std::string cuda_version_string(int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); }
}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.cudl_version = CUDL_VERSION;
  info.blas = CUDL_CPU_BLAS;
  info.backends = {"cpu", "cuda"};
  int runtime = 0, driver = 0;
  info.cuda_runtime = fmt::format("{} (built against {})",
                                  cudaRuntimeGetVersion(&runtime) == cudaSuccess ? cuda_version_string(runtime) : "?",
                                  cuda_version_string(CUDART_VERSION));
  info.cuda_driver = cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0 ? cuda_version_string(driver)
                                                                                : std::string("no driver");
  cudaGetLastError();
  std::size_t cudnn = cudnnGetVersion();
  info.cudnn = fmt::format("{}.{}.{} (built against {}.{}.{})", cudnn / 10000, (cudnn % 10000) / 100, cudnn % 100,
                           CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL);
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  info.cublas = fmt::format("{}.{}.{} (built against {}.{}.{})", major, minor, patch, CUBLAS_VER_MAJOR,
                            CUBLAS_VER_MINOR, CUBLAS_VER_PATCH);
  return info;
}

// ---- memory ----

void* CudaMemory::try_malloc(std::size_t bytes) {
  CudaDeviceGuard guard(device_);
  void* p = nullptr;
  cudaError_t status = cudaMalloc(&p, bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  CUDL_CUDA_CHECK(status, "{} bytes on cuda:{}", bytes, device_);
  return p;
}

namespace {
// What a CUDA call returns during process exit, once the runtime has begun tearing itself down.
bool runtime_is_shutting_down(cudaError_t status) {
  return status == cudaErrorCudartUnloading || status == cudaErrorContextIsDestroyed;
}
}  // namespace

void CudaMemory::free(void* ptr) {
  CudaDeviceGuard guard(device_, std::nothrow);
  cudaError_t status = cudaFree(ptr);
  if (status != cudaSuccess) {
    cudaGetLastError();
    // The process-wide pool is a static that can outlive the CUDA runtime at exit; the driver
    // reclaims the memory with the process then, so that is no reason to warn.
    if (runtime_is_shutting_down(status)) return;
    // Frees run from destructors, which must not throw; report and go on.
    fmt::print(stderr, "cudl: warning: cudaFree failed: {}\n", cudaGetErrorName(status));
  }
}

MemoryInfo CudaMemory::memory_info() const {
  MemoryInfo info;
  CudaDeviceGuard guard(device_, std::nothrow);
  if (cudaMemGetInfo(&info.free_bytes, &info.total_bytes) != cudaSuccess) cudaGetLastError();
  return info;
}

std::shared_ptr<Allocator> make_cuda_allocator(int device) {
  if (caching_disabled()) return std::make_shared<DirectAllocator>(std::make_unique<CudaMemory>(device));
  return std::make_shared<CachingAllocator>(std::make_unique<CudaMemory>(device));
}

namespace {

cudaMemcpyKind copy_kind(Device dst_device, Device src_device) {
  return dst_device.is_cpu() ? (src_device.is_cpu() ? cudaMemcpyHostToHost : cudaMemcpyDeviceToHost)
                             : (src_device.is_cpu() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice);
}

// Queues the copy of the device fault word into its pinned host int, ahead of a stream sync that
// the caller does anyway (so reading it costs a 4-byte copy, never an extra sync).
void queue_fault_read(CudaResources& r) {
  CUDL_CUDA_CHECK(cudaMemcpyAsync(r.fault_host, r.fault_word, sizeof(int), cudaMemcpyDeviceToHost, r.stream),
                  "read the device fault word of cuda:{}", r.device);
}

// After that sync: throws if a kernel set the word, clearing it first (ordered on the stream, so
// the kernels queued after this read start from a clean word).
void throw_if_device_fault(CudaResources& r) {
  int code = *r.fault_host;
  if (code == static_cast<int>(DeviceFault::none)) [[likely]]
    return;
  *r.fault_host = 0;
  CUDL_CUDA_CHECK(cudaMemsetAsync(r.fault_word, 0, sizeof(int), r.stream), "clear the device fault word of cuda:{}",
                  r.device);
  throw Error(device_fault_message(code, r.device));
}

// A copy asked of a CPU context, e.g. Tensor::to(cpu_ctx) of a CUDA tensor. There is no stream to
// order it after the work that wrote the source: wait for every stream of the CUDA side's device
// (cudaDeviceSynchronize), copy synchronously, and wait again when the destination is a device
// (a pageable host -> device cudaMemcpy may return before its DMA is done).
void copy_without_a_stream(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  for (Device d : {src_device, dst_device}) {
    if (!d.is_cuda()) continue;
    CudaDeviceGuard guard(d.index);
    CUDL_CUDA_CHECK(cudaDeviceSynchronize(), "copy {} bytes {} -> {} (waiting for {})", bytes, src_device, dst_device,
                    d);
  }
  CudaDeviceGuard guard(src_device.is_cuda() ? src_device.index : dst_device.index);
  CUDL_CUDA_CHECK(cudaMemcpy(dst, src, bytes, copy_kind(dst_device, src_device)), "copy {} bytes {} -> {}", bytes,
                  src_device, dst_device);
  if (dst_device.is_cuda()) {
    CudaDeviceGuard dst_guard(dst_device.index);
    CUDL_CUDA_CHECK(cudaDeviceSynchronize(), "copy {} bytes {} -> {}", bytes, src_device, dst_device);
  }
}

}  // namespace

void cuda_copy_bytes(Context& ctx, void* dst, Device dst_device, const void* src, Device src_device,
                     std::size_t bytes) {
  if (ctx.cuda() == nullptr) {
    copy_without_a_stream(dst, dst_device, src, src_device, bytes);
    return;
  }
  CudaResources& r = cuda_resources(ctx);
  CUDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, copy_kind(dst_device, src_device), r.stream),
                  "copy {} bytes {} -> {}", bytes, src_device, dst_device);
  if (!dst_device.is_cpu()) return;
  // The host reads what it asked for right after `to(cpu)`; this is the explicit sync of that call,
  // and every synchronising read reports a device fault.
  queue_fault_read(r);
  CUDL_CUDA_CHECK(cudaStreamSynchronize(r.stream), "copy {} -> {}", src_device, dst_device);
  throw_if_device_fault(r);
}

std::string device_fault_message(int code, int device) {
  switch (static_cast<DeviceFault>(code)) {
    case DeviceFault::none:
      break;
    case DeviceFault::label_out_of_range:
      return fmt::format(
          "softmax_cross_entropy / accuracy: a label was outside [0, K) on cuda:{} (K = the logits' columns; "
          "detected on the device and reported at this host read, so the loss, accuracy and gradients "
          "computed since the previous read are invalid)",
          device);
    case DeviceFault::argmax_out_of_range:
      return fmt::format(
          "maxpool2d_backward: an argmax entry lay outside its input plane on cuda:{} (argmax must come from "
          "maxpool2d_forward with the same shapes; detected on the device and reported at this host read, so the "
          "gradients computed since the previous read are invalid)",
          device);
    case DeviceFault::gather_index_out_of_range:
      return fmt::format(
          "gather_rows: an index lay outside [0, N) of src's N rows on cuda:{} (its row of out was written as "
          "zeros; detected on the device and reported at this host read, so what was computed from the gathered "
          "rows since the previous read is invalid)",
          device);
  }
  return fmt::format(
      "device fault code {} on cuda:{} (detected on the device; results since the previous host "
      "read are invalid)",
      code, device);
}

int* device_fault_word(Context& ctx) { return cuda_resources(ctx).fault_word; }

CudaResources& cuda_resources(Context& ctx) {
  CUDL_CHECK(ctx.cuda() != nullptr, "CUDA op called with a {} context", ctx.device());
  CudaResources& r = *ctx.cuda();
  make_device_current(r.device);
  return r;
}

// ---- contexts ----

void apply_math_mode(CudaResources& r, MathMode math) {
  CUDL_CUBLAS_CHECK(
      cublasSetMathMode(r.cublas, math == MathMode::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  r.conv_algorithms.clear();  // choices depend on the math mode
}

namespace {
// cuBLAS's recommended size for a user workspace (cuBLAS API reference, cublasSetWorkspace): 32 MiB
// on Hopper and later, 4 MiB before. The size of the workspace it takes for itself otherwise.
std::size_t cublas_workspace_bytes(int device) {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    major = 9;  // the larger size: never fewer algorithms than cuBLAS would have had
  }
  return major >= 9 ? std::size_t{32} << 20 : std::size_t{4} << 20;
}
}  // namespace

std::unique_ptr<CudaResources> create_cuda_resources(int device, MathMode math) {
  auto r = std::make_unique<CudaResources>();
  r->device = device;
  CudaDeviceGuard guard(device);
  try {
    CUDL_CUDA_CHECK(cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking));
    CUDL_CUBLAS_CHECK(cublasCreate(&r->cublas));
    CUDL_CUBLAS_CHECK(cublasSetStream(r->cublas, r->stream));
    CUDL_CUBLAS_CHECK(cublasLtCreate(&r->cublaslt));
    CUDL_CUDNN_CHECK(cudnnCreate(&r->cudnn));
    CUDL_CUDNN_CHECK(cudnnSetStream(r->cudnn, r->stream));
    apply_math_mode(*r, math);
    // The fault word: a small-pool block of the device's pool on this stream, zeroed on it before
    // any kernel can run; its host mirror is pinned so the read before each sync is a real async copy.
    r->pool = allocator_for(Device::cuda(device));
    r->fault_word = static_cast<int*>(r->pool->allocate(sizeof(int), reinterpret_cast<StreamId>(r->stream)));
    CUDL_CUDA_CHECK(cudaMemsetAsync(r->fault_word, 0, sizeof(int), r->stream), "device fault word of cuda:{}", device);
    CUDL_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&r->fault_host), sizeof(int)),
                    "device fault word of cuda:{}", device);
    *r->fault_host = 0;
    // After cublasSetStream, which resets the handle to cuBLAS's own workspace. Without one given,
    // cuBLAS takes a new workspace inside each graph recording (pytorch#83461; a stream-ordered
    // allocation from CUDA 12.2, pytorch#113994), memory our pools neither see nor keep steady.
    // With this one, a recorded GEMM allocates nothing. Pool blocks are 512-byte aligned (cuBLAS
    // asks for 256).
    const std::size_t workspace_bytes = cublas_workspace_bytes(device);
    r->cublas_workspace = r->pool->allocate(workspace_bytes, reinterpret_cast<StreamId>(r->stream));
    CUDL_CUBLAS_CHECK(cublasSetWorkspace(r->cublas, r->cublas_workspace, workspace_bytes),
                      "cuBLAS workspace of {} on cuda:{}", format_bytes(workspace_bytes), device);
  } catch (...) {
    destroy_cuda_resources(r.release());
    throw;
  }
  return r;
}

void destroy_cuda_resources(CudaResources* r) noexcept {
  if (!r) return;
  {
    CudaDeviceGuard guard(r->device, std::nothrow);
    bool idle = r->stream != nullptr && cudaStreamSynchronize(r->stream) == cudaSuccess;
    if (r->pool) {
      try {
        if (r->fault_word) r->pool->deallocate(r->fault_word);
        if (r->cublas_workspace) r->pool->deallocate(r->cublas_workspace);
        // Nothing is left queued on the stream, so its cached blocks may serve other contexts now.
        // (After a failed sync that is unknown: they stay with the dead stream.)
        if (idle) r->pool->retire_stream(reinterpret_cast<StreamId>(r->stream));
      } catch (...) {
      }
    }
    if (r->fault_host) cudaFreeHost(r->fault_host);
    if (r->cudnn) cudnnDestroy(r->cudnn);
    if (r->cublaslt) cublasLtDestroy(r->cublaslt);
    if (r->cublas) cublasDestroy(r->cublas);
    if (r->stream) cudaStreamDestroy(r->stream);
    cudaGetLastError();
  }
  delete r;
}

void synchronize_cuda(CudaResources& r) {
  CudaDeviceGuard guard(r.device);
  queue_fault_read(r);
  CUDL_CUDA_CHECK(cudaStreamSynchronize(r.stream), "synchronize cuda:{}", r.device);
  throw_if_device_fault(r);
}

}  // namespace cudl
