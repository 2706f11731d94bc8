// 2-D convolutions through oneDNN. The user's tensors are NCHW / KCRS, or NHWC for channels_last
// activations (engine/tensor.hpp's MemoryFormat); each primitive is created with format "any" so
// oneDNN picks its fastest layout, and the reorders between the two are created with it (none when
// they agree: the half-precision kernels pick NHWC, so channels_last activations pass straight in). A primitive, its
// reorders and its scratchpad size are cached per (direction, shapes, parameters): creating them costs far more than a
// small convolution. Buffers in the blocked layouts and the scratchpad come from the context's pool. A grouped
// convolution (Conv2dParams::groups > 1) describes its weights to oneDNN as [G, K/G, C/G, R, S] (goihw), the same bytes
// as cudl's [K, C/G, R, S]; depthwise ones (groups == C) get oneDNN's depthwise kernels.
#include "cudl/kernels/cpu/onednn_conv.hpp"

#include <fmt/format.h>

#if CUDL_HAVE_ONEDNN

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/kernels/cpu/onednn_common.hpp"
#endif

#if CUDL_HAVE_ONEDNN

namespace cudl::cpu {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

using onednn_detail::to_dnnl;

// The engine the matmul primitives run on too.
dnnl::engine& cpu_engine() { return onednn_detail::engine(); }

// forward_relu and forward_bias_relu are the forward convolution with ReLU as an eltwise post-op
// (and the bias inside the primitive): Backend::conv2d_bias_relu_forward, y written once.
// forward_bn* are the forward convolution followed by batch norm's per-channel scale and shift
// (binary mul and add post-ops), a residual tensor (a third binary add) and ReLU:
// Backend::conv2d_bn_forward (its caller: kernels/cpu/conv_fused.cpp).
enum class Direction {
  forward,
  backward_data,
  backward_filter,
  forward_relu,
  forward_bias_relu,
  forward_bn,
  forward_bn_relu,
  forward_bn_add,
  forward_bn_add_relu
};

// The element types of a convolution: `data` for x, w, y and their gradients, except the filter
// gradient's, which is `filter_grad` (f32 master-weight gradients of half activations).
struct Types {
  dt data = dt::f32, filter_grad = dt::f32;
};

// The memory formats of the image-shaped user tensors: x (or dx) and y (or dy).
struct Formats {
  MemoryFormat x = MemoryFormat::contiguous, y = MemoryFormat::contiguous;
};

// Every number that determines a primitive: the policy (Winograd or not), direction, dtypes,
// x [N,C,H,W], w [K,C/G,R,S], the parameters and the group count G, and the user tensors' formats.
using Key = std::array<std::int64_t, 20>;

Key make_key(CpuConv conv, Direction d, Types t, const Shape& x, const Shape& w, const Conv2dParams& p, Formats f) {
  return {static_cast<std::int64_t>(conv),
          static_cast<std::int64_t>(d),
          static_cast<std::int64_t>(t.data),
          static_cast<std::int64_t>(t.filter_grad),
          x[0],
          x[1],
          x[2],
          x[3],
          w[0],
          w[2],
          w[3],
          p.pad_h,
          p.pad_w,
          p.stride_h,
          p.stride_w,
          p.dilation_h,
          p.dilation_w,
          p.groups,
          static_cast<std::int64_t>(f.x),
          static_cast<std::int64_t>(f.y)};
}

// The geometry in oneDNN's terms. oneDNN counts dilation from 0 and wants bottom/right padding
// with which its output size, (in + pad_l + pad_r - extent) / stride + 1 rounded down, is ours.
// The exact value is negative when the stride does not reach the last input rows (ResNet's 1x1
// stride-2 projections: 14 rows to 7); zero gives the same size (the shortfall is under one
// stride) and the same windows, so those convolutions run in oneDNN too instead of im2col,
// which took 2.2-3.4 ms each for ResNet-50's three at batch 1 against 0.6-0.9 ms.
struct Geometry {
  memory::dims x, w, y, strides, dilates, pad_l, pad_r;  // w: [K,C,R,S], or [G,K/G,C/G,R,S] grouped
  bool expressible;
  std::int64_t groups;
  Formats formats;  // of the user's x-like and y-like tensors
  // Whether channels_last activations are given to oneDNN in their own NHWC layout rather than as
  // "any" (plan_for tries both): with "any", the first layer of a network (1 or 3 input channels)
  // gets a kernel that writes a blocked layout, reordered into NHWC afterwards.
  bool pinned = false;
};

Geometry geometry(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p, Formats formats = {}) {
  Geometry g;
  g.formats = formats;
  g.x = {x[0], x[1], x[2], x[3]};
  g.groups = p.groups;
  if (p.groups == 1)
    g.w = {w[0], w[1], w[2], w[3]};
  else
    g.w = {p.groups, w[0] / p.groups, w[1], w[2], w[3]};
  g.y = {y[0], y[1], y[2], y[3]};
  g.strides = {p.stride_h, p.stride_w};
  g.dilates = {p.dilation_h - 1, p.dilation_w - 1};
  g.pad_l = {p.pad_h, p.pad_w};
  const std::int64_t pad_b = (y[2] - 1) * p.stride_h + (w[2] - 1) * p.dilation_h + 1 - x[2] - p.pad_h;
  const std::int64_t pad_r = (y[3] - 1) * p.stride_w + (w[3] - 1) * p.dilation_w + 1 - x[3] - p.pad_w;
  g.pad_r = {std::max<std::int64_t>(pad_b, 0), std::max<std::int64_t>(pad_r, 0)};
  g.expressible = pad_b > -p.stride_h && pad_r > -p.stride_w;
  return g;
}

// Winograd F(4x4, 3x3) (oneDNN's jit_wino_4x3) does 2.25x fewer multiply-adds than the direct
// kernels for a stride-1 3x3 convolution, at the price of transforms on 6x6 tiles and a larger
// (still fp32) rounding error. Measured on the 2-core AVX-512 VM, one thread, forward, batch 64:
// 256->256 channels at 8x8 took 23-26 ms against 54-56 direct (backward-filter 25-29 against
// 64-92), 64->128 at 32x32 71 against 133, and VGG19's 64->64 at 224x224 (batch 1) 24 against
// 47; at a 2x2 output the tiles are mostly padding and it lost (26 against 14), at 4x4 it still
// won (27 against 44). oneDNN refuses shapes it has no Winograd kernel for (e.g. 3 input
// channels), and those stay direct.
// (oneDNN 2.6 has Winograd for f32 only.) It pads the input channels to 16: MNIST's first layer
// (1 -> 32 channels, 28x28, batch 128, one thread) took 70-88 ms forward and 53 ms backward-filter
// against 4 ms for the direct kernels (interleaved, loaded VM). Backward-data reads the output
// channels instead, and there Winograd still won (21-34 ms against 46): only the directions that
// read x keep the direct kernels below 16 input channels.
constexpr std::int64_t kWinogradMinInputChannels = 16;

bool winograd_candidate(CpuConv conv, Direction dir, const Geometry& g, Types t) {
  if (dir != Direction::backward_data && g.x[1] < kWinogradMinInputChannels) return false;
  return conv == CpuConv::fastest && t.data == dt::f32 && g.groups == 1 && g.w[2] == 3 && g.w[3] == 3 &&
         g.strides[0] == 1 && g.strides[1] == 1 && g.dilates[0] == 0 && g.dilates[1] == 0 && g.y[2] >= 4 && g.y[3] >= 4;
}

// NCHW / KCRS, or goihw for grouped weights (5-D).
memory::desc plain(const memory::dims& dims, dt type) {
  return memory::desc(dims, type, dims.size() == 5 ? tag::abcde : tag::abcd);
}
// An image-shaped user tensor: NCHW, or NHWC (acdb) when channels_last.
memory::desc image(const memory::dims& dims, dt type, MemoryFormat f) {
  return f == MemoryFormat::channels_last ? memory::desc(dims, type, tag::acdb) : plain(dims, type);
}
memory::desc any(const memory::dims& dims, dt type) { return memory::desc(dims, type, tag::any); }
// An activation argument of a primitive: the user's own layout when the plan pins them, else any.
memory::desc activation(const Geometry& g, bool is_x, dt type) {
  const memory::dims& dims = is_x ? g.x : g.y;
  const MemoryFormat f = is_x ? g.formats.x : g.formats.y;
  return g.pinned ? image(dims, type, f) : any(dims, type);
}

// Reorders run on the whole OpenMP team. They once ran on the calling thread below 16 MiB, when
// waiting threads slept at once (each parallel region paid a wake-up) and the team ignored other
// processes' load: with OpenMP's bounded spin (tools/cudl/threads.hpp) and the team sized to the
// idle cores, the team is faster (2-core VM, 2 threads, interleaved: mnist_cnn b128 fp32 train
// step 39 -> 27.5 ms, bf16 23.4 -> 16.3-18.5 ms, ResNet-50 batch-1 inference 58-63 -> 52 ms;
// mnist_cnn training beside two busy processes 1395-1453 -> 1352-1353 img/s).

// One tensor argument of a primitive: the layout the primitive chose and, when it differs from
// NCHW/KCRS, the reorder into it (an input) or out of it (an output).
struct Arg {
  memory::desc chosen;
  std::optional<dnnl::reorder> reorder;
  std::optional<dnnl::reorder> reorder_accumulate;  // an output added onto the user's tensor (dw)
};

Arg input_arg(const memory::desc& user, const memory::desc& chosen) {
  Arg a{chosen, {}, {}};
  if (chosen != user)
    a.reorder = dnnl::reorder(memory(user, cpu_engine(), nullptr), memory(chosen, cpu_engine(), nullptr));
  return a;
}

Arg output_arg(const memory::desc& chosen, const memory::desc& user, bool accumulating) {
  Arg a{chosen, {}, {}};
  if (chosen != user)
    a.reorder = dnnl::reorder(memory(chosen, cpu_engine(), nullptr), memory(user, cpu_engine(), nullptr));
  if (accumulating) {
    // dst = src + 1 * dst: the reorder's sum post-op adds the new gradient onto the old one.
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    const dnnl::reorder::primitive_desc pd(cpu_engine(), chosen, cpu_engine(), user, attr);
    a.reorder_accumulate = dnnl::reorder(pd);
  }
  return a;
}

// A cached convolution: the primitive, its three tensor arguments in the order
// (input-like, weights-like, output-like) of its direction, and its scratchpad size.
struct Plan {
  dnnl::primitive conv;
  int arg_ids[3];
  Arg args[3];
  bool is_output[3];
  memory::desc scratchpad;
  // oneDNN fell back to its reference kernel (a geometry its optimised half kernels skip): for a
  // half dtype, widening to f32 and the f32 kernels is faster, so the caller does that instead.
  bool reference = false;
  std::string impl;   // oneDNN's name for the kernel (ONEDNN_VERBOSE's)
  bool bias = false;  // forward_bias_relu: the bias is a fourth argument
  bool bn = false;    // forward_bn*: scale and shift are post-ops 0 and 1
  // forward_bn_add*: the residual, post-op 2, in the layout the primitive writes (oneDNN 2.6's jit
  // kernels take a full-shape binary operand only in the destination's own blocked layout; plain
  // NCHW sends them to a slower gemm kernel), reordered into it from NCHW.
  std::optional<Arg> residual;
};

dnnl::primitive_attr user_scratchpad(bool relu = false) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (relu) {
    // max(0, v) applied in the kernel to each output value before it is stored (scale 1, alpha 0:
    // no negative slope).
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// The bias of a fused convolution: [K] f32, plain (never reordered).
memory::desc bias_desc(const Geometry& g) { return memory::desc({g.w[0]}, dt::f32, tag::a); }

// The forward descriptor; the backward primitives need it as a hint. `relu` and `bias` only for the
// fused directions.
dnnl::convolution_forward::primitive_desc forward_pd(const Geometry& g, dt type, dnnl::prop_kind kind,
                                                     dnnl::algorithm algo, bool relu = false, bool bias = false) {
  if (bias) {
    const dnnl::convolution_forward::desc d(kind, algo, activation(g, true, type), any(g.w, type), bias_desc(g),
                                            activation(g, false, type), g.strides, g.dilates, g.pad_l, g.pad_r);
    return dnnl::convolution_forward::primitive_desc(d, user_scratchpad(relu), cpu_engine());
  }
  const dnnl::convolution_forward::desc d(kind, algo, activation(g, true, type), any(g.w, type),
                                          activation(g, false, type), g.strides, g.dilates, g.pad_l, g.pad_r);
  return dnnl::convolution_forward::primitive_desc(d, user_scratchpad(relu), cpu_engine());
}

bool is_reference(const char* impl) { return std::string_view(impl).starts_with("ref"); }

bool bn_adds(Direction d) { return d == Direction::forward_bn_add || d == Direction::forward_bn_add_relu; }
bool bn_relu(Direction d) { return d == Direction::forward_bn_relu || d == Direction::forward_bn_add_relu; }

// The post-ops of a forward_bn* plan: y = conv * scale + shift (per channel, [1,K,1,1] operands),
// then + residual (in `residual`'s layout) when given, then ReLU.
dnnl::primitive_attr bn_post_ops(const Geometry& g, const memory::desc* residual, bool relu) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops ops;
  const memory::desc per_channel({1, g.w[0], 1, 1}, dt::f32, tag::abcd);
  ops.append_binary(dnnl::algorithm::binary_mul, per_channel);
  ops.append_binary(dnnl::algorithm::binary_add, per_channel);
  if (residual != nullptr) ops.append_binary(dnnl::algorithm::binary_add, *residual);
  if (relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  attr.set_post_ops(ops);
  return attr;
}

// A forward_bn* plan (dense f32 weights; Winograd has no binary post-ops, so plan_for's Winograd
// attempt fails here and the direct kernels take it).
std::unique_ptr<Plan> make_bn_plan(Direction dir, const Geometry& g, Types t, dnnl::algorithm algo) {
  auto plan = std::make_unique<Plan>();
  const auto kind = dnnl::prop_kind::forward_training;  // as make_plan's forward, for the same kernels
  const auto desc = [&](const memory::desc& y) {
    return dnnl::convolution_forward::desc(kind, algo, any(g.x, t.data), any(g.w, t.data), y, g.strides, g.dilates,
                                           g.pad_l, g.pad_r);
  };
  dnnl::convolution_forward::primitive_desc pd(desc(any(g.y, t.data)), bn_post_ops(g, nullptr, bn_relu(dir)),
                                               cpu_engine());
  const memory::desc uy = image(g.y, t.data, g.formats.y);
  if (bn_adds(dir)) {
    // The layout the kernel writes without the residual, fixed, and the residual described in it.
    const memory::desc chosen = pd.dst_desc();
    pd = dnnl::convolution_forward::primitive_desc(desc(chosen), bn_post_ops(g, &chosen, bn_relu(dir)), cpu_engine());
    plan->residual = input_arg(uy, chosen);
  }
  plan->conv = dnnl::convolution_forward(pd);
  plan->arg_ids[0] = DNNL_ARG_SRC, plan->arg_ids[1] = DNNL_ARG_WEIGHTS, plan->arg_ids[2] = DNNL_ARG_DST;
  plan->args[0] = input_arg(image(g.x, t.data, g.formats.x), pd.src_desc());
  plan->args[1] = input_arg(plain(g.w, t.data), pd.weights_desc());
  plan->args[2] = output_arg(pd.dst_desc(), uy, false);
  plan->scratchpad = pd.scratchpad_desc();
  // A reference or gemm kernel would be slower than the direct convolution and the unfused passes.
  plan->reference = !std::string_view(pd.impl_info_str()).starts_with("jit");
  plan->bn = true;
  plan->is_output[0] = plan->is_output[1] = false;
  plan->is_output[2] = true;
  return plan;
}

std::unique_ptr<Plan> make_plan(Direction dir, const Geometry& g, Types t, dnnl::algorithm algo) {
  auto plan = std::make_unique<Plan>();
  const dt w_type = dir == Direction::backward_filter ? t.filter_grad : t.data;
  const memory::desc ux = image(g.x, t.data, g.formats.x), uw = plain(g.w, w_type),
                     uy = image(g.y, t.data, g.formats.y);
  switch (dir) {
    case Direction::forward_bn:
    case Direction::forward_bn_relu:
    case Direction::forward_bn_add:
    case Direction::forward_bn_add_relu:
      return make_bn_plan(dir, g, t, algo);
    case Direction::forward:
    case Direction::forward_relu:
    case Direction::forward_bias_relu: {
      // forward_training, also for inference: oneDNN 2.6 then picks its jit:avx512_core kernel,
      // 15-20% faster than the brgconv it picks for forward_inference at VGG11-CIFAR's shapes on
      // this VM (ONEDNN_VERBOSE, interleaved runs); PyTorch 1.13 asks for forward_training too.
      plan->bias = dir == Direction::forward_bias_relu;
      const auto pd =
          forward_pd(g, t.data, dnnl::prop_kind::forward_training, algo, dir != Direction::forward, plan->bias);
      plan->conv = dnnl::convolution_forward(pd);
      plan->arg_ids[0] = DNNL_ARG_SRC, plan->arg_ids[1] = DNNL_ARG_WEIGHTS, plan->arg_ids[2] = DNNL_ARG_DST;
      plan->args[0] = input_arg(ux, pd.src_desc());
      plan->args[1] = input_arg(uw, pd.weights_desc());
      plan->args[2] = output_arg(pd.dst_desc(), uy, false);
      plan->scratchpad = pd.scratchpad_desc();
      plan->reference = is_reference(pd.impl_info_str());
      plan->impl = pd.impl_info_str();
      break;
    }
    case Direction::backward_data: {
      const auto hint = forward_pd(g, t.data, dnnl::prop_kind::forward_training, algo);
      const dnnl::convolution_backward_data::desc d(algo, activation(g, true, t.data), any(g.w, t.data),
                                                    activation(g, false, t.data), g.strides, g.dilates, g.pad_l,
                                                    g.pad_r);
      const dnnl::convolution_backward_data::primitive_desc pd(d, user_scratchpad(), cpu_engine(), hint);
      plan->conv = dnnl::convolution_backward_data(pd);
      plan->arg_ids[0] = DNNL_ARG_DIFF_DST, plan->arg_ids[1] = DNNL_ARG_WEIGHTS, plan->arg_ids[2] = DNNL_ARG_DIFF_SRC;
      plan->args[0] = input_arg(uy, pd.diff_dst_desc());
      plan->args[1] = input_arg(uw, pd.weights_desc());
      plan->args[2] = output_arg(pd.diff_src_desc(), ux, false);
      plan->scratchpad = pd.scratchpad_desc();
      plan->reference = is_reference(pd.impl_info_str());
      plan->impl = pd.impl_info_str();
      break;
    }
    case Direction::backward_filter: {
      const auto hint = forward_pd(g, t.data, dnnl::prop_kind::forward_training, algo);
      // The primitive always writes f32: a half dw is then rounded once, by the reorder that
      // stores it (and, accumulating, once after the add rather than before and after).
      const dnnl::convolution_backward_weights::desc d(algo, activation(g, true, t.data), any(g.w, dt::f32),
                                                       activation(g, false, t.data), g.strides, g.dilates, g.pad_l,
                                                       g.pad_r);
      const dnnl::convolution_backward_weights::primitive_desc pd(d, user_scratchpad(), cpu_engine(), hint);
      plan->conv = dnnl::convolution_backward_weights(pd);
      plan->arg_ids[0] = DNNL_ARG_SRC, plan->arg_ids[1] = DNNL_ARG_DIFF_DST, plan->arg_ids[2] = DNNL_ARG_DIFF_WEIGHTS;
      plan->args[0] = input_arg(ux, pd.src_desc());
      plan->args[1] = input_arg(uy, pd.diff_dst_desc());
      plan->args[2] = output_arg(pd.diff_weights_desc(), uw, true);
      plan->scratchpad = pd.scratchpad_desc();
      plan->reference = is_reference(pd.impl_info_str());
      plan->impl = pd.impl_info_str();
      break;
    }
  }
  plan->is_output[0] = plan->is_output[1] = false;
  plan->is_output[2] = true;
  return plan;
}

// The implementation oneDNN picks for a small 3x3 forward convolution in `type` on this CPU, or
// nothing when it has none. A reference ("ref:") kernel counts as none: it is slower than
// widening to f32 and running the optimised f32 kernels.
std::optional<std::string> probe_conv(dt type) {
  try {
    const Geometry g = geometry(Shape{2, 32, 14, 14}, Shape{32, 32, 3, 3}, Shape{2, 32, 14, 14}, Conv2dParams{1, 1});
    const auto pd = forward_pd(g, type, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct);
    if (is_reference(pd.impl_info_str())) return std::nullopt;
    return std::string(pd.impl_info_str());
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

const std::optional<std::string>& conv_impl(DType t) {
  static const std::optional<std::string> bf16 = probe_conv(dt::bf16), f16 = probe_conv(dt::f16);
  return t == DType::bf16 ? bf16 : f16;
}

// Whether oneDNN convolves tensors of this dtype natively here (f32 always).
bool native_dtype(DType t) { return t == DType::f32 || (is_half(t) && conv_impl(t).has_value()); }

std::string_view direction_name(Direction d) {
  switch (d) {
    case Direction::forward:
      return "conv2d_forward";
    case Direction::backward_data:
      return "conv2d_backward_data";
    case Direction::backward_filter:
      return "conv2d_backward_filter";
    case Direction::forward_relu:
    case Direction::forward_bias_relu:
      return "conv2d_bias_relu_forward";
    case Direction::forward_bn:
    case Direction::forward_bn_relu:
    case Direction::forward_bn_add:
    case Direction::forward_bn_add_relu:
      return "conv2d_bn_forward";
  }
  return "conv2d";
}

// The cache: plans live for the process (a model has a few dozen shapes). Lookups take a mutex;
// creation happens under it too, so one shape is never planned twice.
const Plan& plan_for(CpuConv conv, Direction dir, Types t, const Shape& x, const Shape& w, const Geometry& g,
                     const Conv2dParams& p) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  const std::lock_guard lock(mutex);
  const Key key = make_key(conv, dir, t, x, w, p, g.formats);
  auto& slot = plans[key];
  if (!slot) {
    try {
      if (winograd_candidate(conv, dir, g, t)) {
        try {
          slot = make_plan(dir, g, t, dnnl::algorithm::convolution_winograd);
        } catch (const dnnl::error&) {
          // no Winograd kernel for this shape on this CPU: the direct one below
        }
      }
      if (!slot && (g.formats.x == MemoryFormat::channels_last || g.formats.y == MemoryFormat::channels_last)) {
        Geometry pinned = g;
        pinned.pinned = true;
        try {
          auto plan = make_plan(dir, pinned, t, dnnl::algorithm::convolution_direct);
          // A kernel that reads and writes NHWC itself; a reference or GEMM one is slower than the
          // unpinned choice and its reorders.
          if (!plan->impl.empty() && !plan->reference && plan->impl.find("gemm") == std::string::npos)
            slot = std::move(plan);
        } catch (const dnnl::error&) {
          // no kernel for this geometry in NHWC: the unpinned choice below
        }
      }
      if (!slot) slot = make_plan(dir, g, t, dnnl::algorithm::convolution_direct);
    } catch (const dnnl::error& e) {
      plans.erase(key);
      CUDL_THROW(
          "{}: oneDNN could not create the primitive (x={}, w={}, pad {}x{}, stride {}x{}, dilation {}x{}, groups {}): "
          "{}",
          direction_name(dir), x, w, p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.groups,
          e.what());
    }
  }
  return *slot;
}

// Weights held constant (Backend::hold_constant) and their copies in the layouts primitives
// chose. Style transfer reorders the same VGG weights into the same layouts twice per iteration
// otherwise (forward and backward-data): about 9% of a 128 px iteration on one thread
// (ONEDNN_VERBOSE, 268 of 2917 ms in 10 iterations).
class ConstantWeights {
 public:
  static ConstantWeights& instance() {
    static ConstantWeights registry;
    return registry;
  }

  std::uint64_t add(const void* data, std::size_t bytes) {
    const std::lock_guard lock(mutex_);
    const auto begin = reinterpret_cast<std::uintptr_t>(data);
    ranges_.push_back({next_id_, begin, begin + bytes});
    return next_id_++;
  }

  void remove(std::uint64_t id) {
    const std::lock_guard lock(mutex_);
    std::erase_if(copies_, [&](const Copy& c) { return c.range == id; });
    std::erase_if(ranges_, [&](const Range& r) { return r.id == id; });
  }

  // The weights at `user` in layout `chosen`, reordered on first use; nothing when `user` is not
  // held constant.
  std::optional<memory> find_or_make(const memory& user, const Arg& arg, dnnl::stream& stream) {
    const auto address = reinterpret_cast<std::uintptr_t>(user.get_data_handle());
    const std::size_t bytes = user.get_desc().get_size();
    const std::lock_guard lock(mutex_);
    const auto range = std::find_if(ranges_.begin(), ranges_.end(),
                                    [&](const Range& r) { return address >= r.begin && address + bytes <= r.end; });
    if (range == ranges_.end()) return std::nullopt;
    for (const Copy& c : copies_)
      if (c.address == address && c.copy.get_desc() == arg.chosen) return c.copy;
    memory copy(arg.chosen, cpu_engine());
    {
      arg.reorder->execute(stream, const_cast<memory&>(user), copy);
      stream.wait();
    }
    copies_.push_back({range->id, address, copy});
    return copy;
  }

 private:
  struct Range {
    std::uint64_t id;
    std::uintptr_t begin, end;
  };
  struct Copy {
    std::uint64_t range;
    std::uintptr_t address;
    memory copy;
  };
  std::mutex mutex_;
  std::vector<Range> ranges_;
  std::vector<Copy> copies_;
  std::uint64_t next_id_ = 1;
};

// The extra arguments of the fused directions: the bias (forward_bias_relu), batch norm's folded
// scale and shift ([K] f32, forward_bn*) and the residual (NCHW, forward_bn_add*).
struct PostArgs {
  const void* bias = nullptr;
  const float *scale = nullptr, *shift = nullptr;
  const void* residual = nullptr;
};

// Adds a forward_bn* plan's post-op operands to `args`: scale and shift, and the residual reordered
// into the destination's layout (into `buffer`, from the pool) when the plan adds one.
void add_bn_args(Context& ctx, const Plan& plan, const PostArgs& post, const memory::desc& uy, dnnl::stream& stream,
                 std::unordered_map<int, memory>& args, std::optional<Workspace>& buffer) {
  auto& eng = cpu_engine();
  const memory::desc per_channel({1, uy.dims()[1], 1, 1}, dt::f32, memory::format_tag::abcd);
  args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
               memory(per_channel, eng, const_cast<float*>(post.scale)));
  args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1,
               memory(per_channel, eng, const_cast<float*>(post.shift)));
  if (!plan.residual) return;
  memory user(uy, eng, const_cast<void*>(post.residual));
  memory chosen = user;
  if (plan.residual->reorder) {
    buffer.emplace(ctx, plan.residual->chosen.get_size());
    chosen = memory(plan.residual->chosen, eng, buffer->data());
    plan.residual->reorder->execute(stream, user, chosen);
  }
  args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(2) | DNNL_ARG_SRC_1, chosen);
}

// Runs a plan over user tensors in NCHW/KCRS: inputs reordered into pool buffers where the plan's
// layout differs, the convolution, outputs reordered (or added, for accumulate) back.
void execute(Context& ctx, Direction dir, const Plan& plan, const std::array<const memory::desc*, 3>& user_descs,
             const std::array<void*, 3>& user_ptrs, bool accumulate, const Shape& x, const Shape& w,
             const PostArgs& post = {}) {
  auto& eng = cpu_engine();
  thread_local dnnl::stream stream(cpu_engine());
  std::optional<Workspace> buffers[3];
  memory user[3], chosen[3];
  // Accumulating into the user's tensor always goes through a separate buffer, even when the
  // layouts agree: the convolution itself overwrites its output.
  // The weights argument of forward and backward-data, when held constant: reordered once.
  constexpr int kWeights = 1;
  bool held[3] = {false, false, false};
  for (int i = 0; i < 3; ++i) {
    const Arg& a = plan.args[i];
    user[i] = memory(*user_descs[i], eng, user_ptrs[i]);
    if (i == kWeights && dir != Direction::backward_filter && a.reorder) {  // forward (fused too), backward data
      try {
        if (auto copy = ConstantWeights::instance().find_or_make(user[i], a, stream)) {
          chosen[i] = *copy;
          held[i] = true;
          continue;
        }
      } catch (const dnnl::error& e) {
        CUDL_THROW("{}: oneDNN failed to reorder constant weights (w={}): {}", direction_name(dir), w, e.what());
      }
    }
    const bool separate = a.reorder.has_value() || (plan.is_output[i] && accumulate);
    if (separate) {
      buffers[i].emplace(ctx, a.chosen.get_size());
      chosen[i] = memory(a.chosen, eng, buffers[i]->data());
    } else {
      chosen[i] = user[i];
    }
  }
  Workspace scratch(ctx, plan.scratchpad.get_size());
  try {
    for (int i = 0; i < 3; ++i) {
      if (!plan.is_output[i] && !held[i] && plan.args[i].reorder) {
        plan.args[i].reorder->execute(stream, user[i], chosen[i]);
      }
    }
    std::unordered_map<int, memory> args{{plan.arg_ids[0], chosen[0]},
                                         {plan.arg_ids[1], chosen[1]},
                                         {plan.arg_ids[2], chosen[2]},
                                         {DNNL_ARG_SCRATCHPAD, memory(plan.scratchpad, eng, scratch.data())}};
    if (plan.bias)
      args.emplace(DNNL_ARG_BIAS, memory(memory::desc({w[0]}, dt::f32, tag::a), eng, const_cast<void*>(post.bias)));
    std::optional<Workspace> residual;
    if (plan.bn) add_bn_args(ctx, plan, post, *user_descs[2], stream, args, residual);
    plan.conv.execute(stream, args);
    const Arg& out = plan.args[2];
    if (accumulate) {
      out.reorder_accumulate->execute(stream, chosen[2], user[2]);
    } else if (out.reorder) {
      out.reorder->execute(stream, chosen[2], user[2]);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    CUDL_THROW("{}: oneDNN failed (x={}, w={}): {}", direction_name(dir), x, w, e.what());
  }
}

}  // namespace

bool onednn_conv_enabled(CpuConv conv) { return conv != CpuConv::im2col; }

bool onednn_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  const Geometry g = geometry(x.shape(), w.shape(), y.shape(), p, {x.format(), y.format()});
  if (!g.expressible || !native_dtype(x.dtype())) return false;
  const Types t{to_dnnl(x.dtype()), to_dnnl(x.dtype())};
  const Plan& plan = plan_for(ctx.cpu_conv(), Direction::forward, t, x.shape(), w.shape(), g, p);
  if (plan.reference && t.data != dt::f32) return false;
  const memory::desc ux = image(g.x, t.data, g.formats.x), uw = plain(g.w, t.data),
                     uy = image(g.y, t.data, g.formats.y);
  execute(ctx, Direction::forward, plan, {&ux, &uw, &uy}, {x.raw(), w.raw(), y.raw()}, false, x.shape(), w.shape());
  return true;
}

bool onednn_conv2d_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                     const Conv2dParams& p, Tensor& y) {
  const Geometry g = geometry(x.shape(), w.shape(), y.shape(), p, {x.format(), y.format()});
  // Halves as the unfused forward: native kernels only (else the caller composes the three ops,
  // widening the convolution). A half y is the f32 sum plus the f32 bias, ReLU'd and rounded once,
  // where the unfused ops round after the convolution and again after the bias.
  if (!g.expressible || !native_dtype(x.dtype())) return false;
  const Types t{to_dnnl(x.dtype()), to_dnnl(x.dtype())};
  const Direction dir = bias.defined() ? Direction::forward_bias_relu : Direction::forward_relu;
  const Plan& plan = plan_for(ctx.cpu_conv(), dir, t, x.shape(), w.shape(), g, p);
  if (plan.reference && t.data != dt::f32) return false;
  const memory::desc ux = image(g.x, t.data, g.formats.x), uw = plain(g.w, t.data),
                     uy = image(g.y, t.data, g.formats.y);
  execute(ctx, dir, plan, {&ux, &uw, &uy}, {x.raw(), w.raw(), y.raw()}, false, x.shape(), w.shape(),
          PostArgs{bias.defined() ? bias.raw() : nullptr});
  return true;
}

bool onednn_conv2d_bn_forward(Context& ctx, const Tensor& x, const Tensor& w, const float* scale, const float* shift,
                              const Conv2dParams& p, const Tensor& residual, bool relu, Tensor& y) {
  // The residual is described in y's layout (the front hands this op one format for both).
  const Geometry g = geometry(x.shape(), w.shape(), y.shape(), p, {x.format(), y.format()});
  if (!g.expressible || x.dtype() != DType::f32 || p.groups != 1) return false;
  const Types t{dt::f32, dt::f32};
  const Direction dir = residual.defined() ? (relu ? Direction::forward_bn_add_relu : Direction::forward_bn_add)
                                           : (relu ? Direction::forward_bn_relu : Direction::forward_bn);
  const Plan& plan = plan_for(ctx.cpu_conv(), dir, t, x.shape(), w.shape(), g, p);
  if (plan.reference) return false;
  const memory::desc ux = image(g.x, t.data, g.formats.x), uw = plain(g.w, t.data),
                     uy = image(g.y, t.data, g.formats.y);
  PostArgs post;
  post.scale = scale;
  post.shift = shift;
  post.residual = residual.defined() ? residual.raw() : nullptr;
  execute(ctx, dir, plan, {&ux, &uw, &uy}, {x.raw(), w.raw(), y.raw()}, false, x.shape(), w.shape(), post);
  return true;
}

bool onednn_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) {
  const Geometry g = geometry(dx.shape(), w.shape(), dy.shape(), p, {dx.format(), dy.format()});
  if (!g.expressible || !native_dtype(dy.dtype())) return false;
  const Types t{to_dnnl(dy.dtype()), to_dnnl(dy.dtype())};
  const Plan& plan = plan_for(ctx.cpu_conv(), Direction::backward_data, t, dx.shape(), w.shape(), g, p);
  if (plan.reference && t.data != dt::f32) return false;
  const memory::desc ux = image(g.x, t.data, g.formats.x), uw = plain(g.w, t.data),
                     uy = image(g.y, t.data, g.formats.y);
  execute(ctx, Direction::backward_data, plan, {&uy, &uw, &ux}, {dy.raw(), w.raw(), dx.raw()}, false, dx.shape(),
          w.shape());
  return true;
}

bool onednn_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                   bool accumulate) {
  const Geometry g = geometry(x.shape(), dw.shape(), dy.shape(), p, {x.format(), dy.format()});
  if (!g.expressible || !native_dtype(x.dtype()) || !native_dtype(dw.dtype())) return false;
  const Types t{to_dnnl(x.dtype()), to_dnnl(dw.dtype())};
  const Plan& plan = plan_for(ctx.cpu_conv(), Direction::backward_filter, t, x.shape(), dw.shape(), g, p);
  if (plan.reference && t.data != dt::f32) return false;
  const memory::desc ux = image(g.x, t.data, g.formats.x), uw = plain(g.w, t.filter_grad),
                     uy = image(g.y, t.data, g.formats.y);
  execute(ctx, Direction::backward_filter, plan, {&ux, &uy, &uw}, {x.raw(), dy.raw(), dw.raw()}, accumulate, x.shape(),
          dw.shape());
  return true;
}

std::shared_ptr<void> hold_constant_weights(CpuConv conv, const void* data, std::size_t bytes) {
  if (!onednn_conv_enabled(conv)) return nullptr;
  const std::uint64_t id = ConstantWeights::instance().add(data, bytes);
  return std::shared_ptr<void>(nullptr, [id](void*) { ConstantWeights::instance().remove(id); });
}

namespace {

std::string_view isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "unknown";
  }
}

}  // namespace

std::string onednn_description(CpuConv conv) {
  const dnnl::version_t* v = dnnl::version();
  return fmt::format("oneDNN {}.{}.{} (ISA {}); CPU convolutions: {}", v->major, v->minor, v->patch,
                     isa_name(dnnl::get_effective_cpu_isa()),
                     conv == CpuConv::fastest  ? "oneDNN, Winograd F(4x4,3x3) where it pays (fastest)"
                     : conv == CpuConv::direct ? "oneDNN direct kernels only (direct)"
                                               : "im2col + OpenBLAS (im2col)");
}

std::string half_path_description(DType t, CpuPolicy policy) {
  const dnnl::version_t* v = dnnl::version();
  const std::string isa(isa_name(dnnl::get_effective_cpu_isa()));
  const std::optional<std::string>& conv = conv_impl(t);
  const std::string gemm = onednn_matmul_impl(t, policy.gemm);
  std::string conv_path = "widened to f32 (CPU convolutions: im2col)";
  if (onednn_conv_enabled(policy.conv))
    conv_path = conv ? fmt::format("oneDNN {}", *conv)
                     : fmt::format("widened to f32 (oneDNN {}.{} has no {} CPU convolution for ISA {})", v->major,
                                   v->minor, dtype_name(t), isa);
  const std::string gemm_path =
      !gemm.empty() ? fmt::format("oneDNN matmul {}", gemm)
                    : fmt::format("widened to f32 (no oneDNN {} matmul here, or CPU GEMM: openblas)", dtype_name(t));
  return fmt::format("{}: convolutions {}; GEMM {}; other ops native {} loops, f32 arithmetic", dtype_name(t),
                     conv_path, gemm_path, dtype_name(t));
}

bool half_native(DType t, CpuConv conv) { return onednn_conv_enabled(conv) && conv_impl(t).has_value(); }

}  // namespace cudl::cpu

#else  // no oneDNN in this build: conv.cpp keeps im2col + OpenBLAS

namespace cudl::cpu {

bool onednn_conv_enabled(CpuConv) { return false; }
bool onednn_conv2d_forward(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) { return false; }
bool onednn_conv2d_backward_data(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) { return false; }
bool onednn_conv2d_bias_relu_forward(Context&, const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&,
                                     Tensor&) {
  return false;
}
bool onednn_conv2d_backward_filter(Context&, const Tensor&, const Tensor&, const Conv2dParams&, Tensor&, bool) {
  return false;
}
bool onednn_conv2d_bn_forward(Context&, const Tensor&, const Tensor&, const float*, const float*, const Conv2dParams&,
                              const Tensor&, bool, Tensor&) {
  return false;
}
std::shared_ptr<void> hold_constant_weights(CpuConv, const void*, std::size_t) { return nullptr; }
std::string onednn_description(CpuConv) {
  return "oneDNN not built in (CUDL_ONEDNN=OFF or not found); CPU convolutions: im2col + OpenBLAS";
}
std::string half_path_description(DType t, CpuPolicy) {
  return fmt::format(
      "{}: convolutions and GEMM widened to f32 (built without oneDNN); other ops native {} loops, "
      "f32 arithmetic",
      dtype_name(t), dtype_name(t));
}
bool half_native(DType, CpuConv) { return false; }

}  // namespace cudl::cpu

#endif
