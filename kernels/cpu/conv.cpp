// 2-D convolution on the CPU: im2col + OpenBLAS GEMM (col2im for the data gradient), OpenMP over
// the batch with one column buffer per thread.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <optional>

#include "engine/check.hpp"
#include "engine/context.hpp"
#include "kernels/cpu/cpu_args.hpp"
#include "kernels/cpu/cpu_backend.hpp"

namespace cudl {
namespace {

void expect_cpu_f32(std::string_view op, std::string_view name, const Tensor& t) {
  check::defined(op, name, t);
  check::dtype_is(op, name, t, DType::f32);
  check::on_device(op, name, t, Device::cpu());
}

// Every size the loops need, taken once from x [N,C,H,W], w [K,C,R,S], y [N,K,P,Q].
struct ConvGeometry {
  std::int64_t n, c, h, w, k, r, s, p, q;
  Conv2dParams prm;
  std::int64_t rows() const { return c * r * s; }  // of the column matrix [C*R*S, P*Q]
  std::int64_t cols() const { return p * q; }
  std::int64_t col_size() const { return rows() * cols(); }
  // A 1x1, stride-1, unpadded convolution reads x[n] as [C, H*W] directly: no column matrix.
  bool is_pointwise() const {
    return r == 1 && s == 1 && prm.stride_h == 1 && prm.stride_w == 1 && prm.pad_h == 0 && prm.pad_w == 0;
  }
};

ConvGeometry geometry(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p) {
  return {x[0], x[1], x[2], x[3], w[0], w[2], w[3], y[2], y[3], p};
}

// Below this many multiply-adds a parallel region costs more than it saves (thread wake-up on a
// busy machine is milliseconds); tiny convolutions run on the calling thread.
constexpr std::int64_t kParallelWork = 1 << 18;

int threads_for(std::int64_t work) { return work >= kParallelWork ? omp_get_max_threads() : 1; }

void sgemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const float* a, const float* b, float beta,
           float* c) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a, static_cast<blasint>(ta ? m : k), b,
              static_cast<blasint>(tb ? k : n), beta, c, static_cast<blasint>(n));
}

// Rows c*R*S .. (c+1)*R*S of the column matrix of one sample: col[(c,r,s)][(p,q)] is the input
// pixel that kernel tap (r,s) sees at output (p,q), or 0 in the padding.
void im2col_channel(const float* x, const ConvGeometry& g, std::int64_t ch, float* col) {
  const auto& prm = g.prm;
  const float* plane = x + ch * g.h * g.w;
  for (std::int64_t r = 0; r < g.r; ++r) {
    for (std::int64_t s = 0; s < g.s; ++s) {
      float* row = col + ((ch * g.r + r) * g.s + s) * g.cols();
      for (std::int64_t op = 0; op < g.p; ++op) {
        const std::int64_t ih = op * prm.stride_h - prm.pad_h + r * prm.dilation_h;
        float* out = row + op * g.q;
        if (ih < 0 || ih >= g.h) {
          std::fill(out, out + g.q, 0.0f);
          continue;
        }
        const float* in = plane + ih * g.w;
        for (std::int64_t oq = 0; oq < g.q; ++oq) {
          const std::int64_t iw = oq * prm.stride_w - prm.pad_w + s * prm.dilation_w;
          out[oq] = (iw >= 0 && iw < g.w) ? in[iw] : 0.0f;
        }
      }
    }
  }
}

void im2col(const float* x, const ConvGeometry& g, float* col) {
  for (std::int64_t ch = 0; ch < g.c; ++ch) im2col_channel(x, g, ch, col);
}

// The adjoint of im2col: each column entry is added back onto the pixel it was read from.
void col2im(const float* col, const ConvGeometry& g, float* x) {
  const auto& prm = g.prm;
  std::fill(x, x + g.c * g.h * g.w, 0.0f);
  for (std::int64_t ch = 0; ch < g.c; ++ch) {
    float* plane = x + ch * g.h * g.w;
    for (std::int64_t r = 0; r < g.r; ++r) {
      for (std::int64_t s = 0; s < g.s; ++s) {
        const float* row = col + ((ch * g.r + r) * g.s + s) * g.cols();
        for (std::int64_t op = 0; op < g.p; ++op) {
          const std::int64_t ih = op * prm.stride_h - prm.pad_h + r * prm.dilation_h;
          if (ih < 0 || ih >= g.h) continue;
          const float* in = row + op * g.q;
          float* out = plane + ih * g.w;
          for (std::int64_t oq = 0; oq < g.q; ++oq) {
            const std::int64_t iw = oq * prm.stride_w - prm.pad_w + s * prm.dilation_w;
            if (iw >= 0 && iw < g.w) out[iw] += in[oq];
          }
        }
      }
    }
  }
}

// Column buffers from the context's pool, one per thread (or `count` of them).
class ColumnBuffers {
 public:
  ColumnBuffers(Context& ctx, const ConvGeometry& g, std::int64_t count) : size_(g.col_size()) {
    if (!g.is_pointwise() && size_ > 0) ws_.emplace(ctx, static_cast<std::size_t>(count * size_) * sizeof(float));
  }
  float* get(std::int64_t i) const { return static_cast<float*>(ws_->data()) + i * size_; }

 private:
  std::int64_t size_;
  std::optional<Workspace> ws_;
};

void check_params(std::string_view op, const Tensor& x, const Tensor& w, const Conv2dParams& p) {
  CUDL_CHECK(p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 && p.dilation_w > 0 && p.pad_h >= 0 && p.pad_w >= 0,
             "{}: stride and dilation must be positive and padding non-negative (x={}, w={})", op, x.shape(),
             w.shape());
}

}  // namespace

void CpuBackend::conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  constexpr std::string_view op = "conv2d_forward";
  expect_cpu_f32(op, "x", x);
  expect_cpu_f32(op, "w", w);
  expect_cpu_f32(op, "y", y);
  check_params(op, x, w, p);
  check::shape_is(op, "y", y, conv2d_output_shape(x.shape(), w.shape(), p));
  const auto g = geometry(x.shape(), w.shape(), y.shape(), p);
  if (y.numel() == 0) return;
  if (g.rows() == 0) {  // no input channels: an empty sum, and BLAS rejects a zero inner dimension
    std::fill(y.data<float>(), y.data<float>() + y.numel(), 0.0f);
    return;
  }
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  float* py = y.data<float>();
  const int threads = threads_for(g.n * g.k * g.rows() * g.cols());
  ColumnBuffers cols(ctx, g, threads);
  const cpu::SingleThreadedBlas blas_on_loop_threads(threads > 1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t n = 0; n < g.n; ++n) {
    const float* xn = px + n * g.c * g.h * g.w;
    const float* col = xn;
    if (!g.is_pointwise()) {
      float* buf = cols.get(omp_get_thread_num());
      im2col(xn, g, buf);
      col = buf;
    }
    // y[n] [K, P*Q] = w [K, C*R*S] * col [C*R*S, P*Q]
    sgemm(false, false, g.k, g.cols(), g.rows(), pw, col, 0.0f, py + n * g.k * g.cols());
  }
}

void CpuBackend::conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                                      Tensor& dx) {
  constexpr std::string_view op = "conv2d_backward_data";
  expect_cpu_f32(op, "dy", dy);
  expect_cpu_f32(op, "w", w);
  expect_cpu_f32(op, "dx", dx);
  check::rank_is(op, "dx", dx, 4);
  check::rank_is(op, "w", w, 4);
  check_params(op, dx, w, p);
  CUDL_CHECK(dx.dim(1) == w.dim(1), "{}: dx={} has {} channels but w={} expects {}", op, dx.shape(), dx.dim(1),
             w.shape(), w.dim(1));
  const Shape expected = conv2d_output_shape(dx.shape(), w.shape(), p);
  CUDL_CHECK(dy.shape() == expected, "{}: dy has shape {}, expected {} for dx={} and w={}", op, dy.shape(), expected,
             dx.shape(), w.shape());
  const auto g = geometry(dx.shape(), w.shape(), dy.shape(), p);
  if (dx.numel() == 0) return;
  if (g.k == 0) {  // no output channels: nothing flows back
    std::fill(dx.data<float>(), dx.data<float>() + dx.numel(), 0.0f);
    return;
  }
  const float* pdy = dy.data<float>();
  const float* pw = w.data<float>();
  float* pdx = dx.data<float>();
  const int threads = threads_for(g.n * g.k * g.rows() * g.cols());
  ColumnBuffers cols(ctx, g, threads);
  const cpu::SingleThreadedBlas blas_on_loop_threads(threads > 1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t n = 0; n < g.n; ++n) {
    const float* dyn = pdy + n * g.k * g.cols();
    float* dxn = pdx + n * g.c * g.h * g.w;
    if (g.is_pointwise()) {
      sgemm(true, false, g.rows(), g.cols(), g.k, pw, dyn, 0.0f, dxn);
      continue;
    }
    // col [C*R*S, P*Q] = wᵀ [C*R*S, K] * dy[n] [K, P*Q], then scattered back onto the image.
    float* buf = cols.get(omp_get_thread_num());
    sgemm(true, false, g.rows(), g.cols(), g.k, pw, dyn, 0.0f, buf);
    col2im(buf, g, dxn);
  }
}

void CpuBackend::conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p,
                                        Tensor& dw, bool accumulate) {
  constexpr std::string_view op = "conv2d_backward_filter";
  expect_cpu_f32(op, "x", x);
  expect_cpu_f32(op, "dy", dy);
  expect_cpu_f32(op, "dw", dw);
  check::rank_is(op, "x", x, 4);
  check::rank_is(op, "dw", dw, 4);
  check_params(op, x, dw, p);
  CUDL_CHECK(x.dim(1) == dw.dim(1), "{}: x={} has {} channels but dw={} expects {}", op, x.shape(), x.dim(1),
             dw.shape(), dw.dim(1));
  const Shape expected = conv2d_output_shape(x.shape(), dw.shape(), p);
  CUDL_CHECK(dy.shape() == expected, "{}: dy has shape {}, expected {} for x={} and dw={}", op, dy.shape(), expected,
             x.shape(), dw.shape());
  const auto g = geometry(x.shape(), dw.shape(), dy.shape(), p);
  float* pdw = dw.data<float>();
  if (!accumulate) std::fill(pdw, pdw + dw.numel(), 0.0f);
  if (dy.numel() == 0) return;
  const float* px = x.data<float>();
  const float* pdy = dy.data<float>();
  // The column matrices of a chunk of samples are built in parallel; the per-sample products are
  // then added into dw one sample after another, so the sum's order (and result) never depends
  // on the thread count.
  const std::int64_t chunk = std::min<std::int64_t>(threads_for(g.n * g.k * g.rows() * g.cols()), g.n);
  ColumnBuffers cols(ctx, g, chunk);
  for (std::int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const std::int64_t count = std::min(chunk, g.n - n0);
    if (!g.is_pointwise()) {
#pragma omp parallel for collapse(2) schedule(static) if (chunk > 1)
      for (std::int64_t i = 0; i < count; ++i)
        for (std::int64_t ch = 0; ch < g.c; ++ch) im2col_channel(px + (n0 + i) * g.c * g.h * g.w, g, ch, cols.get(i));
    }
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t n = n0 + i;
      const float* col = g.is_pointwise() ? px + n * g.c * g.h * g.w : cols.get(i);
      // dw [K, C*R*S] += dy[n] [K, P*Q] * colᵀ [P*Q, C*R*S]
      sgemm(false, true, g.k, g.rows(), g.cols(), pdy + n * g.k * g.cols(), col, 1.0f, pdw);
    }
  }
}

}  // namespace cudl
