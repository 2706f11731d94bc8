// Error reporting of the CUDA layer. Needs the CUDA build but no GPU: the status-to-exception
// helpers only format, and the no-device paths are exactly what a GPU-less machine exercises.
#include <gtest/gtest.h>

#include <string>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/shape.hpp"

#if defined(CUDL_HAVE_CUDA)
#include "cudl/engine/cuda/cuda_runtime.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#endif

using namespace cudl;

namespace {

#if defined(CUDL_HAVE_CUDA)
std::string location(int line) { return fmt::format("[tests/test_cuda_errors.cpp:{}]", line); }

cudnnStatus_t cudnnPretendCall(int) { return CUDNN_STATUS_BAD_PARAM; }
#endif

}  // namespace

TEST(CudaErrors, CudnnStatusNamesCallStatusOpAndLocation) {
#if defined(CUDL_HAVE_CUDA)
  const int line = __LINE__ + 2;
  try {
    cuda_detail::throw_cudnn(CUDNN_STATUS_BAD_PARAM, "cudnnConvolutionForward(h, ...)", __FILE__, line,
                             "conv2d x=[1,3,224,224]");
    FAIL() << "throw_cudnn returned";
  } catch (const OutOfMemoryError&) {
    FAIL() << "a cuDNN status is not an out-of-memory error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cudnnConvolutionForward failed: CUDNN_STATUS_BAD_PARAM (conv2d x=[1,3,224,224])"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(location(line)), std::string::npos) << message;
    EXPECT_EQ(message.find("(h, ...)"), std::string::npos) << "only the function name: " << message;
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaErrors, CudnnCheckMacroFormatsShapes) {
#if defined(CUDL_HAVE_CUDA)
  try {
    const Shape x{1, 3, 224, 224}, w{64, 3, 3, 3};
    CUDL_CUDNN_CHECK(cudnnPretendCall(3), "conv2d x={} w={}", x, w);
    FAIL() << "CUDL_CUDNN_CHECK did not throw";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cudnnPretendCall failed: CUDNN_STATUS_BAD_PARAM (conv2d x=[1,3,224,224] w=[64,3,3,3])"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("[tests/test_cuda_errors.cpp:"), std::string::npos) << message;
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaErrors, CublasStatusNamesCallStatusOpAndLocation) {
#if defined(CUDL_HAVE_CUDA)
  const int line = __LINE__ + 2;
  try {
    cuda_detail::throw_cublas(CUBLAS_STATUS_INVALID_VALUE, "cublasSgemm(handle, ...)", __FILE__, line,
                              "gemm a=[2,3] b=[4,5]");
    FAIL() << "throw_cublas returned";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cublasSgemm failed: CUBLAS_STATUS_INVALID_VALUE (gemm a=[2,3] b=[4,5])"), std::string::npos)
        << message;
    EXPECT_NE(message.find(location(line)), std::string::npos) << message;
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaErrors, CudaOutOfMemoryIsOutOfMemoryError) {
#if defined(CUDL_HAVE_CUDA)
  const int line = __LINE__ + 2;
  try {
    cuda_detail::throw_cuda(cudaErrorMemoryAllocation, "cudaMalloc(&p, n)", __FILE__, line, "1024 bytes on cuda:0");
    FAIL() << "throw_cuda returned";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cudaMalloc failed: cudaErrorMemoryAllocation (1024 bytes on cuda:0)"), std::string::npos)
        << message;
    EXPECT_NE(message.find(location(line)), std::string::npos) << message;
  } catch (const Error& e) {
    FAIL() << "expected OutOfMemoryError, got Error: " << e.what();
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaErrors, OtherCudaErrorsAreNotOutOfMemory) {
#if defined(CUDL_HAVE_CUDA)
  try {
    cuda_detail::throw_cuda(cudaErrorInvalidValue, "cudaMemcpyAsync(dst, src, n, kind, s)", __FILE__, __LINE__, "");
    FAIL() << "throw_cuda returned";
  } catch (const OutOfMemoryError& e) {
    FAIL() << "cudaErrorInvalidValue is not out of memory: " << e.what();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cudaMemcpyAsync failed: cudaErrorInvalidValue ["), std::string::npos) << message;
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaErrors, ContextWithoutDeviceSaysSo) {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  try {
    Context ctx(Device::cuda(0));
    FAIL() << "a CUDA context was created without a device";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("no CUDA device is available"), std::string::npos) << message;
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}

TEST(CudaErrors, KernelLaunchWithoutDeviceNamesTheKernel) {
#if defined(CUDL_HAVE_CUDA)
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  try {
    cuda_detail::launch_fill(nullptr, cuda_detail::FloatType::f32, 16, 0.0f, nullptr);
    FAIL() << "a kernel launch without a device did not throw";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("kernel fill_kernel"), std::string::npos) << message;
  }
#else
  GTEST_SKIP() << "CPU-only build";
#endif
}
