// CUDA side of the engine: contexts' resources, status checks, device queries and copies.
// Plain C++ against the CUDA runtime, cuBLAS and cuDNN APIs (no kernels here).
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "engine/caching_allocator.hpp"
#include "engine/context.hpp"
#include "engine/cuda/cuda_runtime.hpp"
#include "engine/device.hpp"

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

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> devices;
  int count = cuda_device_count();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    CudaDeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.total_memory = prop.totalGlobalMem;
    info.cc_major = prop.major;
    info.cc_minor = prop.minor;
    info.multiprocessors = prop.multiProcessorCount;
    int previous = 0;
    if (cudaGetDevice(&previous) == cudaSuccess && cudaSetDevice(i) == cudaSuccess) {
      std::size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) info.free_memory = free_bytes;
      cudaSetDevice(previous);
    }
    cudaGetLastError();
    devices.push_back(std::move(info));
  }
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
  if (caching_disabled())
    return std::make_shared<DirectAllocator>(std::make_unique<CudaMemory>(device));
  return std::make_shared<CachingAllocator>(std::make_unique<CudaMemory>(device));
}

void cuda_copy_bytes(Context& ctx, void* dst, Device dst_device, const void* src, Device src_device,
                     std::size_t bytes) {
  CudaResources& r = cuda_resources(ctx);
  cudaMemcpyKind kind = dst_device.is_cpu() ? (src_device.is_cpu() ? cudaMemcpyHostToHost : cudaMemcpyDeviceToHost)
                                            : (src_device.is_cpu() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice);
  CUDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, r.stream), "copy {} bytes {} -> {}", bytes, src_device,
                  dst_device);
  // The host reads what it asked for right after `to(cpu)`; this is the explicit sync of that call.
  if (dst_device.is_cpu()) CUDL_CUDA_CHECK(cudaStreamSynchronize(r.stream), "copy {} -> {}", src_device, dst_device);
}

CudaResources& cuda_resources(Context& ctx) {
  CUDL_CHECK(ctx.cuda() != nullptr, "CUDA op called with a {} context", ctx.device());
  CudaResources& r = *ctx.cuda();
  make_device_current(r.device);
  return r;
}

// ---- contexts ----

void apply_math_mode(CudaResources& r, MathMode math) {
  CUDL_CUBLAS_CHECK(cublasSetMathMode(r.cublas, math == MathMode::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                         : CUBLAS_DEFAULT_MATH));
  r.conv_algorithms.clear();  // choices depend on the math mode
}

std::unique_ptr<CudaResources> create_cuda_resources(int device, MathMode math) {
  auto r = std::make_unique<CudaResources>();
  r->device = device;
  CudaDeviceGuard guard(device);
  try {
    CUDL_CUDA_CHECK(cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking));
    CUDL_CUBLAS_CHECK(cublasCreate(&r->cublas));
    CUDL_CUBLAS_CHECK(cublasSetStream(r->cublas, r->stream));
    CUDL_CUDNN_CHECK(cudnnCreate(&r->cudnn));
    CUDL_CUDNN_CHECK(cudnnSetStream(r->cudnn, r->stream));
    apply_math_mode(*r, math);
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
    if (r->stream) cudaStreamSynchronize(r->stream);
    if (r->cudnn) cudnnDestroy(r->cudnn);
    if (r->cublas) cublasDestroy(r->cublas);
    if (r->stream) cudaStreamDestroy(r->stream);
    cudaGetLastError();
  }
  delete r;
}

void synchronize_cuda(const CudaResources& r) {
  CudaDeviceGuard guard(r.device);
  CUDL_CUDA_CHECK(cudaStreamSynchronize(r.stream), "synchronize cuda:{}", r.device);
}

}  // namespace cudl
