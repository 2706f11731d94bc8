// The op table (engine/op_table.hpp) against the checks that register with it
// (tests/op_coverage.hpp): every op is checked CUDA-vs-CPU, gradient-checked and benched, or its
// entry says why not; no check names an op the table lacks.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "cudl/engine/op_table.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::op_coverage;
using cudl::testing::OpCheck;

bool has(OpCheck check, const std::string& op) { return op_coverage()[check].count(op) > 0; }

bool takes_half(const OpSpec& op) {
  for (DType t : op.dtypes)
    if (t == DType::bf16 || t == DType::f16) return true;
  return false;
}

TEST(OpTable, EveryOpIsCheckedCudaVsCpuOrSaysWhyNot) {
  for (const OpSpec& op : op_table()) {
    if (op.no_cuda.empty())
      EXPECT_TRUE(has(OpCheck::cuda_vs_cpu, op.name)) << op.name << ": no CUDA-vs-CPU test registers it";
    else
      EXPECT_FALSE(has(OpCheck::cuda_vs_cpu, op.name)) << op.name << " is checked: drop its no_cuda reason";
    EXPECT_EQ(takes_half(op), has(OpCheck::cuda_vs_cpu_half, op.name))
        << op.name << ": the dtypes in the table and the half suite's checks disagree";
  }
}

TEST(OpTable, EveryOpIsGradientCheckedOrSaysWhyNot) {
  for (const OpSpec& op : op_table()) {
    if (op.no_gradient.empty())
      EXPECT_TRUE(has(OpCheck::gradient, op.name)) << op.name << ": no gradient check registers it";
    else
      EXPECT_FALSE(has(OpCheck::gradient, op.name)) << op.name << " is gradient-checked: drop its reason";
  }
}

TEST(OpTable, EveryOpIsBenchedOrSaysWhyNot) {
  std::set<std::string> bench_names;
  for (const OpSpec& op : op_table()) {
    EXPECT_NE(op.bench_ops.empty(), op.no_bench.empty()) << op.name << ": bench cases or a reason, exactly one";
    if (op.bench_ops.empty()) continue;
    EXPECT_FALSE(op.bench_small.empty()) << op.name << ": no --sizes small case";
    EXPECT_FALSE(op.bench_vgg.empty()) << op.name << ": no --sizes vgg case";
    for (const auto& b : op.bench_ops) {
      EXPECT_TRUE(bench_names.insert(b).second) << b << " is benched by two ops";
      EXPECT_EQ(op_for_bench(b), &op) << b;
    }
  }
  // The bench reports the cases it ran before the table existed, in the same order.
  EXPECT_EQ(bench_op_names(),
            "gemm, conv2d_fwd, conv2d_bwd_data, conv2d_bwd_filter, relu_fwd, maxpool2d_fwd, gram_fwd, "
            "softmax_xent_fwd, adam_step, sum");
  std::size_t small = 0, vgg = 0;
  for (const OpSpec& op : op_table()) {
    small += op.bench_small.size() * op.bench_ops.size();
    vgg += op.bench_vgg.size() * op.bench_ops.size();
  }
  // gemm, 3 conv passes at one layer and at one depthwise layer, relu, maxpool, gram, softmax-xent, adam, sum
  EXPECT_EQ(small, 13u);
  EXPECT_EQ(vgg, 19u);  // the same with the convolutions at three VGG19 layers and MobileNetV2's depthwise one
}

TEST(OpTable, ChecksNameOnlyTableOpsAndNamesAreUnique) {
  std::set<std::string> names;
  for (const OpSpec& op : op_table()) {
    EXPECT_TRUE(names.insert(op.name).second) << op.name << " is in the table twice";
    EXPECT_FALSE(op.calls.empty()) << op.name;
    EXPECT_FALSE(op.dtypes.empty()) << op.name;
  }
  for (const auto& [check, ops] : op_coverage())
    for (const auto& op : ops) EXPECT_TRUE(names.count(op)) << "a check registers '" << op << "', not in the table";
  EXPECT_GT(op_coverage()[OpCheck::cuda_vs_cpu].size(), 30u);  // the registrations ran
  cudl::testing::expect_error([] { (void)op_spec("relu6"); }, {"no op 'relu6'", "gemm, conv2d"});
}

TEST(OpTable, ToleranceClassesAreTheTestsStrictest) {
  EXPECT_EQ(op_tolerance(ToleranceClass::exact).atol, 0.0f);
  EXPECT_EQ(op_tolerance(ToleranceClass::exact).rtol, 0.0f);
  EXPECT_EQ(op_tolerance(ToleranceClass::elementwise).atol, 1e-5f);
  EXPECT_EQ(op_tolerance(ToleranceClass::elementwise).rtol, 1e-4f);
  EXPECT_EQ(op_tolerance(ToleranceClass::accumulated).atol, 1e-4f);
  EXPECT_EQ(op_tolerance(ToleranceClass::accumulated).rtol, 1e-3f);
  EXPECT_EQ(op_tolerance(ToleranceClass::normal).rtol, 1e-5f);
  EXPECT_EQ(op_tolerance(ToleranceClass::double_sum).rtol, 1e-6f);
}

}  // namespace
