// ONNX import and export (models/onnx/): malformed files refused in one line with bounded memory,
// the export accepted by libonnx's C++ checker (and Python's, when installed), and export -> import
// giving identical outputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "cudl/layers/elementwise.hpp"
#include "cudl/models/onnx/onnx.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

#if CUDL_TEST_ONNX
#include <onnx/onnx_pb.h>
#endif

namespace cudl {
namespace {

using testing::contains;
using testing::error_message;

#if CUDL_TEST_ONNX

void add_tensor(onnx::GraphProto& g, const std::string& name, std::vector<std::int64_t> dims, std::size_t floats) {
  auto* t = g.add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (auto d : dims) t->add_dims(d);
  std::vector<float> v(floats);
  for (std::size_t i = 0; i < floats; ++i) v[i] = 0.01f * static_cast<float>(i % 17) - 0.05f;
  t->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), floats * 4));
}

onnx::NodeProto& add_node(onnx::GraphProto& g, const std::string& op, const std::string& name,
                          std::vector<std::string> in, const std::string& out) {
  auto* n = g.add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (auto& i : in) n->add_input(i);
  n->add_output(out);
  return *n;
}

void set_ints(onnx::NodeProto& n, const std::string& name, std::vector<std::int64_t> v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a->add_ints(x);
}

// Conv(1->4, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3): input [N, 1, 8, 8].
onnx::ModelProto small_model(int opset = 13) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  auto* o = m.add_opset_import();
  o->set_domain("");
  o->set_version(opset);
  auto& g = *m.mutable_graph();
  g.set_name("small");
  auto* in = g.add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  for (int d : {1, 8, 8}) tt->mutable_shape()->add_dim()->set_dim_value(d);
  add_tensor(g, "conv.weight", {4, 1, 3, 3}, 36);
  add_tensor(g, "conv.bias", {4}, 4);
  add_tensor(g, "fc.weight", {3, 4}, 12);
  add_tensor(g, "fc.bias", {3}, 3);
  set_ints(add_node(g, "Conv", "conv", {"x", "conv.weight", "conv.bias"}, "c"), "pads", {1, 1, 1, 1});
  add_node(g, "Relu", "relu", {"c"}, "r");
  add_node(g, "GlobalAveragePool", "pool", {"r"}, "p");
  add_node(g, "Flatten", "flatten", {"p"}, "f");
  auto& gemm = add_node(g, "Gemm", "fc", {"f", "fc.weight", "fc.bias"}, "y");
  auto* a = gemm.add_attribute();
  a->set_name("transB");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(1);
  g.add_output()->set_name("y");
  return m;
}

// The one-line error parse_onnx gives for `m` (or for `bytes` when given).
std::string refusal(const onnx::ModelProto& m, const std::string& bytes = {}) {
  const std::string b = bytes.empty() ? m.SerializeAsString() : bytes;
  const std::string msg = error_message([&] { (void)parse_onnx(b.data(), b.size(), "bad.onnx"); });
  EXPECT_FALSE(contains(msg, "\n")) << msg;
  EXPECT_TRUE(contains(msg, "'bad.onnx'")) << msg;  // "onnx 'bad.onnx'", or the builder's "model file 'bad.onnx'"
  return msg;
}

TEST(Onnx, ReadsASmallGraphIntoLayersWithItsWeights) {
  const std::string bytes = small_model().SerializeAsString();
  OnnxModel m = parse_onnx(bytes.data(), bytes.size(), "small.onnx");
  EXPECT_EQ(m.opset, 13);
  EXPECT_EQ(m.file.spec.input, (Shape{1, 8, 8}));
  EXPECT_EQ(m.file.spec.num_classes, 3);
  ASSERT_EQ(m.file.model.size(), 5u);
  EXPECT_EQ(m.file.model.layers()[0].first, "conv");
  EXPECT_EQ(m.file.model.layers()[4].first, "fc");
  EXPECT_FALSE(m.file.model.is_graph());  // a chain needs no named inputs
  EXPECT_EQ(m.weights.size(), 4u);
  Context ctx(Device::cpu());
  m.file.model.build(ctx, 0);
  load_onnx_weights(m, ctx, m.file.model);
  // The weights are the file's: conv.weight[0] = 0.01 * 0 - 0.05.
  EXPECT_FLOAT_EQ(m.file.model.parameters()[0].parameter->value.to_vector(ctx)[0], -0.05f);
  // Hand-computed: an all-zero image gives relu(conv bias) pooled, then fc.
  Tensor x = Tensor::zeros(Shape{1, 1, 8, 8}, ctx);
  const std::vector<float> y = m.file.model.forward(ctx, x, false).to_vector(ctx);
  // conv.bias is {-0.05, -0.04, -0.03, -0.02}: all negative, so relu gives 0 and fc gives its bias.
  const float fb[3] = {-0.05f, -0.04f, -0.03f};
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(y[static_cast<std::size_t>(k)], fb[k], 1e-6f);
}

// The fuzz seed written by onnx.helper: Pad folded into the Conv, BatchNormalization, MaxPool, a
// self-Add, Concat, AveragePool, Reshape to [0, -1], MatMul + Add as one linear layer, a final
// Softmax left out; opset 11.
TEST(Onnx, FoldsPadMatMulBiasAndTheFinalSoftmax) {
  OnnxModel m = read_onnx(testing::source_dir() + "/tests/fuzz/corpus/onnx/graph.onnx");
  EXPECT_EQ(m.opset, 11);
  EXPECT_TRUE(contains(m.file.spec.description, "its final Softmax left out: outputs are logits"));
  const auto& layers = m.file.model.layers();
  ASSERT_EQ(layers.size(), 8u);  // conv, bn, maxpool, add, concat, avgpool, flatten, linear
  EXPECT_TRUE(contains(layers[0].second->describe(), "padding=1")) << layers[0].second->describe();
  EXPECT_EQ(layers[7].second->describe(), "Linear(in_features=32, out_features=3)");
  EXPECT_EQ(m.file.model.input_names(4), (std::vector<std::string>{layers[3].first, layers[2].first}));
  EXPECT_EQ(m.file.spec.num_classes, 3);
}

TEST(Onnx, RefusesATruncatedFile) {
  const std::string bytes = small_model().SerializeAsString();
  EXPECT_TRUE(contains(refusal({}, bytes.substr(0, bytes.size() / 2)), "not a valid ONNX ModelProto"));
  EXPECT_TRUE(contains(refusal({}, bytes.substr(0, bytes.size() - 3)), "not a valid ONNX ModelProto"));
}

TEST(Onnx, RefusesACyclicGraph) {
  onnx::ModelProto m = small_model();
  auto& g = *m.mutable_graph();
  // relu reads what flatten computes: conv -> relu -> pool -> flatten -> relu.
  g.mutable_node(1)->set_input(0, "f");
  const std::string msg = refusal(m);
  EXPECT_TRUE(contains(msg, "cycle through node 1 ('relu', Relu)")) << msg;
}

TEST(Onnx, RefusesAMissingInitializer) {
  onnx::ModelProto m = small_model();
  m.mutable_graph()->mutable_initializer()->DeleteSubrange(0, 1);  // conv.weight
  const std::string msg = refusal(m);
  EXPECT_TRUE(contains(msg, "node 0 ('conv', Conv, opset 13)")) << msg;
  EXPECT_TRUE(contains(msg, "the weight (input 1, 'conv.weight') must be an initializer")) << msg;
  EXPECT_TRUE(contains(msg, "missing initializer")) << msg;
}

TEST(Onnx, RefusesWrongDims) {
  {  // the bias does not fit the convolution
    onnx::ModelProto m = small_model();
    auto* b = m.mutable_graph()->mutable_initializer(1);
    b->set_dims(0, 5);
    b->set_raw_data(std::string(20, '\0'));
    EXPECT_TRUE(contains(refusal(m), "the bias is [5], expected [4]"));
  }
  {  // dims that the data does not hold
    onnx::ModelProto m = small_model();
    m.mutable_graph()->mutable_initializer(0)->set_dims(0, 5);
    const std::string msg = refusal(m);
    EXPECT_TRUE(contains(msg,
                         "initializer 'conv.weight': dims 5x1x3x3 claim 45 floats (180 bytes) but the tensor "
                         "holds 144 bytes"))
        << msg;
  }
  {  // the linear layer's weight does not fit the features flowing in
    onnx::ModelProto m = small_model();
    auto* w = m.mutable_graph()->mutable_initializer(2);
    w->set_dims(1, 5);
    w->set_raw_data(std::string(60, '\0'));
    const std::string msg = refusal(m);
    EXPECT_TRUE(contains(msg, "'in_features' is 5 but its input [N,4] has 4")) << msg;
  }
}

TEST(Onnx, RefusesATensorClaimingTwoGigabytesWithoutAllocatingIt) {
  onnx::ModelProto m = small_model();
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->clear_dims();
  for (std::int64_t d : {std::int64_t{1} << 27, std::int64_t{4}}) w->add_dims(d);  // 2^29 floats: 2 GiB
  const std::string msg = refusal(m);
  EXPECT_TRUE(contains(msg, "claim 536870912 floats (2147483648 bytes) but the tensor holds 144 bytes")) << msg;
  // Dims multiplying past 2^31 elements are refused before any product overflows.
  w->clear_dims();
  for (int i = 0; i < 3; ++i) w->add_dims(std::int64_t{1} << 40);
  EXPECT_TRUE(contains(refusal(m), "over 2^31 elements"));
}

TEST(Onnx, RefusesAnUnknownOpset) {
  EXPECT_TRUE(contains(refusal(small_model(9)), "opset 9 of the default domain; cudl reads opsets 11 to 17"));
  EXPECT_TRUE(contains(refusal(small_model(99)), "opset 99"));
  onnx::ModelProto m = small_model();
  m.mutable_opset_import(0)->set_domain("com.example");
  EXPECT_TRUE(contains(refusal(m), "imports no opset of the default ONNX domain"));
}

TEST(Onnx, RefusesAnUnsupportedOperatorBeforeAnyWork) {
  onnx::ModelProto m = small_model();
  // The last node is unsupported: it is named although every node before it would translate.
  add_node(*m.mutable_graph(), "Shape", "/shape/Shape", {"y"}, "s");
  const std::string msg = refusal(m);
  EXPECT_TRUE(contains(msg, "node 5 ('/shape/Shape', Shape, opset 13): operator not supported (cudl reads Add,"))
      << msg;
}

TEST(Onnx, RefusesANodeWithoutItsFirstOutputOrInput) {
  {
    // The fuzzer's find: a MaxPool with no outputs read past the end of its (empty) output list.
    onnx::ModelProto m = small_model();
    auto* pool = m.mutable_graph()->mutable_node(2);
    pool->set_op_type("MaxPool");
    pool->clear_output();
    EXPECT_TRUE(contains(refusal(m), "node 2 ('pool', MaxPool, opset 13): has no output"));
  }
  {
    onnx::ModelProto m = small_model();
    auto* relu = m.mutable_graph()->mutable_node(1);
    relu->set_op_type("Identity");
    relu->clear_input();
    EXPECT_TRUE(contains(refusal(m), "node 1 ('relu', Identity, opset 13): input 0 is missing"));
  }
}

TEST(Onnx, RefusesABadGroupCountOtherClipsAndUnknownAttributes) {
  {
    onnx::ModelProto m = small_model();
    auto* a = m.mutable_graph()->mutable_node(0)->add_attribute();
    a->set_name("group");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(3);
    EXPECT_TRUE(contains(refusal(m), "node 0 ('conv', Conv, opset 13): group 3 does not divide the 4 output channels"));
  }
  {
    onnx::ModelProto m = small_model();
    auto& g = *m.mutable_graph();
    auto* lo = g.add_initializer();
    lo->set_name("lo");
    lo->set_data_type(onnx::TensorProto::FLOAT);
    lo->add_float_data(0.0f);
    auto* hi = g.add_initializer();
    hi->set_name("hi");
    hi->set_data_type(onnx::TensorProto::FLOAT);
    hi->add_float_data(3.0f);
    auto* relu = g.mutable_node(1);
    relu->set_op_type("Clip");
    relu->add_input("lo");
    relu->add_input("hi");
    EXPECT_TRUE(contains(refusal(m),
                         "node 1 ('relu', Clip, opset 13): Clip(0, 3) is not supported (only Clip(0) as a "
                         "ReLU and Clip(0, 6) as a ReLU6)"));
  }
  {
    onnx::ModelProto m = small_model();
    set_ints(*m.mutable_graph()->mutable_node(2), "bogus", {1});
    EXPECT_TRUE(
        contains(refusal(m), "node 2 ('pool', GlobalAveragePool, opset 13): attribute 'bogus' is not supported"));
  }
}

// A network of every layer kind the export writes, as a JSON model file.
Sequential every_layer_kind(ModelSpec& spec) {
  const std::string json = R"({"name": "kinds", "input": [3, 16, 16], "layers": [
    {"type": "normalize", "preset": "imagenet", "name": "norm"},
    {"type": "conv2d", "name": "c1", "out_channels": 6, "kernel_size": 3, "padding": 1},
    {"type": "batchnorm2d", "name": "bn"},
    {"type": "conv2d", "name": "dw", "out_channels": 6, "kernel_size": 3, "padding": 1, "groups": 6},
    {"type": "relu6", "name": "r6"},
    {"type": "conv2d", "name": "grouped", "out_channels": 6, "kernel_size": 1, "groups": 2},
    {"type": "leaky_relu", "name": "lr", "negative_slope": 0.2},
    {"type": "conv2d", "name": "c2", "out_channels": 6, "kernel_size": 1, "bias": false, "inputs": ["norm"]},
    {"type": "tanh", "name": "t"},
    {"type": "add", "name": "sum", "inputs": ["lr", "t"]},
    {"type": "concat", "name": "cat", "inputs": ["sum", "c1"]},
    {"type": "max_pool2d", "name": "mp", "kernel_size": 2},
    {"type": "avg_pool2d", "name": "ap", "kernel_size": 3, "stride": 1, "padding": 1},
    {"type": "sigmoid", "name": "s"},
    {"type": "global_avg_pool2d", "name": "gap"},
    {"type": "flatten", "name": "fl"},
    {"type": "dropout", "name": "drop", "p": 0.25},
    {"type": "linear", "name": "fc", "out_features": 5},
    {"type": "relu", "name": "r"}
  ]})";
  ModelFile f = parse_model_json(json, "kinds.json");
  spec = f.spec;
  return std::move(f.model);
}

// Exports the built `model`, checks it with libonnx's checker, imports it and compares outputs.
void expect_round_trip(Sequential& model, const ModelSpec& spec, Context& ctx, std::int64_t batch) {
  const std::string bytes = model_to_onnx(ctx, model, spec);
  check_onnx(bytes, spec.name);
  OnnxModel back = parse_onnx(bytes.data(), bytes.size(), spec.name + ".onnx");
  EXPECT_EQ(back.file.spec.input, spec.input);
  back.file.model.build(ctx, 123);
  load_onnx_weights(back, ctx, back.file.model);
  EXPECT_EQ(back.file.model.parameter_count(), model.parameter_count());
  const Shape in{batch, spec.input[0], spec.input[1], spec.input[2]};
  Tensor x = Tensor::from_host(testing::random_values(in.numel(), 7, 0.0f, 1.0f), in, ctx);
  const std::vector<float> a = model.forward(ctx, x, false).to_vector(ctx);
  const std::vector<float> b = back.file.model.forward(ctx, x, false).to_vector(ctx);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << spec.name << " output " << i;
}

TEST(Onnx, ExportPassesTheCheckerAndImportsToIdenticalOutputs) {
  Context ctx(Device::cpu());
  ModelSpec spec;
  Sequential kinds = every_layer_kind(spec);
  kinds.build(ctx, 5);
  expect_round_trip(kinds, spec, ctx, 2);
  Sequential resnet = make_model("resnet8_mnist");
  resnet.build(ctx, 6);
  expect_round_trip(resnet, model_spec("resnet8_mnist"), ctx, 3);
}

// A layer ONNX export has no spelling for.
class Mystery final : public Layer {
 public:
  std::string type() const override { return "Mystery"; }
  Shape output_shape(const Shape& input) const override { return input; }
  Tensor forward(Context&, const Tensor& x, bool) override { return x; }
  Tensor backward(Context&, const Tensor& dy) override { return dy; }
};

TEST(Onnx, ExportRefusesALayerItCannotWriteNamingIt) {
  Context ctx(Device::cpu());
  Sequential m;
  m.add("conv", std::make_unique<ActivationLayer>(Activation::relu));
  m.add("odd", std::make_unique<Mystery>());
  m.build(ctx, 0);
  const std::string msg = error_message([&] { (void)model_to_onnx(ctx, m, ModelSpec{"m", Shape{1, 4, 4}, 0, ""}); });
  EXPECT_TRUE(contains(msg, "onnx export: layer 'odd' is a Mystery, which cudl cannot write as ONNX")) << msg;
}

TEST(Onnx, ExportPassesPythonsChecker) {
  if (std::system("/usr/bin/python3 -c 'import onnx' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "no python3-onnx for /usr/bin/python3 (apt-get install python3-onnx)";
  Context ctx(Device::cpu());
  ModelSpec spec;
  Sequential kinds = every_layer_kind(spec);
  kinds.build(ctx, 5);
  testing::TempDir dir;
  const std::string path = dir.file("kinds.onnx");
  export_onnx(path, ctx, kinds, spec);
  const std::string cmd =
      "/usr/bin/python3 -c 'import onnx, sys; m = onnx.load(sys.argv[1]); "
      "onnx.checker.check_model(m, full_check=True)' '" +
      path + "' > '" + dir.file("log") + "' 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << testing::slurp(dir.file("log"));
}

// classify takes an ONNX ImageNet model as it takes the zoo's: cudl's export of resnet18 (seed 0)
// prints what the zoo's resnet18 with the same weights prints. Its first layer normalises, so no
// ImageNet normalisation is added unless asked for (which then changes the probabilities).
TEST(Onnx, ClassifyTakesAnExportedImageNetModel) {
  testing::TempDir dir;
  const std::string image = "--image '" + testing::source_dir() + "/tests/data/chelsea.png' --top 3";
  const testing::CliRun e = testing::run_cli(dir, "summary --model resnet18 --export r18.onnx", 300);
  ASSERT_EQ(e.status, 0) << e.err;
  const testing::CliRun zoo = testing::run_cli(dir, "classify --model resnet18 --weights random:0 " + image, 300);
  ASSERT_EQ(zoo.status, 0) << zoo.err;
  const testing::CliRun onnx = testing::run_cli(dir, "classify --model r18.onnx " + image, 300);
  ASSERT_EQ(onnx.status, 0) << onnx.err;
  EXPECT_EQ(onnx.out, zoo.out);
  EXPECT_EQ(std::count(onnx.out.begin(), onnx.out.end(), '\n'), 3) << onnx.out;
  EXPECT_TRUE(contains(onnx.out, " - ")) << onnx.out;
  const testing::CliRun twice =
      testing::run_cli(dir, "classify --model r18.onnx --input-normalize imagenet " + image, 300);
  ASSERT_EQ(twice.status, 0) << twice.err;
  EXPECT_NE(twice.out, zoo.out);
}

// eval and train take an ONNX model as --model, and train --init-from takes one for a zoo model
// with the same layer names (cudl's export of it): every parameter and buffer loads.
TEST(Onnx, EvalAndTrainTakeAnOnnxModel) {
  testing::TempDir dir;
  {
    Context ctx(Device::cpu());
    std::filesystem::create_directories(dir.file("mnist"));
    testing::write_synthetic_mnist_dir(dir.file("mnist"), ctx, 64, 32);
  }
  ASSERT_EQ(testing::run_cli(dir, "summary --model resnet8_mnist --export r8.onnx", 120).status, 0);
  const std::string data = " --data mnist --dataset mnist --device cpu";
  const testing::CliRun eval = testing::run_cli(dir, "eval --model r8.onnx" + data, 120);
  ASSERT_EQ(eval.status, 0) << eval.err;
  EXPECT_TRUE(contains(eval.out, "r8.onnx on mnist test split (32 images)")) << eval.out;
  Sequential zoo = make_model("resnet8_mnist");
  const std::size_t tensors = zoo.parameters().size() + zoo.buffers().size();
  const testing::CliRun init =
      testing::run_cli(dir, "train --model resnet8_mnist --init-from r8.onnx --epochs 1 --batch-size 32" + data, 300);
  ASSERT_EQ(init.status, 0) << init.err;
  EXPECT_TRUE(contains(init.out, fmt::format("--init-from: loaded {} tensors from 'r8.onnx'", tensors))) << init.out;
  EXPECT_FALSE(contains(init.out, "unused in the file")) << init.out;
  const testing::CliRun train =
      testing::run_cli(dir, "train --model r8.onnx --epochs 1 --batch-size 32 --save t.safetensors" + data, 300);
  ASSERT_EQ(train.status, 0) << train.err;
  // The checkpoint records the ONNX model: eval needs no --model.
  const testing::CliRun again = testing::run_cli(dir, "eval --weights t.safetensors" + data, 120);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_TRUE(contains(again.out, "r8.onnx on mnist test split")) << again.out;
}

#endif  // CUDL_TEST_ONNX

TEST(Onnx, WithoutOnnxAModelIsRefusedInOneLine) {
  if (onnx_available()) GTEST_SKIP() << "this build has ONNX (the test is for builds without libonnx)";
  const std::string msg = error_message([] { (void)read_onnx("model.onnx"); });
  EXPECT_TRUE(contains(msg, "cudl was built without ONNX support")) << msg;
}

}  // namespace
}  // namespace cudl
