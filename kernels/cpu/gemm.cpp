// Dense linear algebra on the CPU: GEMM through oneDNN's sgemm where cudl is built with oneDNN
// (a context's CpuGemm::openblas picks OpenBLAS), else OpenBLAS; bias add and its gradient with OpenMP,
// in NCHW and channels_last.
// Why oneDNN: it threads with the same OpenMP pool as every other CPU op, while OpenBLAS (Debian's
// pthread build) keeps a second pool whose spinning threads fight the OpenMP ones for the cores
// right after each GEMM - the MLP train step, GEMMs between small OpenMP loops, lost most to it.
#include <cblas.h>

#include <algorithm>
#include <vector>

#if CUDL_HAVE_ONEDNN
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#endif

#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"
#include "cudl/kernels/cpu/simd_clones.hpp"

namespace cudl {
namespace {

// Below this much work a parallel region costs more than it saves (thread wake-up on a busy
// machine is milliseconds).
constexpr std::int64_t kParallelWork = 1 << 16;

// Dims before the channel (dim 1) and after it: y is viewed as [outer, C, inner].
struct ChannelView {
  std::int64_t outer = 1, channels = 1, inner = 1;
};

ChannelView channel_view(const Tensor& t) {
  ChannelView v;
  v.outer = t.dim(0);
  v.channels = t.dim(1);
  for (int i = 2; i < t.rank(); ++i) v.inner *= t.dim(i);
  return v;
}

#if CUDL_HAVE_ONEDNN
// A product of at most this many multiply-adds (under a millisecond on one core) runs on the
// calling thread: an OpenMP team's barrier costs more than it saves there, and on a loaded machine
// it waits for a descheduled thread (the MLP's inference, two GEMMs of at most 128x784x128, took
// 44-72 ms with two threads and 0.28-0.31 ms with one, interleaved runs on the loaded 2-core VM).
// oneDNN's sgemm sizes its team from omp_get_max_threads() per call.
constexpr std::int64_t kSerialGemmMacs = 1 << 24;
#endif

}  // namespace

void cpu::sgemm(CpuGemm gemm, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // BLAS would be asked for a zero-width product; C = beta * C is all that is left.
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
#if CUDL_HAVE_ONEDNN
  if (gemm != CpuGemm::openblas) {
    const bool serial = m * n * k <= kSerialGemmMacs;
    const int team = omp_get_max_threads();
    if (serial) omp_set_num_threads(1);
    const dnnl_status_t status =
        dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (serial) omp_set_num_threads(team);
    CUDL_CHECK(status == dnnl_success, "sgemm: oneDNN sgemm failed with status {} (m={}, n={}, k={})",
               static_cast<int>(status), m, n, k);
    return;
  }
#else
  (void)gemm;  // OpenBLAS is the only library in this build
#endif
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void CpuBackend::do_gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b,
                         float beta, Tensor& c) {
  const std::int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const std::int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const std::int64_t n = trans_b ? b.dim(0) : b.dim(1);
  // Row-major leading dimensions are the stored column counts, whatever the transposition.
  if (a.dtype() == DType::f32) {
    cpu::sgemm(ctx.cpu_gemm(), trans_a, trans_b, m, n, k, alpha, a.data<float>(), a.dim(1), b.data<float>(), b.dim(1),
               beta, c.data<float>(), n);
    return;
  }
  if (m == 0 || n == 0) return;
  if (k > 0 && cpu::onednn_half_gemm(ctx.cpu_gemm(), trans_a, trans_b, m, n, k, alpha, a, b, beta, c)) return;
  // Halves without a native kernel here: widened to f32 (exact), the f32 GEMM, one rounding of c.
  cpu::F32Copy wa(ctx, a, true), wb(ctx, b, true);
  if (c.dtype() == DType::f32) {
    cpu::sgemm(ctx.cpu_gemm(), trans_a, trans_b, m, n, k, alpha, wa.data(), a.dim(1), wb.data(), b.dim(1), beta,
               c.data<float>(), n);
    return;
  }
  cpu::F32Copy wc(ctx, c, beta != 0.0f);  // beta 0 never reads c (BLAS's rule: NaN there stays out)
  cpu::sgemm(ctx.cpu_gemm(), trans_a, trans_b, m, n, k, alpha, wa.data(), a.dim(1), wb.data(), b.dim(1), beta,
             wc.data(), n);
  cpu::narrow(wc.data(), c);
}

namespace {

template <class T>
void add_bias(const ChannelView& v, T* py, const float* pb, std::int64_t numel) {
#pragma omp parallel for schedule(static) if (numel >= kParallelWork)
  for (std::int64_t plane = 0; plane < v.outer * v.channels; ++plane) {
    const float b = pb[plane % v.channels];
    T* row = py + plane * v.inner;
    for (std::int64_t i = 0; i < v.inner; ++i) row[i] = store<T>(load(row[i]) + b);
  }
}

// Double lanes per row in sum_row: 32 independent additions in flight (four AVX-512 registers of
// doubles), where one running sum waits out each addition's latency, element by element.
constexpr int kSumLanes = 32;

// The sum of row[0, n) in double, in a fixed order: lane l adds the elements l, l + 32, l + 64, ...
// of the whole 32-element blocks, then the lanes are added pairwise (l and l + 16, then l and l + 8,
// ...), then the tail elements one by one. Each element is exact in double, so the order only moves
// the last bits of a double, far below the float result's rounding.
template <class T>
CUDL_CPU_CLONES double sum_row(const T* row, std::int64_t n) {
  double lanes[kSumLanes] = {};
  std::int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int l = 0; l < kSumLanes; ++l) lanes[l] += static_cast<double>(load(row[i + l]));
  for (int width = kSumLanes / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  double s = lanes[0];
  for (; i < n; ++i) s += static_cast<double>(load(row[i]));
  return s;
}

// dy viewed as [outer, C] (inner == 1, a Linear's bias): sums[c] += dy[n, c] for n in order, the
// loop over channels vectorised; rows [n0, n1).
template <class T>
CUDL_CPU_CLONES void add_rows(const T* pdy, std::int64_t channels, std::int64_t n0, std::int64_t n1, double* sums) {
  for (std::int64_t n = n0; n < n1; ++n) {
    const T* row = pdy + n * channels;
    for (std::int64_t c = 0; c < channels; ++c) sums[c] += static_cast<double>(load(row[c]));
  }
}

// db[c] = (accumulate ? db[c] : 0) + the sum over n and the inner dims of dy[n, c, ...], in double,
// rounded once. Each channel's sum is formed by one thread in a fixed order (per row n in order:
// sum_row's lanes; inner == 1: n in order), so the result is the same for any thread count.
template <class T>
void sum_per_channel(const ChannelView& v, const T* pdy, float* pdb, bool accumulate, std::int64_t numel) {
  if (v.inner == 1) {
    std::vector<double> sums(static_cast<std::size_t>(v.channels), 0.0);
    add_rows(pdy, v.channels, 0, v.outer, sums.data());
    for (std::int64_t c = 0; c < v.channels; ++c)
      pdb[c] = static_cast<float>(accumulate ? pdb[c] + sums[static_cast<std::size_t>(c)]
                                             : sums[static_cast<std::size_t>(c)]);
    return;
  }
#pragma omp parallel for schedule(static) if (numel >= kParallelWork)
  for (std::int64_t c = 0; c < v.channels; ++c) {
    double s = 0;
    for (std::int64_t n = 0; n < v.outer; ++n) s += sum_row(pdy + (n * v.channels + c) * v.inner, v.inner);
    pdb[c] = static_cast<float>(accumulate ? pdb[c] + s : s);
  }
}

// Channels_last (NHWC) dy: the channels are the contiguous dimension, so each channel's sum_row
// order is kept with the channels as the vector lanes. Channels per task: one sample's block of
// [h*w, kChannelBlock] is read a row of kChannelBlock at a time, 32 such rows per lane pass (a bf16
// row is then one cache line; 16 channels read each line twice, by two tasks: 1.9x slower on a
// 64-channel 224x224 map).
constexpr std::int64_t kChannelBlock = 32;

// For channels [0, cb) of one sample's [hw, c] block starting at dy: out[k] = sum_row of channel k
// over the hw pixels, in sum_row's exact order (lane l of channel k adds pixels l, l + 32, ...;
// the lanes pairwise; the tail pixels one by one), so each channel gets the NCHW kernel's bits.
template <class T>
CUDL_CPU_CLONES void sum_pixels(const T* dy, std::int64_t hw, std::int64_t c, std::int64_t cb, double* out) {
  double lanes[kSumLanes][kChannelBlock] = {};
  std::int64_t i = 0;
  for (; i + kSumLanes <= hw; i += kSumLanes)
    for (int l = 0; l < kSumLanes; ++l)
      for (std::int64_t k = 0; k < cb; ++k) lanes[l][k] += static_cast<double>(load(dy[(i + l) * c + k]));
  for (int width = kSumLanes / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l)
      for (std::int64_t k = 0; k < cb; ++k) lanes[l][k] += lanes[l + width][k];
  for (std::int64_t k = 0; k < cb; ++k) out[k] = lanes[0][k];
  for (; i < hw; ++i)
    for (std::int64_t k = 0; k < cb; ++k) out[k] += static_cast<double>(load(dy[i * c + k]));
}

// sum_per_channel for a channels_last dy [n, c, h, w]: each (sample, channel block) sums its pixels
// (in parallel), then each channel adds its samples' sums in sample order, as the NCHW loop does.
template <class T>
void sum_per_channel_nhwc(const Tensor& dy, const T* pdy, float* pdb, bool accumulate) {
  const std::int64_t n = dy.dim(0), c = dy.dim(1), hw = dy.dim(2) * dy.dim(3);
  const std::int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
  std::vector<double> per_sample(static_cast<std::size_t>(n * c));
#pragma omp parallel for schedule(static) if (dy.numel() >= kParallelWork)
  for (std::int64_t t = 0; t < n * blocks; ++t) {
    const std::int64_t s = t / blocks, c0 = t % blocks * kChannelBlock;
    sum_pixels(pdy + s * hw * c + c0, hw, c, std::min(kChannelBlock, c - c0), per_sample.data() + s * c + c0);
  }
  for (std::int64_t k = 0; k < c; ++k) {
    double sum = 0;
    for (std::int64_t s = 0; s < n; ++s) sum += per_sample[static_cast<std::size_t>(s * c + k)];
    pdb[k] = static_cast<float>(accumulate ? pdb[k] + sum : sum);
  }
}

// y[n, h, w, c] += bias[c] on a channels_last y: one vectorised pass over the channels per pixel.
template <class T>
CUDL_CPU_CLONES void add_bias_pixel(T* __restrict pixel, const float* __restrict pb, std::int64_t c) {
  for (std::int64_t k = 0; k < c; ++k) pixel[k] = store<T>(load(pixel[k]) + pb[k]);
}

template <class T>
void add_bias_nhwc(const Tensor& y, T* py, const float* pb) {
  const std::int64_t c = y.dim(1), pixels = y.dim(0) * y.dim(2) * y.dim(3);
#pragma omp parallel for schedule(static) if (y.numel() >= kParallelWork)
  for (std::int64_t i = 0; i < pixels; ++i) add_bias_pixel(py + i * c, pb, c);
}

}  // namespace

void CpuBackend::do_bias_add(Context&, Tensor& y, const Tensor& bias) {
  const auto v = channel_view(y);
  cpu::dispatch_float(y.dtype(), "bias_add", [&](auto tag) {
    if (y.channels_last())
      add_bias_nhwc(y, y.data<decltype(tag)>(), bias.data<float>());
    else
      add_bias(v, y.data<decltype(tag)>(), bias.data<float>(), y.numel());
  });
}

void CpuBackend::do_bias_grad(Context&, const Tensor& dy, Tensor& dbias, bool accumulate) {
  const auto v = channel_view(dy);
  cpu::dispatch_float(dy.dtype(), "bias_grad", [&](auto tag) {
    if (dy.channels_last())
      sum_per_channel_nhwc(dy, dy.data<decltype(tag)>(), dbias.data<float>(), accumulate);
    else
      sum_per_channel(v, dy.data<decltype(tag)>(), dbias.data<float>(), accumulate, dy.numel());
  });
}

}  // namespace cudl
