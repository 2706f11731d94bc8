#pragma once
// The op interface. Layers call `ctx.backend().relu(...)`-style methods and never a kernel
// directly; the CPU backend is always built, the CUDA backend when CUDA is found.
//
// Check once, dispatch unchecked (dlib's tt:: front over cpu::/cuda::): each public method is
// non-virtual, checks its arguments under one op name (engine/backend.cpp) and then calls a
// protected pure-virtual do_<op>. Error messages are therefore identical on both backends, a new
// backend writes no argument checks, and a backend that lacks an op does not compile.
//
// Conventions: outputs are preallocated by the caller with the documented shape and are overwritten
// unless the name says `accumulate`. Shapes are logical (NCHW for images); a 4-D tensor may be
// stored channels_last (engine/tensor.hpp's MemoryFormat), and every op takes either format in any
// mix with the same result: elementwise ops read their inputs in their output's format (an input
// stored otherwise is first copied into it); the layout-aware ops (convolutions, pooling, bias,
// Gram, TV, channel affine, batch norm) run the backend's channels_last kernels where it has them
// (takes_channels_last) and otherwise get NCHW copies (engine/format_route.hpp). Dropout draws
// element i's number for the i-th element in storage order.
//
// Dtypes (autocast, as PyTorch's: engine/context.hpp's Precision). Labels and argmax are i32.
// "Float" means f32, bf16 or f16; every op computes and accumulates in f32 whatever it stores.
// - Float, every tensor one dtype: conv2d_forward (x, w, y), conv2d_backward_data (dy, w, dx),
//   activations, pooling, dropout and mul, axpy, scale, fill, batch norm's x, y, dy and dx.
// - Float in, f32 or the input's dtype out: gemm (a, b one dtype; c f32 or theirs),
//   conv2d_backward_filter (x, dy one dtype; dw f32 or theirs: a master-weight gradient).
// - Float in, f32 out: bias_add/bias_grad's bias, gram_forward's g (gram_backward: dg f32, dx as x),
//   mse/l1 losses (a, b, da one dtype; loss f32), sum, mean, max, argmax_rows, accuracy, top_k, channel
//   affine's scale and shift, batch norm's per-channel tensors.
// - f32 only: the softmax family and cross-entropy, tv_loss, match_histograms, optimizer steps, dot, clamp,
//   axpy_scalar, abs_sum, scalar_op, the random fills.
// - cast converts between any two float dtypes (rounding to nearest even).
// Scalar results (losses, sums) are written into a one-element device tensor so that nothing
// waits for the device. Errors name the op and the shapes.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string_view>

#include "cudl/config.hpp"  // CUDL_HAVE_CUDA
#include "cudl/engine/op_kinds.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

class Context;

struct Conv2dParams {
  int pad_h = 0, pad_w = 0;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  // Grouped convolution (torch.nn.Conv2d's groups): the C input and K output channels split into
  // `groups` equal slices, output slice g reading input slice g only, so w is [K, C/groups, R, S].
  // groups == C is a depthwise convolution. Last, so that {pad_h, pad_w, ...} initialisers keep
  // meaning what they did.
  int groups = 1;
};

// Batch normalisation with its running statistics (inference): per channel,
// y = gamma (x - running_mean) / sqrt(running_var + eps) + beta. Each tensor [K] f32.
struct BatchNormEval {
  Tensor gamma, beta, running_mean, running_var;
  float eps = 1e-5f;
};

struct Pool2dParams {
  int kernel_h = 2, kernel_w = 2;
  int stride_h = 2, stride_w = 2;
  int pad_h = 0, pad_w = 0;
};

std::string_view activation_name(Activation a);

struct SgdParams {
  float lr = 0.01f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
  // Optional (see OptimizerScalar): when defined, the learning rate is read from it, not from lr.
  Tensor scalars;
};

struct AdamParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled_weight_decay = false;  // true: AdamW (decay applied to the weights, not the gradient)
  std::int64_t step = 1;                // 1-based step count, for bias correction
  // Optional (see OptimizerScalar): when defined, the step size, bias correction and shrink are read
  // from it, and lr and step are not used.
  Tensor scalars;
};

// The per-step values of an SGD or Adam step with the host fields of `p` (see OptimizerScalar).
struct OptimizerStepValues {
  float v[kOptimizerScalars] = {};
};
OptimizerStepValues optimizer_scalars(const SgdParams& p);
OptimizerStepValues optimizer_scalars(const AdamParams& p);

// Output sizes shared by both backends and the layers.
std::int64_t conv_out_size(std::int64_t in, int kernel, int pad, int stride, int dilation);
std::int64_t pool_out_size(std::int64_t in, int kernel, int pad, int stride);
Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p);
Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p);

// A promise, kept while the hold lives, that nobody writes a tensor's values (the weights of a
// network that only runs inference, or that style transfer differentiates through): a backend may
// then keep copies derived from it, such as weights reordered into a convolution library's
// layout, instead of deriving them again on every call. Dropping the hold drops the copies.
using ConstantHold = std::shared_ptr<void>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // The format convolutions of `dtype` activations run fastest in on this backend: channels_last
  // where its kernels read and write it natively (Context::conv_output_format's automatic choice).
  MemoryFormat preferred_conv_format(const Context& ctx, DType dtype) const {
    return do_preferred_conv_format(ctx, dtype);
  }

  // See ConstantHold. The tensor's memory must outlive the hold. Null when the backend keeps
  // nothing (the CUDA backend: cuDNN reads NCHW weights as they are).
  [[nodiscard]] ConstantHold hold_constant(Context& ctx, const Tensor& t);

  // Each op below checks its arguments (placement on ctx's device, dtype, shapes, parameters)
  // once, under its own name, then calls the backend's do_<op>, which trusts them.

  // ---- dense linear algebra ----
  // C = alpha * op(A) * op(B) + beta * C, all row-major 2-D; op(X) = X or Xᵀ.
  void gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
            Tensor& c);
  // y[n, c, ...] += bias[c] (dim 1 is the channel, for both [N, C] and [N, C, H, W]).
  void bias_add(Context& ctx, Tensor& y, const Tensor& bias);
  // dbias[c] (+)= sum of dy over every dim except 1.
  void bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate);

  // ---- convolution (cross-correlation, like PyTorch), x [N,C,H,W], w [K,C/G,R,S], y [N,K,P,Q] ----
  // G = p.groups divides C and K; output channel k reads input channels [g*C/G, (g+1)*C/G) of its
  // group g = k / (K/G).
  void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y);
  void conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx);
  void conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                              bool accumulate);
  // y = relu(conv2d(x, w) + bias) in one op (bias [K] f32, or undefined for a convolution without
  // one): the fused form of conv2d_forward, bias_add and a ReLU, so that y is written once instead
  // of three times. Its gradient is theirs: ReLU's backward reads only y (y > 0 exactly where the
  // convolution's output was), and conv2d's backward then takes the masked gradient.
  void conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                const Conv2dParams& p, Tensor& y);
  // y = [relu](bn(conv2d(x, w) [+ bias]) [+ residual]) in one op, bn with its running statistics
  // (inference only: training normalises with batch statistics and stays unfused). bias [K] f32 or
  // undefined; residual y's shape and dtype, or undefined; relu: whether the ReLU is applied. The
  // fused form of conv2d_forward, bias_add, batchnorm_forward_eval, axpy (a residual Add) and a
  // ReLU, which compute the same function (the folded arithmetic rounds differently).
  void conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const BatchNormEval& bn,
                         const Conv2dParams& p, const Tensor& residual, bool relu, Tensor& y);
  // y = relu(x wᵀ + bias) in one op: x [N, in], w [out, in] (Linear's layout), bias [out] f32 or
  // undefined, y [N, out]. x, w and y one float dtype (gemm's products accumulate in f32 and y is
  // rounded once). The fused form of gemm(x, wᵀ), bias_add and a ReLU; its gradient is theirs, as
  // for conv2d_bias_relu_forward (ReLU's backward reads only y).
  void linear_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);

  // ---- activations: y = f(x); dx = f'(x) * dy. `alpha` is leaky ReLU's negative slope ----
  void activation_forward(Context& ctx, Activation a, float alpha, const Tensor& x, Tensor& y);
  // Takes both x and y: ReLU-like functions differentiate from x, sigmoid/tanh from y.
  void activation_backward(Context& ctx, Activation a, float alpha, const Tensor& x, const Tensor& y, const Tensor& dy,
                           Tensor& dx);

  // ---- pooling, x [N,C,H,W]; padding counts as -inf for max and as zeros for average ----
  // argmax (i32, shape of y) holds the flat h*W+w index of the winner within its plane.
  void maxpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax);
  void maxpool2d_backward(Context& ctx, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx);
  // Average over the full window, padding included (PyTorch's count_include_pad=True).
  void avgpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y);
  void avgpool2d_backward(Context& ctx, const Tensor& dy, const Pool2dParams& p, Tensor& dx);

  // ---- softmax family over the last dim of [N, K] ----
  void softmax_forward(Context& ctx, const Tensor& x, Tensor& y);
  void softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx);
  void log_softmax_forward(Context& ctx, const Tensor& x, Tensor& y);
  void log_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx);
  // loss[0] = mean_n(-log softmax(logits)[n, labels[n]]); probs = softmax(logits), kept for backward.
  void softmax_cross_entropy_forward(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& probs,
                                     Tensor& loss);
  // dlogits = (probs - onehot(labels)) * dloss / N.
  void softmax_cross_entropy_backward(Context& ctx, const Tensor& probs, const Tensor& labels, float dloss,
                                      Tensor& dlogits);

  // ---- Gram matrix: x [N,C,H,W] -> g [N,C,C], g = F Fᵀ / (C*H*W) with F = x[n] as [C, H*W] ----
  void gram_forward(Context& ctx, const Tensor& x, Tensor& g);
  // dx = (dg + dgᵀ) F / (C*H*W)
  void gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx);

  // ---- losses; loss is a one-element tensor, dloss the upstream scalar gradient ----
  void mse_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss);  // mean((a-b)²)
  void mse_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da);
  void l1_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss);  // mean(|a-b|)
  void l1_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da);
  // Σ_ij (a² + b²)^(β/2) with a = x[i+1,j]-x[i,j] and b = x[i,j+1]-x[i,j] (a term that falls off
  // the edge is 0), over every sample and channel of x [N,C,H,W]. β = 2 (the default) is the sum
  // of squared neighbour differences; other β give the Keras neural-style example's TV exponent.
  // β must be in [1, 4]; where a² + b² = 0 a pixel's gradient term is 0 (its limit for β > 2;
  // for β < 2 the one-sided derivative is unbounded, and 0 is the subgradient the optimiser needs).
  void tv_loss_forward(Context& ctx, const Tensor& x, Tensor& loss, float beta = 2.0f);
  // dx (+)= dloss * ∂tv/∂x.
  void tv_loss_backward(Context& ctx, const Tensor& x, float dloss, Tensor& dx, bool accumulate, float beta = 2.0f);

  // ---- dropout (inverted): mask = (u >= p) / (1 - p), u = philox::grouped_uniform(offset + i, seed); y = x*mask ----
  void dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset, Tensor& y,
                       Tensor& mask);
  // The same with the Philox offset counter[0] + offset, counter a u64 held in an i32 [2] tensor
  // (low word, high word) on ctx's device, which is then advanced by `advance`: the offset lives on
  // the device, so a step replayed as a CUDA graph draws fresh masks each time.
  void dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, Tensor& counter,
                       std::uint64_t offset, std::uint64_t advance, Tensor& y, Tensor& mask);
  // dx = dy * mask (also the generic elementwise product).
  void mul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);

  // ---- optimizer steps, fused: one pass over param, grad and state ----
  void sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad, Tensor& momentum_buf);
  void adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v);

  // ---- reductions into one-element (f32) or per-row (i32) tensors ----
  void sum(Context& ctx, const Tensor& x, Tensor& out);
  void mean(Context& ctx, const Tensor& x, Tensor& out);
  void max(Context& ctx, const Tensor& x, Tensor& out);
  // out[n] = argmax_k x[n, k] (first on ties), x [N, K], out i32 [N].
  void argmax_rows(Context& ctx, const Tensor& x, Tensor& out);
  // out[0] = fraction of rows whose argmax equals labels[n].
  void accuracy(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& out);
  // The k best columns of each row of x [N, K] (any float dtype), k = indices.dim(1) in [1, K]:
  // indices i32 [N, k] in rank order and, unless undefined, values f32 [N, k] (x[n, indices[n, j]]
  // widened). One total order on both backends: larger value first, equal values (+0 == -0) by
  // lower column, NaN after every number (so indices[n, 0] is argmax_rows' answer). Only N*k
  // results leave the device, where a caller ranking on the host would copy all N*K logits.
  void top_k(Context& ctx, const Tensor& x, Tensor& indices, Tensor& values);
  // Histogram matching by sorting, row by row: source f32 [R, n], reference f32 [R, m], out f32 [R, n]
  // (may be source). Each row's values are ranked (engine/float_order.hpp: ascending, equal values by
  // lower column, NaN below every number) and the value of rank r becomes the reference row's value
  // of rank floor((2r + 1) m / 2n), its quantile: out's row then has the reference row's
  // distribution, in source's order. A NaN in source stays NaN; NaNs in reference count as its
  // smallest values. m = 0 with n > 0 is refused. Both backends give the same bits.
  void match_histograms(Context& ctx, const Tensor& source, const Tensor& reference, Tensor& out);

  // ---- elementwise basics ----
  void fill(Context& ctx, Tensor& x, float value);
  // Same device, same size; between two formats (same shape), the values are re-laid out.
  void copy(Context& ctx, const Tensor& src, Tensor& dst);
  void axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y);  // y += alpha * x
  void scale(Context& ctx, Tensor& x, float alpha);                  // x *= alpha

  // ---- per-channel affine, dim 1 the channel: y = x * scale[c] + shift[c] (input normalisation) ----
  void channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift, Tensor& y);
  // dx = dy * scale[c]
  void channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx);

  // ---- batch normalisation per channel over (N, H, W) of x [N,C,H,W] (cuDNN's spatial mode) ----
  // Normalises with the batch statistics, saves the batch mean and 1/sqrt(var + eps) (biased
  // variance) for backward, and updates running = (1 - momentum) * running + momentum * batch, with
  // the unbiased variance for running_var (PyTorch's and cuDNN's convention).
  void batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                               float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                               Tensor& save_invstd);
  // Normalises with the running statistics.
  void batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var, float eps, Tensor& y);
  // dx = the input gradient; dgamma and dbeta are accumulated (+=).
  void batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                          const Tensor& save_invstd, float eps, Tensor& dx, Tensor& dgamma, Tensor& dbeta);

  // Batch norm + ReLU fused for training: y = max(bn(x), 0) from the batch statistics, written once
  // (one pass over each plane for the apply), with batchnorm_forward_train's saved statistics and
  // running update. Same function as batchnorm_forward_train then a ReLU, bit for bit on the CPU:
  // where bn(x) is NaN, y is 0, as our ReLU gives (v > 0 ? v : 0).
  void batchnorm_relu_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                                    float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y,
                                    Tensor& save_mean, Tensor& save_invstd);
  // The gradient of relu(bn(x)): batchnorm_backward with dy masked by y > 0 (y the fused forward's
  // output) inside its two passes, no separate ReLU pass and no temporary. dgamma and dbeta are
  // accumulated (+=).
  void batchnorm_relu_backward(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                               const Tensor& save_mean, const Tensor& save_invstd, float eps, Tensor& dx,
                               Tensor& dgamma, Tensor& dbeta);

  // ---- precision: dst = src rounded to dst's dtype (any two float dtypes, same element count) ----
  void cast(Context& ctx, const Tensor& src, Tensor& dst);

  // ---- vector helpers for L-BFGS and image output ----
  void dot(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);  // out[0] = Σ a·b
  void clamp(Context& ctx, Tensor& x, float low, float high);             // in place
  // y += sign * alpha[0] * x, alpha a one-element tensor on the device (no host round trip).
  void axpy_scalar(Context& ctx, float sign, const Tensor& alpha, const Tensor& x, Tensor& y);
  void abs_sum(Context& ctx, const Tensor& x, Tensor& out);  // out[0] = Σ |x|
  // out[0] = op(a[0], b[0]) (b unused by safe_recip and first_step but must be one element too).
  void scalar_op(Context& ctx, ScalarOp op, const Tensor& a, const Tensor& b, Tensor& out);

  // ---- seeded random fills: element i draws from Philox(seed, counter = offset + i) ----
  void fill_uniform(Context& ctx, Tensor& x, float low, float high, std::uint64_t seed, std::uint64_t offset);
  void fill_normal(Context& ctx, Tensor& x, float mean, float stddev, std::uint64_t seed, std::uint64_t offset);

  // ---- row gather: out[i] = src[index[i]] for the rows (dim 0) of src [N, ...] ----
  // src and out one dtype (any: f32, the halves, i32), out [B, src's other dims], index i32 [B] on
  // the same device. A dataset that lives on the device builds each batch with it (engine/io/
  // loader.hpp). An index outside [0, N) throws on the CPU, naming it; the CUDA kernel cannot
  // throw, so it writes that row as zeros and sets the context's device fault word, reported at
  // the next synchronising host read (the loader's indices are a permutation made on the host and
  // never fall outside).
  void gather_rows(Context& ctx, const Tensor& src, const Tensor& index, Tensor& out);

 private:
  // Throws unless ctx's backend is this one (every public method starts with it).
  void bound_to(const Context& ctx, std::string_view op) const;
  // Whether a layout-aware op's call goes through NCHW stand-ins: some image-shaped tensor is
  // channels_last and the backend has no kernel for it (or, unless `any_mix`, for that mix).
  bool routes_to_nchw(std::string_view op, std::initializer_list<const Tensor*> images, bool any_mix = false) const;

 protected:
  // conv2d_bn_forward as the unfused ops in sequence (conv, bias, batch norm, residual, ReLU), in
  // y's dtype: the backends' fallback where no fused kernel takes the call, so that the fused and
  // unfused networks compute the same function on both.
  void compose_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                 const BatchNormEval& bn, const Conv2dParams& p, const Tensor& residual, bool relu,
                                 Tensor& y);

  // The backends' implementations, called only after the public method's checks passed. Checks
  // that belong to one backend only (a cuBLAS int limit, the CPU's label scan) stay in them.
  // The front does not call them for empty inputs of the softmax family, cross-entropy backward,
  // gram_backward, argmax_rows, top_k, copy (or a copy onto itself) and batch norm (nor for batch-norm
  // training without channels); the other ops must handle empty tensors.
  virtual ConstantHold do_hold_constant(Context& ctx, const Tensor& t) = 0;
  // Whether do_<op> reads and writes channels_last tensors itself (`op`: the public method's name).
  // The convolutions then get any mix of formats; the other layout-aware ops get one format for
  // all their image-shaped tensors (the front routes mixes through NCHW).
  virtual bool do_takes_channels_last(std::string_view op) const = 0;
  virtual MemoryFormat do_preferred_conv_format(const Context& ctx, DType dtype) const = 0;
  // copy between formats: src and dst one shape (4-D) and dtype (any, i32 too), formats differ.
  virtual void do_convert_format(Context& ctx, const Tensor& src, Tensor& dst) = 0;
  virtual void do_gemm(Context& ctx, bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b,
                       float beta, Tensor& c) = 0;
  virtual void do_bias_add(Context& ctx, Tensor& y, const Tensor& bias) = 0;
  virtual void do_bias_grad(Context& ctx, const Tensor& dy, Tensor& dbias, bool accumulate) = 0;
  virtual void do_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) = 0;
  virtual void do_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                                       Tensor& dx) = 0;
  virtual void do_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p,
                                         Tensor& dw, bool accumulate) = 0;
  virtual void do_conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                           const Conv2dParams& p, Tensor& y) = 0;
  virtual void do_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                    const BatchNormEval& bn, const Conv2dParams& p, const Tensor& residual, bool relu,
                                    Tensor& y) = 0;
  virtual void do_linear_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                           Tensor& y) = 0;
  virtual void do_activation_forward(Context& ctx, Activation a, float alpha, const Tensor& x, Tensor& y) = 0;
  virtual void do_activation_backward(Context& ctx, Activation a, float alpha, const Tensor& x, const Tensor& y,
                                      const Tensor& dy, Tensor& dx) = 0;
  virtual void do_maxpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y,
                                    Tensor& argmax) = 0;
  virtual void do_maxpool2d_backward(Context& ctx, const Tensor& dy, const Tensor& argmax, const Pool2dParams& p,
                                     Tensor& dx) = 0;
  virtual void do_avgpool2d_forward(Context& ctx, const Tensor& x, const Pool2dParams& p, Tensor& y) = 0;
  virtual void do_avgpool2d_backward(Context& ctx, const Tensor& dy, const Pool2dParams& p, Tensor& dx) = 0;
  virtual void do_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) = 0;
  virtual void do_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) = 0;
  virtual void do_log_softmax_forward(Context& ctx, const Tensor& x, Tensor& y) = 0;
  virtual void do_log_softmax_backward(Context& ctx, const Tensor& y, const Tensor& dy, Tensor& dx) = 0;
  virtual void do_softmax_cross_entropy_forward(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& probs,
                                                Tensor& loss) = 0;
  virtual void do_softmax_cross_entropy_backward(Context& ctx, const Tensor& probs, const Tensor& labels, float dloss,
                                                 Tensor& dlogits) = 0;
  virtual void do_gram_forward(Context& ctx, const Tensor& x, Tensor& g) = 0;
  virtual void do_gram_backward(Context& ctx, const Tensor& x, const Tensor& dg, Tensor& dx) = 0;
  virtual void do_mse_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) = 0;
  virtual void do_mse_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) = 0;
  virtual void do_l1_loss_forward(Context& ctx, const Tensor& a, const Tensor& b, Tensor& loss) = 0;
  virtual void do_l1_loss_backward(Context& ctx, const Tensor& a, const Tensor& b, float dloss, Tensor& da) = 0;
  virtual void do_tv_loss_forward(Context& ctx, const Tensor& x, float beta, Tensor& loss) = 0;
  virtual void do_tv_loss_backward(Context& ctx, const Tensor& x, float beta, float dloss, Tensor& dx,
                                   bool accumulate) = 0;
  virtual void do_dropout_forward(Context& ctx, const Tensor& x, float p, std::uint64_t seed, std::uint64_t offset,
                                  Tensor& y, Tensor& mask) = 0;
  virtual void do_dropout_forward_counted(Context& ctx, const Tensor& x, float p, std::uint64_t seed, Tensor& counter,
                                          std::uint64_t offset, std::uint64_t advance, Tensor& y, Tensor& mask) = 0;
  virtual void do_mul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void do_sgd_step(Context& ctx, const SgdParams& p, Tensor& param, const Tensor& grad,
                           Tensor& momentum_buf) = 0;
  virtual void do_adam_step(Context& ctx, const AdamParams& p, Tensor& param, const Tensor& grad, Tensor& m,
                            Tensor& v) = 0;
  virtual void do_sum(Context& ctx, const Tensor& x, Tensor& out) = 0;
  virtual void do_mean(Context& ctx, const Tensor& x, Tensor& out) = 0;
  virtual void do_max(Context& ctx, const Tensor& x, Tensor& out) = 0;
  virtual void do_argmax_rows(Context& ctx, const Tensor& x, Tensor& out) = 0;
  virtual void do_accuracy(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& out) = 0;
  virtual void do_top_k(Context& ctx, const Tensor& x, Tensor& indices, Tensor& values) = 0;  // values may be undefined
  virtual void do_match_histograms(Context& ctx, const Tensor& source, const Tensor& reference, Tensor& out) = 0;
  virtual void do_fill(Context& ctx, Tensor& x, float value) = 0;
  virtual void do_copy(Context& ctx, const Tensor& src, Tensor& dst) = 0;
  virtual void do_axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y) = 0;
  virtual void do_scale(Context& ctx, Tensor& x, float alpha) = 0;
  virtual void do_channel_affine(Context& ctx, const Tensor& x, const Tensor& scale, const Tensor& shift,
                                 Tensor& y) = 0;
  virtual void do_channel_affine_backward(Context& ctx, const Tensor& dy, const Tensor& scale, Tensor& dx) = 0;
  virtual void do_batchnorm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                          float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                          Tensor& y, Tensor& save_mean, Tensor& save_invstd) = 0;
  virtual void do_batchnorm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                         const Tensor& running_mean, const Tensor& running_var, float eps,
                                         Tensor& y) = 0;
  virtual void do_batchnorm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                     const Tensor& save_mean, const Tensor& save_invstd, float eps, Tensor& dx,
                                     Tensor& dgamma, Tensor& dbeta) = 0;
  virtual void do_batchnorm_relu_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                               float eps, float momentum, Tensor& running_mean, Tensor& running_var,
                                               Tensor& y, Tensor& save_mean, Tensor& save_invstd) = 0;
  virtual void do_batchnorm_relu_backward(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& dy,
                                          const Tensor& gamma, const Tensor& save_mean, const Tensor& save_invstd,
                                          float eps, Tensor& dx, Tensor& dgamma, Tensor& dbeta) = 0;
  virtual void do_cast(Context& ctx, const Tensor& src, Tensor& dst) = 0;  // dtypes differ
  virtual void do_dot(Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void do_clamp(Context& ctx, Tensor& x, float low, float high) = 0;
  virtual void do_axpy_scalar(Context& ctx, float sign, const Tensor& alpha, const Tensor& x, Tensor& y) = 0;
  virtual void do_abs_sum(Context& ctx, const Tensor& x, Tensor& out) = 0;
  virtual void do_scalar_op(Context& ctx, ScalarOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void do_fill_uniform(Context& ctx, Tensor& x, float low, float high, std::uint64_t seed,
                               std::uint64_t offset) = 0;
  virtual void do_fill_normal(Context& ctx, Tensor& x, float mean, float stddev, std::uint64_t seed,
                              std::uint64_t offset) = 0;
  virtual void do_gather_rows(Context& ctx, const Tensor& src, const Tensor& index, Tensor& out) = 0;  // B > 0
};

Backend& cpu_backend();
#if defined(CUDL_HAVE_CUDA)
Backend& cuda_backend();
#endif

}  // namespace cudl
