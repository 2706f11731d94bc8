#pragma once
// CUDA-only plumbing shared by the engine and the CUDA kernels: status checks that throw
// cudl::Error naming the call, the per-context resources (stream, cuBLAS and cuDNN handles), and
// the device allocator. Included only by code compiled when CUDL_HAVE_CUDA is set.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>

#include "cudl/engine/allocator.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

class Context;

namespace cuda_detail {
// The name of the called function, from the stringised call ("cudaMalloc(&p, n)" -> "cudaMalloc").
std::string call_name(const char* call_text);
[[noreturn]] void throw_cuda(cudaError_t status, const char* call, const char* file, int line, const std::string& what);
[[noreturn]] void throw_cublas(cublasStatus_t status, const char* call, const char* file, int line,
                               const std::string& what);
[[noreturn]] void throw_cudnn(cudnnStatus_t status, const char* call, const char* file, int line,
                              const std::string& what);

// CUDL_SYNC_CHECK=1 (read once): after every kernel launch and cuBLAS/cuDNN call, wait for the
// device and report a fault there, naming that call. Without it a fault of an asynchronous kernel
// surfaces at some later call, which then gets the blame. Slow; for finding the faulting op.
bool sync_check_enabled();
// In CUDL_SYNC_CHECK mode: cudaDeviceSynchronize, throwing cudl::Error naming `what` (a kernel or
// library call) if the device reports a fault. Otherwise nothing.
void sync_check(const char* what, const char* file, int line);
}  // namespace cuda_detail

}  // namespace cudl

// Each takes the call and, optionally, a fmt format string with arguments naming the op and shapes.
#define CUDL_CUDA_CHECK(call, ...)                                                \
  do {                                                                            \
    cudaError_t cudl_status_ = (call);                                            \
    if (cudl_status_ != cudaSuccess) [[unlikely]]                                 \
      ::cudl::cuda_detail::throw_cuda(cudl_status_, #call, __FILE__, __LINE__,    \
                                      ::fmt::format("" __VA_OPT__(__VA_ARGS__))); \
  } while (0)

// cuBLAS and cuDNN calls enqueue device work, so in CUDL_SYNC_CHECK mode they are followed by a
// device sync that blames them for a fault of that work.
#define CUDL_CUBLAS_CHECK(call, ...)                                                \
  do {                                                                              \
    cublasStatus_t cudl_status_ = (call);                                           \
    if (cudl_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                         \
      ::cudl::cuda_detail::throw_cublas(cudl_status_, #call, __FILE__, __LINE__,    \
                                        ::fmt::format("" __VA_OPT__(__VA_ARGS__))); \
    ::cudl::cuda_detail::sync_check(#call, __FILE__, __LINE__);                     \
  } while (0)

#define CUDL_CUDNN_CHECK(call, ...)                                                \
  do {                                                                             \
    cudnnStatus_t cudl_status_ = (call);                                           \
    if (cudl_status_ != CUDNN_STATUS_SUCCESS) [[unlikely]]                         \
      ::cudl::cuda_detail::throw_cudnn(cudl_status_, #call, __FILE__, __LINE__,    \
                                       ::fmt::format("" __VA_OPT__(__VA_ARGS__))); \
    ::cudl::cuda_detail::sync_check(#call, __FILE__, __LINE__);                    \
  } while (0)

// After every kernel launch: catches bad launch configurations at the launch site (and, with
// CUDL_SYNC_CHECK=1, faults while the kernel ran).
#define CUDL_KERNEL_CHECK(kernel_name)                                \
  do {                                                                \
    CUDL_CUDA_CHECK(cudaGetLastError(), "kernel {}", kernel_name);    \
    ::cudl::cuda_detail::sync_check(kernel_name, __FILE__, __LINE__); \
  } while (0)

namespace cudl {

struct ConvAlgorithm {
  int algo = 0;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
  std::size_t workspace_bytes = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
};

// Makes `device` current on this thread for its lifetime and restores the previous one after
// (cudaSetDevice is skipped when the device already is current). Engine code that acts for a
// context outside an op (creating and destroying its resources, memory, copies, events) holds one,
// so cuda:N work lands on device N whatever the thread's current device was.
class CudaDeviceGuard {
 public:
  // Throws cudl::Error if the device cannot be made current.
  explicit CudaDeviceGuard(int device);
  // For destructors: never throws; if the device cannot be made current, the calls that follow
  // fail on their own (and are ignored there).
  CudaDeviceGuard(int device, std::nothrow_t) noexcept;
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;  // the device to restore; -1 when nothing was changed
};

// Makes `device` current on this thread (no-op when it already is). Throws cudl::Error on failure.
void make_device_current(int device);

struct CudaResources {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // cuBLASLt, for GEMMs with a fused epilogue (kernels/cublas/linear_fused.cpp); its calls take
  // the stream each time.
  cublasLtHandle_t cublaslt = nullptr;
  cudnnHandle_t cudnn = nullptr;
  // The device fault word (see device_fault_word), drawn from `pool` on this stream, and the
  // pinned int its value is copied into ahead of each synchronising read.
  int* fault_word = nullptr;
  int* fault_host = nullptr;
  // cuBLAS's workspace (cublasSetWorkspace), from `pool` on this stream for the context's life:
  // with one of its own, cuBLAS allocates nothing while a CUDA graph records (engine/step_graph.hpp).
  void* cublas_workspace = nullptr;
  std::shared_ptr<Allocator> pool;  // the device's pool: the fault word, and retire_stream at the end
  // Chosen convolution algorithms keyed by direction, layouts, shapes, parameters and math mode
  // (algo -1: cuDNN refused the call's NHWC layouts, so it runs on NCHW copies: kernels/cudnn/conv.cpp).
  std::unordered_map<std::string, ConvAlgorithm> conv_algorithms;
};

// RawMemory over cudaMalloc/cudaFree on one device.
class CudaMemory final : public RawMemory {
 public:
  explicit CudaMemory(int device) : device_(device) {}
  void* try_malloc(std::size_t bytes) override;
  void free(void* ptr) override;
  MemoryInfo memory_info() const override;
  Device device() const override { return Device::cuda(device_); }

 private:
  int device_;
};

// The caching pool over CudaMemory, or a DirectAllocator when CUDL_NO_CACHING=1.
std::shared_ptr<Allocator> make_cuda_allocator(int device);

// A copy ordered on ctx's stream; to the host, it waits for it and then reports a device fault
// (see device_fault_word). When ctx is a CPU context (Tensor::to(cpu_ctx) of a CUDA tensor) there
// is no stream to order on: it waits for the CUDA side's whole device, then copies synchronously.
void cuda_copy_bytes(Context& ctx, void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes);

// The context's device fault word (one int in device memory, DeviceFault::none at creation):
// kernels that meet bad data they cannot throw on set it; the next synchronising read on the
// context (a device-to-host copy, synchronize) throws a cudl::Error naming the fault and clears it.
int* device_fault_word(Context& ctx);

// The message of a device fault code (DeviceFault) found on cuda:`device`.
std::string device_fault_message(int code, int device);

// The resources of a CUDA context; throws if ctx is not a CUDA context. Also makes ctx's device
// current on this thread (cheap when it already is), so the launch or cuBLAS/cuDNN call that
// follows targets it: every op reaches its stream through here (stream_of, kernels/cuda/op_util.hpp).
CudaResources& cuda_resources(Context& ctx);

// Lifetime of a context's resources (engine/cuda/cuda_context.cpp).
std::unique_ptr<CudaResources> create_cuda_resources(int device, MathMode math);
// Synchronises the stream; then returns the device fault word and cuBLAS's workspace to the pool,
// retires the stream in it (its blocks become reusable by other contexts), and releases the handles.
void destroy_cuda_resources(CudaResources* resources) noexcept;
void apply_math_mode(CudaResources& resources, MathMode math);
// Waits for the stream, then throws if a kernel set the device fault word (and clears it).
void synchronize_cuda(CudaResources& resources);

}  // namespace cudl
