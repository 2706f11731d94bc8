#pragma once
// CUDL_CPU_CLONES marks a loop function that is compiled twice: for AVX-512 (x86-64-v4: F, BW, CD,
// DQ, VL) and for the baseline x86-64 the build targets, the copy picked once when the library
// loads (GCC's target_clones, an ifunc). The build targets baseline x86-64 so one binary runs on
// any x86-64 CPU, and there the elementwise loops of half tensors do not vectorise at all (SSE2 has
// no 32-to-16-bit pack, so each bf16 is rounded on its own): the AVX-512 copy widens, computes and
// rounds 16 at a time. The arithmetic is the same statements in both copies, and kernels/cpu is
// compiled with -ffp-contract=off (CMakeLists.txt: GCC would otherwise fuse a * b + c into an FMA in
// the AVX-512 copy, C++ being exempt from its ISO-mode default), so results do not depend on which
// copy runs.
//
// OpenMP stays outside: callers split the work in a parallel loop and call the cloned function
// per chunk or plane. Clang, other targets and sanitizer builds get the plain function.
#include <cstdint>

// CUDL_CPU_CLONES_AVX2 is the same with AVX2 (x86-64-v3, 8 floats a vector) for loops over short
// rows: MNIST's 2x2 max pool has 12 outputs a row, fewer than one AVX-512 vector, and its AVX2
// copy took 0.90 ms where the AVX-512 one took more than the baseline's 1.25 (f32, batch 128).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_ADDRESS__)
#define CUDL_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#define CUDL_CPU_CLONES_AVX2 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CUDL_CPU_CLONES
#define CUDL_CPU_CLONES_AVX2
#endif

namespace cudl::cpu {

// Elements per chunk of an elementwise loop split across threads: large enough that a call and
// its loop tail cost nothing, small enough that two threads share a 32k-element loop evenly.
inline constexpr std::int64_t kSimdChunk = 4096;

}  // namespace cudl::cpu
