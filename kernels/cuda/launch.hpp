#pragma once
// The launchers of our own CUDA kernels: the contract between each kernels/cuda/<family>.cu (the
// kernels and their launchers) and its twin kernels/cuda/<family>.cpp (the CudaBackend::do_<op>
// methods that call them). One header rather than one per family: the .cpp files, cuDNN's
// conv2d.cpp (launch_fill) and tests/test_cuda_errors.cpp all include this one name, and it is
// the single place that lists every kernel-backed op.
//
// No fmt here (its consteval format strings do not compile under nvcc): launchers take raw
// pointers, element counts and the engine's enums (engine/op_kinds.hpp). Their arguments were
// checked by the Backend front; launchers trust them. Each launcher enqueues on `stream`, never
// synchronises, and checks its launches under the kernel's name (kernels/cuda/launch.cuh).
// Every formula is the CPU twin's (kernels/cpu/<family>.cpp).
//
// Dtypes (engine/backend.hpp's rules): a launcher whose tensors may be f32, bf16 or f16 takes them
// as void pointers plus their FloatType and switches on it once, on the host, to a kernel templated
// on the element type (kernels/cuda/float_types.cuh), which widens to float, computes and
// accumulates in float (double where the f32 kernel does) and rounds each stored value once. f32
// results are bit-identical to the f32-only kernels these replaced. Per-channel vectors, scalar
// results and the f32-only families keep float pointers.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cudl/engine/op_kinds.hpp"

#define CUDL_STATUS_CHECK(call) ::cudl::cuda_detail::check_status((call), #call, __FILE__, __LINE__)

namespace cudl::cuda_detail {

// Throws cudl::Error naming the kernel if its launch failed (bad configuration, no device...).
// Defined in kernels/cuda/launch_check.cpp; kernels/cuda/launch.cuh calls it after every launch.
void check_launch(const char* kernel_name);
// Throws cudl::Error (OutOfMemoryError for cudaErrorMemoryAllocation) unless status is success;
// for runtime calls made inside .cu files, through CUDL_STATUS_CHECK.
void check_status(cudaError_t status, const char* call, const char* file, int line);

// Scratch of the two-pass reductions (kernels/cuda/reduce.cuh): at most kPartials per-block partial
// results of up to 16 bytes each. The caller allocates it (a cudl::Workspace) and passes it as
// `scratch`. The partial count depends only on the element count, and the combining order is
// fixed, so these reductions give the same bits run to run.
inline constexpr int kPartials = 1024;
inline constexpr std::size_t kReduceScratchBytes = static_cast<std::size_t>(kPartials) * 16;

// The float dtypes a templated kernel instantiates for (engine/dtype.hpp's f32, bf16, f16), as a
// plain enum: nvcc-compiled code does not include the engine's headers with fmt.
enum class FloatType { f32, bf16, f16 };

// ---- cast.cu: dst = src rounded to `to` (nearest even); from != to ----
void launch_cast(const void* src, FloatType from, void* dst, FloatType to, std::int64_t n, cudaStream_t stream);
// dst[i] += src[i] (widened exactly, one float add): folds a half-precision partial result (cuDNN's
// filter gradient) into an f32 tensor.
void launch_cast_add(const void* src, FloatType from, float* dst, std::int64_t n, cudaStream_t stream);
// Per sample, src [rows, cols] -> dst [cols, rows], elements of 2 or 4 bytes (any dtype): the
// NCHW <-> channels_last copy (rows, cols = C, H*W one way and H*W, C the other).
void launch_transpose(const void* src, void* dst, std::size_t element_bytes, std::int64_t samples, std::int64_t rows,
                      std::int64_t cols, cudaStream_t stream);

// A tensor seen as [samples, channels, plane]: dim 0, dim 1 and the rest flattened ([N, C] has
// plane size 1, [N, C, H, W] plane size H*W). The size is < 2^31 (the .cpp files check it with
// to_int), so offsets inside a plane are 32-bit; kernels launched over Planes put the plane on the
// grid's y (channel) and z (sample) dimensions and never divide a 64-bit index (launch.cuh).
struct Planes {
  std::int64_t samples = 0, channels = 0;
  int size = 1;
};

// ---- activations.cu ----
void launch_activation_forward(Activation a, float alpha, const void* x, void* y, FloatType t, std::int64_t n,
                               cudaStream_t stream);
// `saved` is x for ReLU-like activations and y for sigmoid/tanh (what the derivative reads).
void launch_activation_backward(Activation a, float alpha, const void* saved, const void* dy, void* dx, FloatType t,
                                std::int64_t n, cudaStream_t stream);

// ---- dropout.cu ----
// mask[i] = u >= p ? keep_scale : 0 with u = philox::grouped_uniform(offset + i, seed); y = x * mask
// (x, y and mask one dtype; y formed from the unrounded keep_scale, as PyTorch's half dropout). With a
// device `counter` (a u64 as two 32-bit words, low first; null for none) the offset is counter +
// offset, read by the kernel, and the counter is then advanced by `advance`.
void launch_dropout(const void* x, void* y, void* mask, FloatType t, std::int64_t n, float p, float keep_scale,
                    std::uint64_t seed, std::uint64_t offset, std::uint32_t* counter, std::uint64_t advance,
                    cudaStream_t stream);
void launch_mul(const void* a, const void* b, void* out, FloatType t, std::int64_t n, cudaStream_t stream);

// ---- elementwise.cu ----
void launch_fill(void* x, FloatType t, std::int64_t n, float value, cudaStream_t stream);
// y += alpha * x, the product rounded before the sum as on the CPU (no FMA).
void launch_axpy(float alpha, const void* x, void* y, FloatType t, std::int64_t n, cudaStream_t stream);
void launch_scale(void* x, FloatType t, float alpha, std::int64_t n, cudaStream_t stream);
// x = low if x < low, high if x > high; NaN stays NaN.
void launch_clamp(float* x, std::int64_t n, float low, float high, cudaStream_t stream);
void launch_fill_uniform(float* x, std::int64_t n, float low, float high, std::uint64_t seed, std::uint64_t offset,
                         cudaStream_t stream);
void launch_fill_normal(float* x, std::int64_t n, float mean, float stddev, std::uint64_t seed, std::uint64_t offset,
                        cudaStream_t stream);

// ---- gemm.cu: the bias of dense and convolution layers (the GEMMs are cuBLAS's) ----
// y[n, c, p] += bias[c].
void launch_bias_add(void* y, FloatType t, const float* bias, const Planes& s, cudaStream_t stream);
// The same for a channels_last y, seen as [rows, channels] with rows = N*H*W: y[r, c] += bias[c].
void launch_bias_add_channels_last(void* y, FloatType t, const float* bias, std::int64_t rows, std::int64_t channels,
                                   cudaStream_t stream);
// dbias[c] (+)= Σ_{n,p} dy[n, c, p] in double, deterministic: pass 1 sums a fixed number of chunks
// of each channel (enough blocks to fill the GPU), pass 2 adds a channel's chunks in order and
// forms dbias[c] + sum in double, like the CPU. Scratch: bias_grad_scratch_bytes(s).
std::size_t bias_grad_scratch_bytes(const Planes& s);
void launch_bias_grad(const void* dy, FloatType t, float* dbias, const Planes& s, bool accumulate, void* scratch,
                      cudaStream_t stream);
// The same for a channels_last dy seen as [rows, channels] (rows = N*H*W), in double and as
// deterministic. Scratch: bias_grad_channels_last_scratch_bytes(rows, channels).
std::size_t bias_grad_channels_last_scratch_bytes(std::int64_t rows, std::int64_t channels);
void launch_bias_grad_channels_last(const void* dy, FloatType t, float* dbias, std::int64_t rows, std::int64_t channels,
                                    bool accumulate, void* scratch, cudaStream_t stream);
// The half-precision Gram backward's operand (kernels/cublas/gram.cpp): s[n] = dg[n] + dg[n]ᵀ,
// dg f32 [samples, C, C], summed in float and rounded once to s's type t.
void launch_gram_symmetrize(const float* dg, void* s, FloatType t, std::int64_t samples, std::int64_t channels,
                            cudaStream_t stream);

// ---- normalization.cu: the per-channel affine map, and batch norm + ReLU (plain batch norm is cuDNN's) ----
// y[n, c, p] = x[n, c, p] * scale[c] + shift[c] (y may be x).
void launch_channel_affine(const void* x, const float* scale, const float* shift, void* y, FloatType t, const Planes& s,
                           cudaStream_t stream);
// dx[n, c, p] = dy[n, c, p] * scale[c].
void launch_channel_scale(const void* dy, const float* scale, void* dx, FloatType t, const Planes& s,
                          cudaStream_t stream);
// Batch norm with batch statistics then ReLU, y written once (Backend::batchnorm_relu_forward_train).
void launch_batchnorm_relu_forward_train(const void* x, const float* gamma, const float* beta, float eps,
                                         float momentum, float* running_mean, float* running_var, void* y,
                                         float* save_mean, float* save_invstd, FloatType t, const Planes& s,
                                         cudaStream_t stream);
// Its gradient (Backend::batchnorm_relu_backward), dgamma and dbeta accumulated; `coef` is f32
// scratch of 3 per channel (batchnorm_relu_coef_count).
inline std::int64_t batchnorm_relu_coef_count(const Planes& s) { return 3 * s.channels; }
void launch_batchnorm_relu_backward(const void* x, const void* y, const void* dy, const float* gamma,
                                    const float* save_mean, const float* save_invstd, void* dx, float* dgamma,
                                    float* dbeta, float* coef, FloatType t, const Planes& s, cudaStream_t stream);

// ---- optimizers.cu ----
// PyTorch SGD in the CPU's form; momentum_buf is read only when momentum > 0 (else it may be null).
// `scalars`, when not null, is a device f32 [kOptimizerScalars] (engine/backend.hpp's OptimizerScalar)
// whose values replace the per-step arguments (lr; shrink, step_size, inv_sqrt_bc2), read by the kernel.
void launch_sgd_step(float* param, const float* grad, float* momentum_buf, std::int64_t n, float lr, float momentum,
                     float dampening, float weight_decay, bool nesterov, const float* scalars, cudaStream_t stream);
// Adam / AdamW in the CPU's form, with the per-step constants computed by the caller as the CPU
// does: l2 = weight decay added to the gradient (0 for AdamW), shrink = 1 - lr * weight decay for
// AdamW (1 for Adam), step_size = lr / (1 - beta1^t), inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t).
void launch_adam_step(float* param, const float* grad, float* m, float* v, std::int64_t n, float beta1, float beta2,
                      float eps, float l2, float shrink, float step_size, float inv_sqrt_bc2, const float* scalars,
                      cudaStream_t stream);

// ---- pooling.cu; x [N, C, H, W], y [N, C, OH, OW]; H*W and OH*OW are < 2^31 ----
struct PoolGeometry {
  std::int64_t samples = 0, channels = 0;
  int height = 0, width = 0, out_height = 0, out_width = 0;
  int kernel_h = 0, kernel_w = 0, stride_h = 0, stride_w = 0, pad_h = 0, pad_w = 0;
};
// The CPU's rule: row-major window scan, the first in-bounds pixel is the start, a strictly greater
// value or the first NaN replaces it, and a NaN stays. argmax is the winner's h*W+w in its plane.
void launch_maxpool_forward(const void* x, void* y, std::int32_t* argmax, FloatType t, const PoolGeometry& g,
                            cudaStream_t stream);
// Gather formulation (deterministic, no atomics): each input pixel sums dy of the windows whose
// argmax points at it, in the same order as the CPU's scatter loop. An argmax entry outside its
// plane (which no pixel would gather) sets DeviceFault::argmax_out_of_range in *fault, where the
// CPU throws.
void launch_maxpool_backward(const void* dy, const std::int32_t* argmax, void* dx, FloatType t, const PoolGeometry& g,
                             int* fault, cudaStream_t stream);
void launch_avgpool_forward(const void* x, void* y, FloatType t, const PoolGeometry& g, cudaStream_t stream);
void launch_avgpool_backward(const void* dy, void* dx, FloatType t, const PoolGeometry& g, cudaStream_t stream);

// ---- reductions.cu; the one-value results take kReduceScratchBytes of scratch, and sums run in
// double and are rounded to float once ----
// out[0] = Σ x / divisor (divisor 1 for sum, n for mean).
void launch_sum(const void* x, FloatType t, std::int64_t n, double divisor, float* out, void* scratch,
                cudaStream_t stream);
// out[0] = the CPU's max: -inf, then each element in index order replaces it when strictly
// greater, so a NaN is never taken (all NaN gives -inf) and of equal maxima (+0, -0) the first
// stays; the same value whatever the reduction order.
void launch_max(const void* x, FloatType t, std::int64_t n, float* out, void* scratch, cudaStream_t stream);
// out[0] = Σ a[i] * b[i].
void launch_dot(const float* a, const float* b, std::int64_t n, float* out, void* scratch, cudaStream_t stream);
// out[r] = the CPU's argmax of row r: the first column holding the largest non-NaN value (strictly
// greater replaces, so the first of equal maxima stays); a NaN never wins, not even in column 0;
// a row of NaN only gives column 0. Needs cols > 0.
void launch_argmax_rows(const void* x, FloatType t, std::int32_t* out, std::int64_t rows, std::int64_t cols,
                        cudaStream_t stream);
// correct[r] = argmax(row r) == labels[r] (argmax as above); out[0] = mean(correct). A label
// outside [0, cols) counts as wrong and sets *fault to DeviceFault::label_out_of_range. `correct`
// is rows floats of scratch.
void launch_accuracy(const void* logits, FloatType t, const std::int32_t* labels, float* correct, float* out,
                     std::int64_t rows, std::int64_t cols, int* fault, cudaStream_t stream);

// ---- topk.cu: the k best columns of each row of x [rows, cols], rows * cols < 2^31 ----
// Scratch for launch_top_k: two key buffers of rows * cols 64-bit keys and CUB's sort storage.
std::size_t top_k_scratch_bytes(std::int64_t rows, std::int64_t cols);
// indices[r, j] (i32 [rows, k]) the j-th best column of row r by the CPU's order (kernels/cpu/topk.cpp:
// larger first, equal values by lower column, NaN last); values[r, j] = x[r, indices[r, j]] widened,
// unless values is null.
void launch_top_k(const void* x, FloatType t, std::int64_t rows, std::int64_t cols, std::int64_t k,
                  std::int32_t* indices, float* values, void* scratch, std::size_t scratch_bytes, cudaStream_t stream);

// ---- histogram.cu: histogram matching by sorting, rows of source [rows, n] and reference [rows, m],
// n and m < 2^31 ----
// Scratch for launch_match_histograms: four key buffers (source's and reference's, in and out) and
// CUB's sort storage.
std::size_t match_histograms_scratch_bytes(std::int64_t rows, std::int64_t n, std::int64_t m);
// out[r, i] = the reference row's value at source[r, i]'s quantile, by the CPU's order and formula
// (kernels/cpu/histogram.cpp); NaN stays NaN. out may be source.
void launch_match_histograms(const float* source, const float* reference, float* out, std::int64_t rows, std::int64_t n,
                             std::int64_t m, void* scratch, std::size_t scratch_bytes, cudaStream_t stream);

// ---- peers.cu: library baselines for `cudl bench` (kernels/cuda/peers.hpp), not ops ----
std::size_t cub_sum_scratch_bytes(std::int64_t n);
// out[0] = cub::DeviceReduce::Sum(x[0..n)), CUB's float accumulator.
void launch_cub_sum(const float* x, std::int64_t n, float* out, void* scratch, std::size_t scratch_bytes,
                    cudaStream_t stream);

// ---- losses.cu (the forward passes take kReduceScratchBytes of scratch) ----
// loss[0] = mean((a-b)²) or mean(|a-b|), each term and the sum in double.
void launch_mse_loss_forward(const void* a, const void* b, FloatType t, std::int64_t n, float* loss, void* scratch,
                             cudaStream_t stream);
void launch_l1_loss_forward(const void* a, const void* b, FloatType t, std::int64_t n, float* loss, void* scratch,
                            cudaStream_t stream);
// da = scale * (a-b) with scale = 2 dloss / n, or scale * sign(a-b) with scale = dloss / n.
void launch_mse_loss_backward(const void* a, const void* b, void* da, FloatType t, std::int64_t n, float scale,
                              cudaStream_t stream);
void launch_l1_loss_backward(const void* a, const void* b, void* da, FloatType t, std::int64_t n, float scale,
                             cudaStream_t stream);
// x is [planes, H, W] (planes = N*C); loss[0] = Σ (a² + b²)^(β/2) over pixels, a and b the
// forward differences down and right (engine/backend.hpp), in double.
void launch_tv_loss_forward(const float* x, std::int64_t planes, std::int64_t height, std::int64_t width, float beta,
                            float* loss, void* scratch, cudaStream_t stream);
// dx (+)= dloss * ∂tv/∂x, x and dx [N, C, H, W] with s.size = H*W.
void launch_tv_loss_backward(const float* x, float* dx, const Planes& s, int height, int width, float beta, float dloss,
                             bool accumulate, cudaStream_t stream);

// ---- scalar_ops.cu: L-BFGS's device scalars ----
// y += (sign * alpha[0]) * x, rounded as on the CPU (no FMA).
void launch_axpy_scalar(float sign, const float* alpha, const float* x, float* y, std::int64_t n, cudaStream_t stream);
// out[0] = Σ |x[i]| in double (kReduceScratchBytes of scratch).
void launch_abs_sum(const float* x, std::int64_t n, float* out, void* scratch, cudaStream_t stream);
// out[0] = op(a[0], b[0]), one thread.
void launch_scalar_op(ScalarOp op, const float* a, const float* b, float* out, cudaStream_t stream);

// ---- softmax.cu; x, y are [rows, cols], one warp per row ----
void launch_softmax_forward(const float* x, float* y, std::int64_t rows, std::int64_t cols, bool log,
                            cudaStream_t stream);
// softmax: dx = y * (dy - Σ dy*y); log-softmax: dx = dy - exp(y) * Σ dy.
void launch_softmax_backward(const float* y, const float* dy, float* dx, std::int64_t rows, std::int64_t cols, bool log,
                             cudaStream_t stream);
// probs = softmax(logits); row_loss[n] = -log softmax(logits)[n, labels[n]]; then
// loss[0] = mean(row_loss), summed in double. A label outside [0, cols) makes its row's loss NaN
// and sets *fault to DeviceFault::label_out_of_range: the device cannot throw, the next
// synchronising read does.
void launch_softmax_cross_entropy_forward(const float* logits, const std::int32_t* labels, float* probs,
                                          float* row_loss, float* loss, std::int64_t rows, std::int64_t cols,
                                          int* fault, cudaStream_t stream);
// dlogits = (probs - onehot(labels)) * scale, scale = dloss / rows, one warp per row. A label
// outside [0, cols) makes its row NaN and sets *fault, as in the forward pass.
void launch_softmax_cross_entropy_backward(const float* probs, const std::int32_t* labels, float* dlogits,
                                           std::int64_t rows, std::int64_t cols, float scale, int* fault,
                                           cudaStream_t stream);

// ---- gather.cu: out[i] = src[index[i]] for `rows` rows of row_bytes bytes each ----
// Copies in the widest of 16, 8, 4, 2 or 1 bytes that divides row_bytes and both addresses. An
// index outside [0, src_rows) writes its row of out as zeros and sets *fault to
// DeviceFault::gather_index_out_of_range.
void launch_gather_rows(const void* src, std::int64_t src_rows, const std::int32_t* index, std::int64_t rows,
                        std::size_t row_bytes, void* out, int* fault, cudaStream_t stream);

}  // namespace cudl::cuda_detail
