// The op table's entries. A new Backend op gets one entry here; test_op_table.cpp then fails until
// it is benched, checked CUDA-vs-CPU and gradient-checked, or the entry says why not.
#include "cudl/engine/op_table.hpp"

#include <fmt/format.h>

#include "cudl/engine/check.hpp"

namespace cudl {

namespace {

using T = ToleranceClass;
const std::vector<DType> kF32{DType::f32};
const std::vector<DType> kHalves{DType::f32, DType::bf16, DType::f16};

constexpr const char* kOptimizerStep = "an optimizer update, not a differentiated op";
constexpr const char* kNoBackward = "no backward op: nothing differentiates through it";
constexpr const char* kIntegers = "integer or count results: no gradient";
constexpr const char* kInsideModels = "memory-bound like relu_fwd; timed inside every model of --models";

std::vector<OpSpec> make_table() {
  std::vector<OpSpec> t;
  // The bench's ops first, in the order it reports them.
  t.push_back({"gemm",
               {"gemm"},
               {Shape{33, 47, 29}},
               kHalves,
               T::accumulated,
               "",
               "",
               {"gemm"},
               {{256, 256, 256}},
               {{64, 4096, 25088}},
               ""});
  // conv2d's CUDA-vs-CPU cases carry strides, padding and dilation: they live with the test.
  t.push_back({"conv2d",
               {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"},
               {},
               kHalves,
               T::accumulated,
               "",
               "",
               {"conv2d_fwd", "conv2d_bwd_data", "conv2d_bwd_filter"},
               // The last of each: a depthwise convolution (groups = C / w's C), MobileNetV2's 144 channels at 56 px.
               {{4, 32, 32, 32, 32, 32, 3, 3}, {4, 32, 32, 32, 32, 1, 3, 3}},
               {{16, 64, 224, 224, 64, 64, 3, 3},
                {16, 128, 56, 56, 256, 128, 3, 3},
                {16, 512, 14, 14, 512, 512, 3, 3},
                {16, 144, 56, 56, 144, 1, 3, 3}},
               ""});
  t.push_back({"activation",
               {"activation_forward", "activation_backward"},
               {Shape{4, 3, 5, 7}},
               kHalves,
               T::elementwise,
               "",
               "",
               {"relu_fwd"},
               {{1 << 20}},
               {{64ll << 20}},
               ""});
  t.push_back({"maxpool2d",
               {"maxpool2d_forward", "maxpool2d_backward"},
               {Shape{2, 3, 9, 10}},
               kHalves,
               T::exact,
               "",
               "",
               {"maxpool2d_fwd"},
               {{4, 32, 64, 64}},
               {{16, 64, 224, 224}},
               ""});
  t.push_back({"gram",
               {"gram_forward", "gram_backward"},
               {Shape{2, 5, 6, 7}},
               kHalves,
               T::accumulated,
               "",
               "",
               {"gram_fwd"},
               {{1, 64, 64, 64}},
               {{1, 512, 64, 64}},
               ""});
  t.push_back({"softmax_cross_entropy",
               {"softmax_cross_entropy_forward", "softmax_cross_entropy_backward"},
               {Shape{37, 11}},
               kF32,
               T::elementwise,
               "",
               "",
               {"softmax_xent_fwd"},
               {{256, 1000}},
               {{4096, 1000}},
               ""});
  t.push_back({"adam_step",
               {"adam_step"},
               {Shape{129, 5}},
               kF32,
               T::elementwise,
               kOptimizerStep,
               "",
               {"adam_step"},
               {{1 << 20}},
               {{64ll << 20}},
               ""});
  t.push_back({"sum",
               {"sum"},
               {Shape{1}, Shape{1000}, Shape{100003}},
               kHalves,
               T::accumulated,
               "a reduction whose gradient is a fill",
               "",
               {"sum"},
               {{1 << 20}},
               {{64ll << 20}},
               ""});
  // Not benched on their own.
  auto add = [&](std::string name, std::vector<std::string> calls, std::vector<Shape> shapes, std::vector<DType> dtypes,
                 T tol, std::string no_gradient, std::string no_bench, std::string no_cuda = "") {
    t.push_back({std::move(name),
                 std::move(calls),
                 std::move(shapes),
                 std::move(dtypes),
                 tol,
                 std::move(no_gradient),
                 std::move(no_cuda),
                 {},
                 {},
                 {},
                 std::move(no_bench)});
  };
  const std::vector<Shape> per_channel{Shape{6, 5}, Shape{3, 5, 7, 9}};
  add("bias_add", {"bias_add"}, per_channel, kHalves, T::elementwise, "", kInsideModels);
  add("bias_grad", {"bias_grad"}, per_channel, kHalves, T::accumulated, "", kInsideModels);
  // Its CUDA-vs-CPU cases are conv2d's geometries (with and without a bias): they live with the test.
  add("conv2d_bias_relu", {"conv2d_bias_relu_forward"}, {}, kF32, T::accumulated,
      "its gradient is conv2d's and relu's, each checked; the network test compares fused and unfused gradients",
      "timed inside every model of --models (compare with --fuse false)");
  add("conv2d_bn", {"conv2d_bn_forward"}, {}, kF32, T::accumulated,
      "inference only (training normalises with batch statistics and is not fused); its parts are each checked",
      "timed inside every model of --models in inference (compare with --fuse false)");
  // Its CUDA-vs-CPU cases (MLP and VGG-head widths, with and without a bias, f32 and the halves)
  // live with the test, tests/test_fusion_linear.cpp.
  add("linear_bias_relu", {"linear_bias_relu_forward"}, {}, kHalves, T::accumulated,
      "its gradient is gemm's and relu's, each checked; the network test compares fused and unfused gradients",
      "timed inside every model of --models (compare with --fuse false)");
  add("avgpool2d", {"avgpool2d_forward", "avgpool2d_backward"}, {Shape{2, 3, 9, 10}}, kHalves, T::elementwise, "",
      "maxpool2d_fwd times the same window walk");
  add("softmax", {"softmax_forward", "softmax_backward"}, {Shape{7, 10}, Shape{5, 1000}, Shape{3, 1}}, kF32,
      T::elementwise, "", "softmax_xent_fwd times the same row pass");
  add("log_softmax", {"log_softmax_forward", "log_softmax_backward"}, {Shape{7, 10}, Shape{5, 1000}, Shape{3, 1}}, kF32,
      T::elementwise, "", "softmax_xent_fwd times the same row pass");
  add("mse_loss", {"mse_loss_forward", "mse_loss_backward"}, {Shape{3, 4, 17, 19}}, kHalves, T::accumulated, "",
      "a reduction like sum");
  add("l1_loss", {"l1_loss_forward", "l1_loss_backward"}, {Shape{3, 4, 17, 19}}, kHalves, T::accumulated, "",
      "a reduction like sum");
  add("tv_loss", {"tv_loss_forward", "tv_loss_backward"}, {Shape{2, 3, 13, 17}}, kF32, T::accumulated, "",
      "timed inside `cudl style`'s ms/iteration");
  add("dropout", {"dropout_forward"}, {Shape{5, 1001}}, kHalves, T::exact, "", kInsideModels);
  add("mul", {"mul"}, {Shape{3, 7, 11}}, kHalves, T::exact, kNoBackward, kInsideModels);
  add("sgd_step", {"sgd_step"}, {Shape{257, 3}}, kF32, T::elementwise, kOptimizerStep, "adam_step times the same pass");
  add("mean", {"mean"}, {Shape{1}, Shape{1000}, Shape{100003}}, kHalves, T::accumulated,
      "a reduction whose gradient is a fill", "sum times the same reduction");
  add("max", {"max"}, {Shape{1}, Shape{1000}, Shape{100003}}, kHalves, T::exact, "a selection: no backward op",
      "sum times the same reduction");
  add("argmax_rows", {"argmax_rows"}, {Shape{64, 10}, Shape{9, 1000}, Shape{5, 1}}, kHalves, T::exact, kIntegers,
      "one pass over the logits per evaluation batch");
  add("accuracy", {"accuracy"}, {Shape{64, 10}, Shape{9, 1000}, Shape{5, 1}}, kHalves, T::exact, kIntegers,
      "one pass over the logits per evaluation batch");
  add("top_k", {"top_k"}, {Shape{64, 10}, Shape{9, 1000}, Shape{5, 1}, Shape{3, 4099}}, kHalves, T::exact, kIntegers,
      "one sort of the logits per evaluation batch or image");
  add("match_histograms", {"match_histograms"}, {Shape{3, 1000}, Shape{2, 4099}, Shape{1, 1}}, kF32, T::exact,
      "recolours the style images once, before the optimisation: not differentiated",
      "runs once per style image before a `cudl style` run");
  const char* kStreams = "the bench's copy is its bandwidth ceiling; the others stream like it";
  add("fill", {"fill"}, {Shape{13, 31}}, kHalves, T::exact, kNoBackward, kStreams);
  add("copy", {"copy"}, {Shape{13, 31}}, kF32, T::exact, kNoBackward, kStreams);
  add("axpy", {"axpy"}, {Shape{13, 31}}, kHalves, T::elementwise, kNoBackward, kStreams);
  add("scale", {"scale"}, {Shape{13, 31}}, kHalves, T::elementwise, kNoBackward, kStreams);
  add("fill_uniform", {"fill_uniform"}, {Shape{3, 4099}}, kF32, T::exact, "a random fill: nothing to differentiate",
      "runs once per initialisation");
  add("fill_normal", {"fill_normal"}, {Shape{3, 4099}}, kF32, T::normal, "a random fill: nothing to differentiate",
      "runs once per initialisation");
  add("channel_affine", {"channel_affine", "channel_affine_backward"}, per_channel, kHalves, T::elementwise, "",
      kInsideModels);
  add("batchnorm", {"batchnorm_forward_train", "batchnorm_forward_eval", "batchnorm_backward"},
      {Shape{4, 3, 5, 7}, Shape{16, 5}, Shape{2, 4, 3, 2, 3}}, kHalves, T::accumulated, "", kInsideModels);
  // Batch norm + ReLU fused for training: timed inside ResNet's train steps (--fuse true|false).
  add("batchnorm_relu", {"batchnorm_relu_forward_train", "batchnorm_relu_backward"},
      {Shape{4, 3, 5, 7}, Shape{16, 5}, Shape{2, 4, 3, 2, 3}, Shape{2, 8, 6, 8}}, kHalves, T::accumulated, "",
      kInsideModels);
  add("dot", {"dot"}, {Shape{1}, Shape{1000}, Shape{100003}}, kF32, T::accumulated, kNoBackward,
      "L-BFGS's reductions, timed inside `cudl style`");
  add("abs_sum", {"abs_sum"}, {Shape{300007}}, kF32, T::double_sum, kNoBackward,
      "--normalize-gradients' reduction, timed inside `cudl style`");
  add("clamp", {"clamp"}, {Shape{17, 33}}, kF32, T::exact, "applied to the image between steps, not differentiated",
      "one elementwise pass per style step");
  add("cast", {"cast"}, {}, kHalves, T::exact, "a dtype conversion: autocast's gradients pass through unchanged",
      "autocast's casts are timed inside every half-precision model bench",
      "f32 to f32 is a copy: the half suite checks it (CastMatchesTheCpuExactly)");
  // Its CUDA-vs-CPU cases (every dtype, unaligned row sizes, out-of-range faults) live with the test,
  // tests/test_gather.cpp.
  add("gather_rows", {"gather_rows"}, {}, kHalves, T::exact, kNoBackward,
      "one per batch of a device-resident dataset, timed inside `cudl train`'s img/s");
  return t;
}

}  // namespace

OpTolerance op_tolerance(ToleranceClass c) {
  switch (c) {
    case ToleranceClass::exact:
      return {0.0f, 0.0f};
    case ToleranceClass::elementwise:
      return {1e-5f, 1e-4f};
    case ToleranceClass::accumulated:
      return {1e-4f, 1e-3f};
    case ToleranceClass::normal:
      return {1e-5f, 1e-5f};
    case ToleranceClass::double_sum:
      return {0.0f, 1e-6f};
  }
  CUDL_THROW("op_tolerance: unknown class {}", static_cast<int>(c));
}

const std::vector<OpSpec>& op_table() {
  static const std::vector<OpSpec> table = make_table();
  return table;
}

const OpSpec& op_spec(std::string_view name) {
  for (const OpSpec& op : op_table())
    if (op.name == name) return op;
  std::string names;
  for (const OpSpec& op : op_table()) names += (names.empty() ? "" : ", ") + op.name;
  CUDL_THROW("op table: no op '{}' (ops: {})", name, names);
}

const OpSpec* op_for_bench(std::string_view bench_op) {
  for (const OpSpec& op : op_table())
    for (const std::string& b : op.bench_ops)
      if (b == bench_op) return &op;
  return nullptr;
}

std::string bench_op_names() {
  std::string names;
  for (const OpSpec& op : op_table())
    for (const std::string& b : op.bench_ops) names += (names.empty() ? "" : ", ") + b;
  return names;
}

}  // namespace cudl
