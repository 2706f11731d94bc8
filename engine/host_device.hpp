#pragma once
// CUDL_HOST_DEVICE marks a small function that compiles for the host and, under nvcc, for the
// device too: one definition that both backends call is how their answers stay the same bits.
#if defined(__CUDACC__)
#define CUDL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CUDL_HOST_DEVICE inline
#endif
