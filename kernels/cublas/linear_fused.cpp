// CudaBackend: the fused Linear + bias + ReLU (Backend::linear_bias_relu_forward) as one cuBLASLt
// matmul with the CUBLASLT_EPILOGUE_RELU_BIAS epilogue: y = relu(x wᵀ + bias) written once, instead
// of a GEMM, a bias pass and a ReLU pass over y. CPU twin: kernels/cpu/linear_fused.cpp.
//
// Layout: as kernels/cublas/gemm.cpp, the row-major product is computed column-major as its
// transpose, yᵀ [out, N] = op_T(w) xᵀ: A is w read as [in, out] column-major and transposed, B is x
// read as [in, N], D is y read as [out, N]. The epilogue's bias runs along D's rows, i.e. y's
// columns: exactly Linear's bias [out].
// Precision: f32 compute (CUBLAS_COMPUTE_32F; _FAST_TF32 for f32 data when the context allows
// TF32, as the handle's math mode lets cublasSgemm), bf16/f16 A, B and D with f32 accumulation and
// y rounded once, the bias f32 (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE) as bias_add's.
// Fallback: when cuBLASLt's heuristic offers no algorithm (a dtype mix, an alignment or a shape it
// does not take, or a bias less than 16-byte aligned: find_plan) or the call answers NOT_SUPPORTED,
// the unfused gemm, bias_add and ReLU run instead: never a wrong result, only a slower one. The refusal is remembered
// per shape (and pointer alignment) so cuBLASLt is not asked again each call. NaN: the ReLU kernels map it to 0; that
// the epilogue does the same is what FusionLinearCudaVsCpu checks on a GPU (not yet run). Determinism: one algorithm
// per shape, chosen once; cuBLASLt's in-place split-K reduction is sequenced, so results repeat bit for bit on one GPU
// model and toolkit, as cuBLAS's GEMMs do.
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl {

using cuda_detail::to_int;

namespace {

constexpr std::string_view kOp = "linear_bias_relu_forward";
// cuBLASLt's scratch, from the context's pool per call (the pool keeps it cached): enough for its
// split-K kernels on Hopper at the sizes networks use.
constexpr std::size_t kWorkspaceBytes = std::size_t{4} << 20;

// RAII over the three descriptor kinds cuBLASLt needs (each destroyed by its own function).
template <typename Handle, cublasStatus_t (*destroy)(Handle)>
class LtObject {
 public:
  LtObject() = default;
  ~LtObject() {
    if (h_ != nullptr) destroy(h_);
  }
  LtObject(const LtObject&) = delete;
  LtObject& operator=(const LtObject&) = delete;
  Handle* out() { return &h_; }
  Handle get() const { return h_; }

 private:
  Handle h_ = nullptr;
};
using MatmulDesc = LtObject<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = LtObject<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference = LtObject<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// The largest power of two (up to 256) dividing the address: cuBLASLt's heuristic assumes 256-byte
// aligned operands unless told otherwise, and a weight or bias view into the parameter block may
// sit at any float offset.
std::uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

struct Plan {
  bool fused = false;
  cublasLtMatmulAlgo_t algo{};
};

struct Plans {
  std::mutex mutex;
  std::map<std::string, Plan> by_key;
};
Plans& plans() {
  static Plans p;
  return p;
}

template <typename T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v, const Tensor& x,
              const Tensor& w) {
  CUDL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), "{} x={} w={}", kOp, x.shape(), w.shape());
}

// The descriptors of one call; `bias` may be undefined (then the plain RELU epilogue).
struct Call {
  MatmulDesc op;
  Layout a, b, d;
};

void describe(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, Call& c) {
  const std::int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  const bool tf32 = x.dtype() == DType::f32 && ctx.math_mode() == MathMode::tf32;
  CUDL_CUBLAS_CHECK(
      cublasLtMatmulDescCreate(c.op.out(), tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F),
      "{} x={} w={}", kOp, x.shape(), w.shape());
  set_desc(c.op.get(), CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T, x, w);
  set_desc(c.op.get(), CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N, x, w);
  set_desc(c.op.get(), CUBLASLT_MATMUL_DESC_EPILOGUE,
           bias.defined() ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU, x, w);
  if (bias.defined()) {
    set_desc(c.op.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias.raw(), x, w);
    set_desc(c.op.get(), CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<std::int32_t>(CUDA_R_32F), x, w);
  }
  const cudaDataType_t t = cuda_detail::cublas_type(x.dtype());
  const auto rows = [&](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  const auto ld = [&](std::int64_t v, const Shape& s) { return static_cast<std::int64_t>(to_int(kOp, "dim", v, s)); };
  CUDL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(c.a.out(), t, rows(in), rows(out), ld(in, w.shape())), "{} w={}", kOp,
                    w.shape());
  CUDL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(c.b.out(), t, rows(in), rows(n), ld(in, x.shape())), "{} x={}", kOp,
                    x.shape());
  CUDL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(c.d.out(), t, rows(out), rows(n), ld(out, w.shape())), "{} y=[{},{}]",
                    kOp, n, out);
}

std::string plan_key(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  return fmt::format("x={} w={} {} bias={} align={},{},{},{} {} device={}", x.shape(), w.shape(), dtype_name(x.dtype()),
                     bias.defined(), alignment_of(x.raw()), alignment_of(w.raw()),
                     bias.defined() ? alignment_of(bias.raw()) : 0, alignment_of(y.raw()),
                     ctx.math_mode() == MathMode::strict_fp32 ? "fp32" : "tf32", ctx.device().str());
}

// The bias alignment the epilogue is given. A matmul preference states A-D's alignments, but the
// bias pointer has none to say it with; the epilogue kernels read the bias vector in wide loads, and
// other cuBLASLt users have met misaligned-address faults below 16 bytes (Marian NMT's gpu/prod.cpp
// keeps its bias epilogue for 16-byte aligned biases). A Linear's bias is a view into the parameter
// block at any float offset, so a bias less aligned than this runs unfused: slower, never a fault.
constexpr std::uint32_t kBiasAlignment = 16;

// cuBLASLt's first choice for the call, or none when it has no algorithm for it.
Plan find_plan(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const Call& c) {
  if (bias.defined() && alignment_of(bias.raw()) < kBiasAlignment) return {};
  Preference pref;
  CUDL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(pref.out()), "{}", kOp);
  const auto set = [&](cublasLtMatmulPreferenceAttributes_t attr, auto v) {
    CUDL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &v, sizeof(v)), "{}", kOp);
  };
  set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<std::uint64_t>(kWorkspaceBytes));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(w.raw()));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(x.raw()));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(y.raw()));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(y.raw()));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(cuda_resources(ctx).cublaslt, c.op.get(), c.a.get(), c.b.get(), c.d.get(),
                                     c.d.get(), pref.get(), 1, &result, &found);
  // NOT_SUPPORTED is cuBLASLt saying no: the caller runs the unfused ops.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || found == 0) return {};
  CUDL_CUBLAS_CHECK(status, "cublasLtMatmulAlgoGetHeuristic {} x={} w={} bias={}", kOp, x.shape(), w.shape(),
                    bias.defined());
  return {true, result.algo};
}

}  // namespace

void CudaBackend::do_linear_bias_relu_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                                              Tensor& y) {
  if (y.numel() == 0) return;
  const auto unfused = [&] {
    do_gemm(ctx, false, true, 1.0f, x, w, 0.0f, y);
    if (bias.defined()) do_bias_add(ctx, y, bias);
    do_activation_forward(ctx, Activation::relu, 0.0f, y, y);  // elementwise: in place is safe
  };
  // An empty inner dimension leaves relu(bias): gemm's k = 0 path gives it without asking cuBLASLt.
  if (x.dim(1) == 0) return unfused();

  Call c;
  describe(ctx, x, w, bias, c);
  const std::string key = plan_key(ctx, x, w, bias, y);
  std::optional<Plan> plan;
  {
    const std::lock_guard lock(plans().mutex);
    if (auto it = plans().by_key.find(key); it != plans().by_key.end()) plan = it->second;
  }
  if (!plan) {
    plan = find_plan(ctx, x, w, bias, y, c);
    const std::lock_guard lock(plans().mutex);
    plans().by_key.insert_or_assign(key, *plan);
  }
  if (!plan->fused) return unfused();

  CudaResources& r = cuda_resources(ctx);
  std::optional<Workspace> workspace;
  try {
    workspace.emplace(ctx, kWorkspaceBytes);
  } catch (const OutOfMemoryError&) {
    return unfused();  // no room for cuBLASLt's scratch: the unfused ops need none
  }
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status =
      cublasLtMatmul(r.cublaslt, c.op.get(), &alpha, w.raw(), c.a.get(), x.raw(), c.b.get(), &beta, y.raw(), c.d.get(),
                     y.raw(), c.d.get(), &plan->algo, workspace->data(), workspace->bytes(), r.stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    // The heuristic offered an algorithm the call then refuses (reported before anything is
    // launched): remember that, and give the result the unfused way.
    {
      const std::lock_guard lock(plans().mutex);
      plans().by_key.insert_or_assign(key, Plan{});
    }
    return unfused();
  }
  CUDL_CUBLAS_CHECK(status, "cublasLtMatmul {} x={} w={} y={} {} bias={}", kOp, x.shape(), w.shape(), y.shape(),
                    dtype_name(x.dtype()), bias.defined());
}

}  // namespace cudl
