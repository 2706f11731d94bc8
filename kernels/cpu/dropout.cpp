// Inverted dropout and the elementwise product its backward (and anyone else) uses.
#include <algorithm>

#include "cudl/engine/philox.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl {

using cpu::kParallelThreshold;

namespace {

// Element i of the chunk: mask from its uniform u, y from x. u >= 0 always, so p == 0 keeps every
// element with mask exactly 1.
template <class T>
inline void drop_one(const T* px, float p, float keep, float u, T* py, T* pm, std::int64_t i) {
  const float m = u >= p ? keep : 0.0f;
  pm[i] = store<T>(m);
  py[i] = store<T>(load(px[i]) * m);
}

// y is x times the exact keep factor, rounded once; the stored mask is that factor rounded to T
// (what backward multiplies by), 0 where dropped. Elements [first, first + n) of the tensor draw
// from philox::grouped_uniform (counter first + i): each Philox call serves four elements, whole
// groups of four in the middle, the partial groups at either end element by element. The ten
// rounds are 32x32-bit multiplies the AVX-512 copy does 8 at a time (simd_clones.hpp), the same
// bits as one at a time.
template <class T>
CUDL_CPU_CLONES void dropout_chunk(const T* px, float p, float keep, std::uint64_t seed, std::uint64_t first, T* py,
                                   T* pm, std::int64_t n) {
  std::int64_t i = 0;
  for (; i < n && ((first + static_cast<std::uint64_t>(i)) & 3u) != 0; ++i)
    drop_one(px, p, keep, philox::grouped_uniform(first + static_cast<std::uint64_t>(i), seed), py, pm, i);
  const std::uint64_t group0 = (first + static_cast<std::uint64_t>(i)) >> 2;
  const std::int64_t groups = (n - i) / 4;
  for (std::int64_t g = 0; g < groups; ++g) {
    const philox::Uint4 r = philox::philox4x32_10(group0 + static_cast<std::uint64_t>(g), seed);
    const std::int64_t at = i + 4 * g;
    drop_one(px, p, keep, philox::word_uniform(r.x), py, pm, at);
    drop_one(px, p, keep, philox::word_uniform(r.y), py, pm, at + 1);
    drop_one(px, p, keep, philox::word_uniform(r.z), py, pm, at + 2);
    drop_one(px, p, keep, philox::word_uniform(r.w), py, pm, at + 3);
  }
  for (i += 4 * groups; i < n; ++i)
    drop_one(px, p, keep, philox::grouped_uniform(first + static_cast<std::uint64_t>(i), seed), py, pm, i);
}

template <class T>
void dropout(const T* px, float p, std::uint64_t seed, std::uint64_t offset, T* py, T* pm, std::int64_t n) {
  const float keep = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold / 8)
  for (std::int64_t i = 0; i < n; i += cpu::kSimdChunk)
    dropout_chunk(px + i, p, keep, seed, offset + static_cast<std::uint64_t>(i), py + i, pm + i,
                  std::min(cpu::kSimdChunk, n - i));
}

template <class T>
CUDL_CPU_CLONES void multiply_chunk(const T* pa, const T* pb, T* po, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) po[i] = store<T>(load(pa[i]) * load(pb[i]));
}

template <class T>
void multiply(const T* pa, const T* pb, T* po, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; i += cpu::kSimdChunk)
    multiply_chunk(pa + i, pb + i, po + i, std::min(cpu::kSimdChunk, n - i));
}

}  // namespace

void CpuBackend::do_dropout_forward(Context&, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                                    Tensor& y, Tensor& mask) {
  cpu::dispatch_float(x.dtype(), "dropout_forward", [&](auto tag) {
    using T = decltype(tag);
    dropout(x.data<T>(), p, seed, offset, y.data<T>(), mask.data<T>(), x.numel());
  });
}

void CpuBackend::do_dropout_forward_counted(Context& ctx, const Tensor& x, float p, std::uint64_t seed, Tensor& counter,
                                            std::uint64_t offset, std::uint64_t advance, Tensor& y, Tensor& mask) {
  // The counter's u64 as two i32 words (low, high); the masks are those of the plain op at its value.
  auto* words = reinterpret_cast<std::uint32_t*>(counter.data<std::int32_t>());
  const std::uint64_t value = words[0] | static_cast<std::uint64_t>(words[1]) << 32;
  do_dropout_forward(ctx, x, p, seed, value + offset, y, mask);
  const std::uint64_t next = value + advance;
  words[0] = static_cast<std::uint32_t>(next);
  words[1] = static_cast<std::uint32_t>(next >> 32);
}

void CpuBackend::do_mul(Context&, const Tensor& a, const Tensor& b, Tensor& out) {
  cpu::dispatch_float(a.dtype(), "mul", [&](auto tag) {
    using T = decltype(tag);
    multiply(a.data<T>(), b.data<T>(), out.data<T>(), a.numel());
  });
}

}  // namespace cudl
