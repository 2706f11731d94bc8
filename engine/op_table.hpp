#pragma once
// The op table (after ggml's test-backend-ops): each Backend op described once — the shapes it is
// tested at, the dtypes the CUDA backend takes, its tolerance class against the CPU, whether it
// has a finite-difference gradient check (or why not), and the cases `cudl bench` times. The CUDA-
// vs-CPU tests, the gradient checks and the bench read it instead of keeping lists of their own,
// and tests/test_op_table.cpp checks that every op here is benched, checked CUDA-vs-CPU and
// gradient-checked, or says why not.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cudl/engine/dtype.hpp"
#include "cudl/engine/shape.hpp"

namespace cudl {

// How close the CUDA backend must come to the CPU's result in f32: |cuda - cpu| <= atol + rtol |cpu|.
enum class ToleranceClass {
  exact,        // bit-identical (or the same NaN): selections, copies, seeded masks
  elementwise,  // a few float roundings apart (expf/tanhf/sqrtf ulps, FMA contraction)
  accumulated,  // GEMM, convolution, reductions, losses: the summation order differs
  normal,       // Box-Muller in double on both sides, rounded to float
  double_sum,   // reductions accumulated in double on both sides, rounded once
};
struct OpTolerance {
  float atol, rtol;
};
OpTolerance op_tolerance(ToleranceClass c);

// The sizes `cudl bench` times an op at: each entry a list of whole numbers (gemm: M, N, K;
// conv2d: N, C, H, W, K, C/G, R, S with G = C / (C/G) groups; the others the tensor's dimensions).
using BenchDims = std::vector<std::int64_t>;

struct OpSpec {
  std::string name;                // the table's name, also the coverage key: "conv2d"
  std::vector<std::string> calls;  // the Backend methods it stands for
  std::vector<Shape> shapes;       // the shapes the CUDA-vs-CPU test runs it at (where it is shape-driven)
  std::vector<DType> dtypes;       // what the CUDA backend takes (f32 always; bf16/f16 checked in the half suite)
  ToleranceClass tolerance;
  std::string no_gradient;  // empty: finite-difference checked; otherwise why not
  std::string no_cuda;      // empty: checked CUDA against CPU; otherwise why not
  // The bench: the case names it reports (`--ops`), and its sizes under --sizes small and vgg.
  std::vector<std::string> bench_ops;
  std::vector<BenchDims> bench_small, bench_vgg;
  std::string no_bench;  // why it has no bench case (when bench_ops is empty)
};

// Every op, in the order the bench reports them.
const std::vector<OpSpec>& op_table();
// The op of that name; throws naming the table's ops when there is none.
const OpSpec& op_spec(std::string_view name);
// The table op whose bench_ops holds `bench_op` ("conv2d_bwd_data" -> conv2d), nullptr if none.
const OpSpec* op_for_bench(std::string_view bench_op);
// "gemm, conv2d_fwd, ...": every bench op name, for messages.
std::string bench_op_names();

}  // namespace cudl
