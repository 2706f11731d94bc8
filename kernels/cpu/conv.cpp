// 2-D convolution on the CPU. With oneDNN built in (the default where libdnnl-dev is installed)
// every direction goes to kernels/cpu/onednn_conv.cpp; this file keeps the im2col + OpenBLAS GEMM
// path (col2im for the data gradient) as the fallback: no oneDNN, CpuConv::im2col (Context::cpu_conv), or a
// geometry oneDNN cannot express. Both share the empty-shape guards below. Half tensors go to
// oneDNN where it has a native kernel for their dtype on this CPU (bf16 with AVX-512 BF16 / AMX);
// otherwise they are widened to f32, convolved on the f32 path and the output rounded once.
// Grouped convolutions (Conv2dParams::groups) go to oneDNN's grouped primitives; here the column
// matrix is built for all channels at once (its rows are channel-major, so a group's rows are
// contiguous) and each group is one GEMM over its slice of the rows and of the weights.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "cudl/engine/check.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/format_route.hpp"
#include "cudl/kernels/cpu/conv_one_channel.hpp"
#include "cudl/kernels/cpu/cpu_args.hpp"
#include "cudl/kernels/cpu/cpu_backend.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"

namespace cudl {
namespace {

// Every size the loops need, taken once from x [N,C,H,W], w [K,C/G,R,S], y [N,K,P,Q].
struct ConvGeometry {
  std::int64_t n, c, h, w, k, r, s, p, q;
  Conv2dParams prm;
  std::int64_t rows() const { return c * r * s; }  // of the column matrix [C*R*S, P*Q]
  std::int64_t cols() const { return p * q; }
  std::int64_t col_size() const { return rows() * cols(); }
  // One group's share: its rows of the column matrix, its output channels, its weights [K/G, C/G*R*S].
  std::int64_t groups() const { return prm.groups; }
  std::int64_t group_rows() const { return rows() / prm.groups; }
  std::int64_t group_k() const { return k / prm.groups; }
  std::int64_t group_weights() const { return group_k() * group_rows(); }
};

ConvGeometry geometry(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p) {
  return {x[0], x[1], x[2], x[3], w[0], w[2], w[3], y[2], y[3], p};
}

void sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, const float* b, float beta,
           float* c) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a, static_cast<blasint>(ta ? m : k), b,
              static_cast<blasint>(tb ? k : n), beta, c, static_cast<blasint>(n));
}

// The valid output range [lo, hi) of a row: the outputs oq whose input column
// iw = oq*stride - pad + s*dilation lies inside [0, w).
struct Span {
  std::int64_t lo, hi;
};

Span valid_span(std::int64_t out, std::int64_t in, std::int64_t stride, std::int64_t offset) {
  // iw = oq*stride + offset; need 0 <= iw < in.
  std::int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  std::int64_t hi = in - offset <= 0 ? 0 : (in - offset + stride - 1) / stride;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
  return {lo, hi};
}

// Rows c*R*S .. (c+1)*R*S of the column matrix of one sample: col[(c,r,s)][(p,q)] is the input
// pixel that kernel tap (r,s) sees at output (p,q), or 0 in the padding. Row j of the matrix
// starts at col + j*ld (ld >= P*Q: the samples of a chunk sit side by side).
void im2col_channel(const float* x, const ConvGeometry& g, std::int64_t ch, float* col, std::int64_t ld) {
  const auto& prm = g.prm;
  const float* plane = x + ch * g.h * g.w;
  for (std::int64_t r = 0; r < g.r; ++r) {
    for (std::int64_t s = 0; s < g.s; ++s) {
      float* row = col + ((ch * g.r + r) * g.s + s) * ld;
      const std::int64_t off_w = s * prm.dilation_w - prm.pad_w;
      const Span span = valid_span(g.q, g.w, prm.stride_w, off_w);
      for (std::int64_t op = 0; op < g.p; ++op) {
        const std::int64_t ih = op * prm.stride_h - prm.pad_h + r * prm.dilation_h;
        float* out = row + op * g.q;
        if (ih < 0 || ih >= g.h) {
          std::fill(out, out + g.q, 0.0f);
          continue;
        }
        const float* in = plane + ih * g.w + off_w;
        std::fill(out, out + span.lo, 0.0f);
        if (prm.stride_w == 1) {
          std::copy(in + span.lo, in + span.hi, out + span.lo);
        } else {
          const std::int64_t st = prm.stride_w;
          for (std::int64_t oq = span.lo; oq < span.hi; ++oq) out[oq] = in[oq * st];
        }
        std::fill(out + span.hi, out + g.q, 0.0f);
      }
    }
  }
}

// The adjoint of im2col for one sample: each column entry is added back onto the pixel it was
// read from. x is overwritten.
void col2im(const float* col, std::int64_t ld, const ConvGeometry& g, float* x) {
  const auto& prm = g.prm;
  std::fill(x, x + g.c * g.h * g.w, 0.0f);
  for (std::int64_t ch = 0; ch < g.c; ++ch) {
    float* plane = x + ch * g.h * g.w;
    for (std::int64_t r = 0; r < g.r; ++r) {
      for (std::int64_t s = 0; s < g.s; ++s) {
        const float* row = col + ((ch * g.r + r) * g.s + s) * ld;
        const std::int64_t off_w = s * prm.dilation_w - prm.pad_w;
        const Span span = valid_span(g.q, g.w, prm.stride_w, off_w);
        for (std::int64_t op = 0; op < g.p; ++op) {
          const std::int64_t ih = op * prm.stride_h - prm.pad_h + r * prm.dilation_h;
          if (ih < 0 || ih >= g.h) continue;
          const float* in = row + op * g.q;
          float* out = plane + ih * g.w + off_w;
          if (prm.stride_w == 1) {
#pragma omp simd
            for (std::int64_t oq = span.lo; oq < span.hi; ++oq) out[oq] += in[oq];
          } else {
            const std::int64_t st = prm.stride_w;
            for (std::int64_t oq = span.lo; oq < span.hi; ++oq) out[oq * st] += in[oq];
          }
        }
      }
    }
  }
}

// The filter gradient sums over samples in batches (not to be confused with channel groups): a
// batch's column matrices sit side by side in one [C*R*S, batch*P*Q] matrix (about 4 MiB, so it
// stays in cache), and at least 8 batches keep the threads busy. The batch size depends only on
// the shapes, never on the thread count, so the sum runs in a fixed order.
constexpr std::int64_t kColumnBudgetBytes = 4ll << 20;
constexpr std::int64_t kMinBatches = 8;

std::int64_t batch_size(const ConvGeometry& g) {
  const std::int64_t per_sample = std::max<std::int64_t>(g.col_size() * static_cast<std::int64_t>(sizeof(float)), 1);
  const std::int64_t by_batches = std::max<std::int64_t>((g.n + kMinBatches - 1) / kMinBatches, 1);
  return std::clamp<std::int64_t>(kColumnBudgetBytes / per_sample, 1, by_batches);
}

int loop_threads(std::int64_t elements) { return elements >= cpu::kParallelThreshold ? omp_get_max_threads() : 1; }

// Runs body(n, column buffer) for every sample: OpenMP over the samples, each thread with its own
// column buffer from the pool and a single-threaded GEMM (forward and backward-data share this).
template <class Body>
void for_each_sample_with_columns(Context& ctx, const ConvGeometry& g, const Body& body) {
  const int threads = loop_threads(g.n * g.col_size());
  Workspace col(ctx, static_cast<std::size_t>(threads * g.col_size()) * sizeof(float));
  const cpu::SingleThreadedBlas blas_on_loop_threads(threads > 1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t n = 0; n < g.n; ++n) body(n, static_cast<float*>(col.data()) + omp_get_thread_num() * g.col_size());
}

}  // namespace

// Weights held constant skip their per-call reorder into oneDNN's layout (im2col reads them as
// they are, so it keeps nothing).
// Held bf16 weights are reordered once too (the copies are keyed by address and layout, dtype
// included); f16 weights, widened on every call, keep nothing.
ConstantHold CpuBackend::do_hold_constant(Context& ctx, const Tensor& t) {
  return cpu::hold_constant_weights(ctx.cpu_conv(), t.raw(), t.nbytes());
}

void CpuBackend::do_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  const auto g = geometry(x.shape(), w.shape(), y.shape(), p);
  if (y.numel() == 0) return;
  if (g.rows() == 0) {                    // no input channels: an empty sum, and BLAS rejects a zero inner dimension
    std::memset(y.raw(), 0, y.nbytes());  // +0 in every float dtype
    return;
  }
  if (cpu::one_channel_conv_forward(x, w, Tensor(), p, false, y)) return;
  if (cpu::onednn_conv_enabled(ctx.cpu_conv()) && cpu::onednn_conv2d_forward(ctx, x, w, p, y)) return;
  if (any_channels_last({&x, &y})) {  // oneDNN did not take the call: the NCHW code below
    on_nchw_copies(ctx, [&](NchwRoute& r) { do_conv2d_forward(ctx, r.in(x), w, p, r.out(y)); });
    return;
  }
  if (x.dtype() != DType::f32) {
    // No native kernel for this dtype here: f32 copies (exact), the f32 path, one rounding of y.
    cpu::F32Copy wx(ctx, x, true), ww(ctx, w, true), wy(ctx, y, false);
    do_conv2d_forward(ctx, wx.tensor(), ww.tensor(), p, wy.tensor());
    cpu::narrow(wy.data(), y);
    return;
  }
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  float* py = y.data<float>();
  // Each sample is an independent [K, C*R*S] x [C*R*S, P*Q] product written straight into y (per
  // group: [K/G, C/G*R*S] x [C/G*R*S, P*Q]): OpenMP over the samples, each thread with its own
  // column buffer and single-threaded GEMMs.
  const std::int64_t pq = g.cols(), kg = g.group_k(), rows = g.group_rows();
  for_each_sample_with_columns(ctx, g, [&](std::int64_t n, float* pcol) {
    for (std::int64_t ch = 0; ch < g.c; ++ch) im2col_channel(px + n * g.c * g.h * g.w, g, ch, pcol, pq);
    for (std::int64_t gi = 0; gi < g.groups(); ++gi)
      sgemm(false, false, kg, pq, rows, pw + gi * g.group_weights(), pcol + gi * rows * pq, 0.0f,
            py + (n * g.k + gi * kg) * pq);
  });
}

void CpuBackend::do_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                                         Tensor& dx) {
  const auto g = geometry(dx.shape(), w.shape(), dy.shape(), p);
  if (dx.numel() == 0) return;
  if (g.k == 0) {  // no output channels: nothing flows back
    std::memset(dx.raw(), 0, dx.nbytes());
    return;
  }
  if (cpu::onednn_conv_enabled(ctx.cpu_conv()) && cpu::onednn_conv2d_backward_data(ctx, dy, w, p, dx)) return;
  if (any_channels_last({&dy, &dx})) {
    on_nchw_copies(ctx, [&](NchwRoute& r) { do_conv2d_backward_data(ctx, r.in(dy), w, p, r.out(dx)); });
    return;
  }
  if (dy.dtype() != DType::f32) {
    cpu::F32Copy wdy(ctx, dy, true), ww(ctx, w, true), wdx(ctx, dx, false);
    do_conv2d_backward_data(ctx, wdy.tensor(), ww.tensor(), p, wdx.tensor());
    cpu::narrow(wdx.data(), dx);
    return;
  }
  const float* pdy = dy.data<float>();
  const float* pw = w.data<float>();
  float* pdx = dx.data<float>();
  // Per sample: col [C*R*S, P*Q] = wᵀ [C*R*S, K] * dy[n] [K, P*Q] (per group, its rows from its
  // weights and output channels), then scattered back onto the image. OpenMP over the samples, a
  // column buffer and single-threaded GEMMs per thread.
  const std::int64_t pq = g.cols(), kg = g.group_k(), rows = g.group_rows();
  for_each_sample_with_columns(ctx, g, [&](std::int64_t n, float* pcol) {
    for (std::int64_t gi = 0; gi < g.groups(); ++gi)
      sgemm(true, false, rows, pq, kg, pw + gi * g.group_weights(), pdy + (n * g.k + gi * kg) * pq, 0.0f,
            pcol + gi * rows * pq);
    col2im(pcol, pq, g, pdx + n * g.c * g.h * g.w);
  });
}

void CpuBackend::do_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p,
                                           Tensor& dw, bool accumulate) {
  const auto g = geometry(x.shape(), dw.shape(), dy.shape(), p);
  if (dy.numel() == 0 || g.rows() == 0) {  // no products (dw is zero, or empty)
    if (!accumulate) std::memset(dw.raw(), 0, dw.nbytes());
    return;
  }
  if (cpu::onednn_conv_enabled(ctx.cpu_conv()) && cpu::onednn_conv2d_backward_filter(ctx, x, dy, p, dw, accumulate))
    return;
  if (any_channels_last({&x, &dy})) {
    on_nchw_copies(ctx, [&](NchwRoute& r) { do_conv2d_backward_filter(ctx, r.in(x), r.in(dy), p, dw, accumulate); });
    return;
  }
  if (x.dtype() != DType::f32 || dw.dtype() != DType::f32) {
    // A half dw accumulates in f32 too (its old value widened): one rounding of the sum.
    cpu::F32Copy wx(ctx, x, true), wdy(ctx, dy, true);
    if (dw.dtype() == DType::f32) {
      do_conv2d_backward_filter(ctx, wx.tensor(), wdy.tensor(), p, dw, accumulate);
      return;
    }
    cpu::F32Copy wdw(ctx, dw, accumulate);
    do_conv2d_backward_filter(ctx, wx.tensor(), wdy.tensor(), p, wdw.tensor(), accumulate);
    cpu::narrow(wdw.data(), dw);
    return;
  }
  float* pdw = dw.data<float>();
  if (!accumulate) std::fill(pdw, pdw + dw.numel(), 0.0f);
  const float* px = x.data<float>();
  const float* pdy = dy.data<float>();
  // The samples are split into batches whose size depends only on the shapes. A batch's column
  // matrices sit side by side in one [C*R*S, batch*P*Q] matrix, so its share of dw is ONE GEMM per
  // channel group (single-threaded, OpenMP over the batches); the partial sums are then added in
  // batch order. The result never depends on the thread count.
  const std::int64_t batch = batch_size(g), batches = (g.n + batch - 1) / batch, pq = g.cols();
  const std::int64_t dw_size = g.k * g.group_rows();
  const int threads = static_cast<int>(std::min<std::int64_t>(loop_threads(g.n * g.col_size()), batches));
  const std::int64_t per_thread = batch * (g.col_size() + g.k * pq);
  Workspace scratch(ctx, static_cast<std::size_t>(threads * per_thread) * sizeof(float));
  Workspace partial(ctx, static_cast<std::size_t>(batches * dw_size) * sizeof(float));
  float* parts = static_cast<float*>(partial.data());
  {
    const cpu::SingleThreadedBlas blas_on_loop_threads(threads > 1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (std::int64_t bi = 0; bi < batches; ++bi) {
      const std::int64_t n0 = bi * batch, count = std::min(batch, g.n - n0);
      float* pcol = static_cast<float*>(scratch.data()) + omp_get_thread_num() * per_thread;
      float* packed = pcol + batch * g.col_size();
      const std::int64_t ld = count * pq;
      for (std::int64_t i = 0; i < count; ++i) {
        const float* xn = px + (n0 + i) * g.c * g.h * g.w;
        for (std::int64_t ch = 0; ch < g.c; ++ch) im2col_channel(xn, g, ch, pcol + i * pq, ld);
        for (std::int64_t k = 0; k < g.k; ++k) {
          const float* src = pdy + ((n0 + i) * g.k + k) * pq;
          std::copy(src, src + pq, packed + k * ld + i * pq);
        }
      }
      // partial[bi] [K, C/G*R*S] = dy [K, count*P*Q] * colᵀ [count*P*Q, C/G*R*S], one GEMM per
      // channel group over its output channels and its rows of the column matrix.
      const std::int64_t kg = g.group_k(), rows = g.group_rows();
      for (std::int64_t cg = 0; cg < g.groups(); ++cg)
        sgemm(false, true, kg, rows, ld, packed + cg * kg * ld, pcol + cg * rows * ld, 0.0f,
              parts + bi * dw_size + cg * g.group_weights());
    }
  }
  const int sum_threads = loop_threads(batches * dw_size);
#pragma omp parallel for schedule(static) num_threads(sum_threads) if (sum_threads > 1)
  for (std::int64_t j = 0; j < dw_size; ++j) {
    float s = pdw[j];
    for (std::int64_t bi = 0; bi < batches; ++bi) s += parts[bi * dw_size + j];
    pdw[j] = s;
  }
}

}  // namespace cudl
