// CudaBackend: 2-D convolution (cross-correlation; f32, bf16 or f16 data with float compute) through
// the legacy cuDNN API. The CPU twin is kernels/cpu/conv.cpp. Arguments were checked by Backend's
// public methods (engine/backend.cpp); only cuDNN's own limits are checked here
// (kernels/cudnn/descriptors.hpp).
//
// Algorithm policy, per direction and call (shapes, parameters, math mode, determinism):
// - Candidates: cuDNN's heuristics (cudnnGet*Algorithm_v7) give a ranked list; keep, in its order,
//   the entries that (1) report CUDNN_STATUS_SUCCESS, (2) use an allowed math type, (3) are
//   deterministic when ctx.deterministic() is on (the default), and (4) whose workspace cuDNN
//   confirms for the math type they will run with and is at most 1 GiB. Last comes the direction's
//   always-available deterministic algorithm with FMA math: IMPLICIT_GEMM forward, ALGO_1 for
//   backward data and filter (their ALGO_0, and filter's ALGO_3, add with atomics, so their sums
//   change from run to run).
// - Math: strict fp32 allows CUDNN_FMA_MATH only and runs every candidate with FMA math on the
//   descriptor (CUDNN_DEFAULT_MATH may use TF32 tensor cores on Ampere and later, and heuristics
//   report DEFAULT_MATH for some plain FMA kernels). TF32 mode allows everything except
//   CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (which may round to fp16). Determinism is the
//   algorithm's, whatever its math type, so TF32 mode keeps the deterministic tensor-op kernels.
//   Half data (bf16, f16; the math mode does not apply) asks with CUDNN_TENSOR_OP_MATH and runs
//   each candidate with the math type cuDNN reports for it (ALLOW_CONVERSION excluded); its
//   fallback runs with TENSOR_OP_MATH, which permits tensor cores without requiring them.
// - Half filter gradients into an f32 dw (a master-weight gradient, engine/backend.hpp): cuDNN
//   wants dw in x's data type, so the gradient goes into a half scratch (beta 0) and one kernel
//   then writes it into dw (launch_cast) or adds it (launch_cast_add, accumulate=true).
// - Run: the first candidate whose workspace can be allocated and whose cuDNN call succeeds is
//   cached in CudaResources::conv_algorithms and tried first next time. When allocating its
//   workspace runs out of memory, or cuDNN says the algorithm cannot run this call
//   (NOT_SUPPORTED*) or its kernels failed (EXECUTION_FAILED* and the launch/allocation kinds of
//   INTERNAL_ERROR; retried only when the call overwrites its output, since a failed run may have
//   written part of it), the entry is dropped and the next candidate runs; the ranked list is
//   fetched again only then. A fallback chosen under memory pressure stays cached (slower, but
//   it runs). Other failures (BAD_PARAM...) are thrown at once. When nothing runs, the error
//   names the op, the shapes and every algorithm tried; it is an OutOfMemoryError if any attempt
//   lacked memory (so callers can retry smaller).
// - Measured search (ctx.conv_search() == measured, as PyTorch's cudnn.benchmark): before the
//   first run of a shape, every candidate above runs once to warm up and then is timed
//   (kTimedRuns runs, CUDA events) on the call's own inputs, writing into a scratch output so
//   that an accumulating call's output is untouched; they are then tried fastest first. A
//   candidate that fails while being timed goes last, where the run policy meets it again.
// - Grouped convolutions: the group count is on the convolution descriptor, the filter is
//   [K, C/G, R, S] as stored (kernels/cudnn/descriptors.hpp). Nothing else changes: an algorithm
//   that cannot run the grouping reports NOT_SUPPORTED (in the heuristics' status or at run time)
//   and the next candidate runs, as for any other call.
// - channels_last: x and y (dx, dy) are each described in their own format (NCHW, or NHWC when
//   channels_last; CudaBackend takes the four convolution ops in any mix), the filter stays KCRS
//   (kernels/cudnn/descriptors.hpp says why). Hopper's half-precision tensor-core kernels read and
//   write NHWC; with NCHW data cuDNN may transpose around them itself. Should cuDNN refuse a mix
//   with every algorithm (NOT_SUPPORTED, none short of memory), the call runs on NCHW copies
//   instead, and that answer is cached under the call's key: slower, never a failure.
// - Cache key: direction, data type, the data layouts, shapes, parameters (groups included), math
//   mode, determinism and search (the cache is cleared when the math mode changes;
//   Context::set_deterministic does not clear it).
// - On-disk cache (measured search only; engine/io/conv_algo_cache.hpp): the search's winner is
//   also written to $XDG_CACHE_HOME/cudl/conv_algorithms.txt (or ~/.cache/cudl), keyed by GPU name,
//   compute capability and cuDNN version (the file's environment line) and by direction, dtype,
//   shapes, parameters, groups, layout, math mode and determinism (each entry's key). A later run
//   tries that algorithm first instead of searching; the entry is checked before use (a known
//   algorithm, an allowed math type, deterministic when asked, a workspace cuDNN confirms for it)
//   and then goes through the run policy like any candidate, so a stale or wrong entry costs a
//   search, never a wrong result.
// - The search's scratch (every candidate's workspace, up to 1 GiB each, and the timed output)
//   goes back to the device once the search is done (Allocator::empty_cache): otherwise the pool
//   keeps the largest workspace reserved for the rest of the run.
#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "cudl/engine/device.hpp"
#include "cudl/engine/format_route.hpp"
#include "cudl/engine/io/conv_algo_cache.hpp"
#include "cudl/engine/timer.hpp"
#include "cudl/kernels/cuda/cuda_backend.hpp"
#include "cudl/kernels/cuda/launch.hpp"
#include "cudl/kernels/cudnn/descriptors.hpp"

namespace cudl {

using cudnn_detail::ConvolutionDescriptor;
using cudnn_detail::FilterDescriptor;
using cudnn_detail::TensorDescriptor;

namespace {

// ---- the three directions differ only in their cuDNN entry points and names ----

struct Forward {
  static constexpr std::string_view name = "conv2d_forward";
  static constexpr const char* call = "cudnnConvolutionForward";
  static constexpr std::string_view x_name = "x", w_name = "w", y_name = "y";
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  using Algo = cudnnConvolutionFwdAlgo_t;
  static constexpr Algo fallback = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  static constexpr std::array<std::string_view, CUDNN_CONVOLUTION_FWD_ALGO_COUNT> algo_names = {
      "IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
};
struct BackwardData {
  static constexpr std::string_view name = "conv2d_backward_data";
  static constexpr const char* call = "cudnnConvolutionBackwardData";
  static constexpr std::string_view x_name = "dx", w_name = "w", y_name = "dy";
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  static constexpr Algo fallback = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  static constexpr std::array<std::string_view, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT> algo_names = {
      "ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
};
struct BackwardFilter {
  static constexpr std::string_view name = "conv2d_backward_filter";
  static constexpr const char* call = "cudnnConvolutionBackwardFilter";
  static constexpr std::string_view x_name = "x", w_name = "dw", y_name = "dy";
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  static constexpr Algo fallback = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  static constexpr std::array<std::string_view, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT> algo_names = {
      "ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
};

// Descriptors and shapes of one convolution call; x is the input image, y the output (for the
// backward directions, dx or dy).
struct ConvCall {
  Context& ctx;
  DType dtype;  // of x, w and y as cuDNN sees them (a half dw's scratch, not an f32 dw)
  const Shape& x_shape;
  const Shape& w_shape;
  const Shape& y_shape;
  const Conv2dParams& params;
  TensorDescriptor& x;
  FilterDescriptor& w;
  ConvolutionDescriptor& conv;
  TensorDescriptor& y;
  // How x and y (dx, dy) are stored: each NCHW or NHWC (channels_last), in any mix.
  MemoryFormat x_format = MemoryFormat::contiguous, y_format = MemoryFormat::contiguous;

  bool channels_last() const {
    return x_format == MemoryFormat::channels_last || y_format == MemoryFormat::channels_last;
  }
};

cudnnStatus_t heuristics(const ConvCall& c, Forward, int requested, int* returned, Forward::Perf* perf) {
  return cudnnGetConvolutionForwardAlgorithm_v7(cuda_resources(c.ctx).cudnn, c.x.get(), c.w.get(), c.conv.get(),
                                                c.y.get(), requested, returned, perf);
}
cudnnStatus_t heuristics(const ConvCall& c, BackwardData, int requested, int* returned, BackwardData::Perf* perf) {
  return cudnnGetConvolutionBackwardDataAlgorithm_v7(cuda_resources(c.ctx).cudnn, c.w.get(), c.y.get(), c.conv.get(),
                                                     c.x.get(), requested, returned, perf);
}
cudnnStatus_t heuristics(const ConvCall& c, BackwardFilter, int requested, int* returned, BackwardFilter::Perf* perf) {
  return cudnnGetConvolutionBackwardFilterAlgorithm_v7(cuda_resources(c.ctx).cudnn, c.x.get(), c.y.get(), c.conv.get(),
                                                       c.w.get(), requested, returned, perf);
}

cudnnStatus_t workspace_size(const ConvCall& c, Forward, Forward::Algo algo, std::size_t* bytes) {
  return cudnnGetConvolutionForwardWorkspaceSize(cuda_resources(c.ctx).cudnn, c.x.get(), c.w.get(), c.conv.get(),
                                                 c.y.get(), algo, bytes);
}
cudnnStatus_t workspace_size(const ConvCall& c, BackwardData, BackwardData::Algo algo, std::size_t* bytes) {
  return cudnnGetConvolutionBackwardDataWorkspaceSize(cuda_resources(c.ctx).cudnn, c.w.get(), c.y.get(), c.conv.get(),
                                                      c.x.get(), algo, bytes);
}
cudnnStatus_t workspace_size(const ConvCall& c, BackwardFilter, BackwardFilter::Algo algo, std::size_t* bytes) {
  return cudnnGetConvolutionBackwardFilterWorkspaceSize(cuda_resources(c.ctx).cudnn, c.x.get(), c.y.get(), c.conv.get(),
                                                        c.w.get(), algo, bytes);
}

// ---- policy pieces ----

// Algorithms that want more scratch than this (FFT variants on big images) are passed over.
constexpr std::size_t kMaxWorkspaceBytes = std::size_t{1} << 30;

// f32 data follows the context's math mode; half data has no fp32 mode to keep.
bool strict_fp32(const ConvCall& c) { return c.dtype == DType::f32 && c.ctx.math_mode() == MathMode::strict_fp32; }

bool math_allowed(cudnnMathType_t math, bool strict) {
  if (strict) return math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH;
  return math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

cudnnMathType_t execution_math(cudnnMathType_t candidate, bool strict) { return strict ? CUDNN_FMA_MATH : candidate; }

// The math type the heuristics are asked with, and the fallback's.
cudnnMathType_t query_math(const ConvCall& c) {
  if (c.dtype != DType::f32) return CUDNN_TENSOR_OP_MATH;
  return strict_fp32(c) ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}
cudnnMathType_t fallback_math(const ConvCall& c) {
  return c.dtype != DType::f32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
}

std::string_view mode_name(const ConvCall& c) {
  if (c.dtype != DType::f32) return dtype_name(c.dtype);
  return c.ctx.math_mode() == MathMode::strict_fp32 ? "strict fp32" : "tf32";
}

// A failure that another algorithm may not have (see the policy at the top). A run-time failure
// may have left part of the output written, which only an overwriting call can redo. With an NHWC
// tensor in the call, BAD_PARAM (returned before anything runs) counts as a refusal of the layouts
// too: cuDNN documents NOT_SUPPORTED for them, but this path has not yet met a GPU, and a call that
// every algorithm refuses still runs, on NCHW copies (run_convolution).
bool another_algorithm_may_work(cudnnStatus_t status, bool overwrites_output, bool channels_last) {
  if (CUDNN_STATUS_CATEGORY(status) == CUDNN_STATUS_NOT_SUPPORTED) return true;
  if (channels_last && CUDNN_STATUS_CATEGORY(status) == CUDNN_STATUS_BAD_PARAM) return true;
  const bool run_failure = CUDNN_STATUS_CATEGORY(status) == CUDNN_STATUS_EXECUTION_FAILED ||
                           status == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED ||
                           status == CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM;
  return run_failure && overwrites_output;
}

std::string_view math_name(cudnnMathType_t math) {
  switch (math) {
    case CUDNN_DEFAULT_MATH:
      return "DEFAULT_MATH";
    case CUDNN_TENSOR_OP_MATH:
      return "TENSOR_OP_MATH";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
      return "TENSOR_OP_MATH_ALLOW_CONVERSION";
    case CUDNN_FMA_MATH:
      return "FMA_MATH";
  }
  return "unknown math";
}

template <class Direction>
std::string algo_name(const ConvAlgorithm& a) {
  const auto index = static_cast<std::size_t>(a.algo);
  const std::string_view name = index < Direction::algo_names.size() ? Direction::algo_names[index] : "?";
  return fmt::format("{} ({}, {} workspace)", name, math_name(a.math), format_bytes(a.workspace_bytes));
}

// The call's shapes and parameters, for messages: "x=[..] w=[..] y=[..] pad=1x1 ... (strict fp32, deterministic)".
template <class Direction>
std::string describe_call(const ConvCall& c) {
  const Conv2dParams& p = c.params;
  return fmt::format("{}={} {}={} {}={} pad={}x{} stride={}x{} dilation={}x{}{} ({}, {}, {})", Direction::x_name,
                     c.x_shape, Direction::w_name, c.w_shape, Direction::y_name, c.y_shape, p.pad_h, p.pad_w,
                     p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                     p.groups == 1 ? std::string() : fmt::format(" groups={}", p.groups),
                     conv_algo_layout(c.x_format, c.y_format), mode_name(c),
                     c.ctx.deterministic() ? "deterministic" : "non-deterministic allowed");
}

std::string cache_key(std::string_view direction, const ConvCall& c) {
  const Conv2dParams& p = c.params;
  // groups is in the key although x and w imply it (C = w's C/G * G): the key says what it means.
  return fmt::format("{} {} {} x={} w={} y={} pad={},{} stride={},{} dilation={},{} groups={} {} {} {}", direction,
                     dtype_name(c.dtype), conv_algo_layout(c.x_format, c.y_format), c.x_shape, c.w_shape, c.y_shape,
                     p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.groups,
                     c.ctx.math_mode() == MathMode::strict_fp32 ? "fp32" : "tf32",
                     c.ctx.deterministic() ? "deterministic" : "any",
                     c.ctx.conv_search() == ConvSearch::measured ? "measured" : "heuristic");
}

// ---- the on-disk cache of measured choices ----

// One per device for the process, read when the device first searches.
ConvAlgoCache& disk_cache(const Context& ctx) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<ConvAlgoCache>> caches;
  const std::lock_guard lock(mutex);
  auto& slot = caches[ctx.device().index];
  if (!slot) {
    std::string gpu = "unknown GPU";
    int major = 0, minor = 0;
    // This device alone (cuda_devices() would create a context on every GPU, from every rank).
    if (const std::optional<CudaDeviceInfo> d = cuda_device(ctx.device().index))
      gpu = d->name, major = d->cc_major, minor = d->cc_minor;
    slot = std::make_unique<ConvAlgoCache>(default_conv_algo_cache_file(),
                                           conv_algo_environment(gpu, major, minor, cudnnGetVersion()));
  }
  return *slot;
}

template <class Direction>
std::string disk_key(const ConvCall& c) {
  const Conv2dParams& p = c.params;
  ConvAlgoKey k;
  k.direction = std::string(Direction::name);
  k.dtype = c.dtype;
  k.x = c.x_shape;
  k.w = c.w_shape;
  k.y = c.y_shape;
  k.pad_h = p.pad_h, k.pad_w = p.pad_w, k.stride_h = p.stride_h, k.stride_w = p.stride_w;
  k.dilation_h = p.dilation_h, k.dilation_w = p.dilation_w;
  k.groups = p.groups;
  k.layout = conv_algo_layout(c.x_format, c.y_format);
  k.math = c.dtype != DType::f32 ? std::string(dtype_name(c.dtype))
                                 : (c.ctx.math_mode() == MathMode::strict_fp32 ? "fp32" : "tf32");
  k.deterministic = c.ctx.deterministic();
  return conv_algo_key_text(k);
}

// The algorithms that add with atomics (see the policy at the top): never taken from the file
// for a deterministic run, whatever it says.
template <class Direction>
bool atomics(int algo) {
  if constexpr (std::is_same_v<Direction, BackwardData>) return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
  if constexpr (std::is_same_v<Direction, BackwardFilter>)
    return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
  return false;
}

// The file's choice for this call, checked as a candidate would be; nothing when there is none or
// it fails a check.
template <class Direction>
std::optional<ConvAlgorithm> from_disk(const ConvCall& c) {
  const std::optional<CachedConvAlgo> hit = disk_cache(c.ctx).find(disk_key<Direction>(c));
  if (!hit || hit->algo < 0 || static_cast<std::size_t>(hit->algo) >= Direction::algo_names.size()) return std::nullopt;
  const auto math = static_cast<cudnnMathType_t>(hit->math);
  const bool strict = strict_fp32(c);
  const bool known_math = math == CUDNN_DEFAULT_MATH || math == CUDNN_TENSOR_OP_MATH || math == CUDNN_FMA_MATH;
  if (!known_math || !math_allowed(math, strict) || (c.ctx.deterministic() && atomics<Direction>(hit->algo)))
    return std::nullopt;
  ConvAlgorithm a;
  a.algo = hit->algo;
  a.math = execution_math(math, strict);
  c.conv.set_math(a.math, Direction::name);
  const auto algo = static_cast<typename Direction::Algo>(hit->algo);
  if (workspace_size(c, Direction{}, algo, &a.workspace_bytes) != CUDNN_STATUS_SUCCESS ||
      a.workspace_bytes > kMaxWorkspaceBytes)
    return std::nullopt;
  return a;
}

// Appends one failed attempt to the "; "-separated list of them.
void note(std::string& failures, const std::string& failure) {
  if (!failures.empty()) failures += "; ";
  failures += failure;
}

bool same_algorithm(const ConvAlgorithm& a, const ConvAlgorithm& b) { return a.algo == b.algo && a.math == b.math; }

// The candidates in the order they are tried (see the policy at the top). A fallback that cuDNN
// cannot size is left out and noted in `failures`.
template <class Direction>
std::vector<ConvAlgorithm> ranked_candidates(const ConvCall& c, std::string& failures) {
  constexpr Direction dir{};
  const bool strict = strict_fp32(c);
  // Ask with the mode's math type on the descriptor: FMA restricts cuDNN to non-tensor-core kernels.
  c.conv.set_math(query_math(c), Direction::name);
  std::array<typename Direction::Perf, Direction::algo_names.size()> perf{};
  int returned = 0;
  const cudnnStatus_t asked = heuristics(c, dir, static_cast<int>(perf.size()), &returned, perf.data());
  if (asked != CUDNN_STATUS_SUCCESS) {
    // With an NHWC tensor, a refusal of the layouts: the fallback below may still take them, and
    // if nothing does, the call runs on NCHW copies (run_convolution).
    if (!c.channels_last())
      cuda_detail::throw_cudnn(asked, "cuDNN's algorithm heuristics (cudnnGet*Algorithm_v7)", __FILE__, __LINE__,
                               fmt::format("{} {}", Direction::name, describe_call<Direction>(c)));
    note(failures, fmt::format("cuDNN's heuristics: {}", cudnnGetErrorString(asked)));
    returned = 0;
  }

  std::vector<ConvAlgorithm> candidates;
  for (int i = 0; i < returned; ++i) {
    const auto& candidate = perf[static_cast<std::size_t>(i)];
    if (candidate.status != CUDNN_STATUS_SUCCESS || !math_allowed(candidate.mathType, strict)) continue;
    if (c.ctx.deterministic() && candidate.determinism == CUDNN_NON_DETERMINISTIC) continue;
    ConvAlgorithm a;
    a.algo = static_cast<int>(candidate.algo);
    a.math = execution_math(candidate.mathType, strict);
    c.conv.set_math(a.math, Direction::name);
    if (workspace_size(c, dir, candidate.algo, &a.workspace_bytes) != CUDNN_STATUS_SUCCESS ||
        a.workspace_bytes > kMaxWorkspaceBytes)
      continue;
    candidates.push_back(a);
  }

  ConvAlgorithm fallback;
  fallback.algo = static_cast<int>(Direction::fallback);
  fallback.math = fallback_math(c);
  for (const ConvAlgorithm& a : candidates)
    if (same_algorithm(a, fallback)) return candidates;
  c.conv.set_math(fallback.math, Direction::name);
  if (const cudnnStatus_t status = workspace_size(c, dir, Direction::fallback, &fallback.workspace_bytes);
      status != CUDNN_STATUS_SUCCESS) {
    note(failures, fmt::format("{}: its workspace query failed: {}", algo_name<Direction>(fallback),
                               cudnnGetErrorString(status)));
    return candidates;
  }
  candidates.push_back(fallback);
  return candidates;
}

constexpr int kTimedRuns = 3;

// The candidates fastest first, timed as the policy at the top says. run(algo, workspace,
// workspace_bytes, out) is the direction's cuDNN call writing into `out`; `out_bytes` is the size
// of the call's output.
template <class Direction, class Run>
std::vector<ConvAlgorithm> fastest_first(const ConvCall& c, std::vector<ConvAlgorithm> candidates,
                                         std::size_t out_bytes, const Run& run) {
  if (candidates.size() < 2) return candidates;
  constexpr double kFailed = std::numeric_limits<double>::infinity();
  Workspace scratch_out(c.ctx, out_bytes);
  Timer timer(c.ctx);
  std::vector<std::pair<double, ConvAlgorithm>> timed;
  for (const ConvAlgorithm& algo : candidates) {
    double ms = kFailed;
    c.conv.set_math(algo.math, Direction::name);
    try {
      Workspace workspace(c.ctx, algo.workspace_bytes);
      void* out = scratch_out.data();
      if (run(algo, workspace.data(), workspace.bytes(), out) == CUDNN_STATUS_SUCCESS) {
        timer.start();
        cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
        for (int i = 0; i < kTimedRuns && status == CUDNN_STATUS_SUCCESS; ++i)
          status = run(algo, workspace.data(), workspace.bytes(), out);
        const double elapsed = timer.stop_ms();
        if (status == CUDNN_STATUS_SUCCESS) ms = elapsed;
      }
    } catch (const OutOfMemoryError&) {
      // Its workspace does not fit now: it goes last, where the run policy handles the shortage.
    }
    cudaGetLastError();  // a failed candidate's launch error must not surface at the next kernel check
    timed.emplace_back(ms, algo);
  }
  // The workspaces are free again; give them back to the device (see the policy at the top).
  c.ctx.allocator().empty_cache();
  std::stable_sort(timed.begin(), timed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t i = 0; i < timed.size(); ++i) candidates[i] = timed[i].second;
  return candidates;
}

// The cached "algorithm" of a channels_last call that no cuDNN algorithm ran (see run_convolution).
constexpr int kLayoutsRefused = -1;

// Runs one convolution as the policy at the top says: the cached algorithm if there is one; if
// there is none or it fails, cuDNN's candidates in turn. run(algo, workspace, workspace_bytes, out)
// makes the cuDNN call writing into `out` and returns its status; c.conv is set to the
// algorithm's math type first. `out` and `out_bytes` are the call's output. Returns false, having
// written nothing the caller keeps, when the call has an NHWC tensor and every algorithm refused it
// with enough memory for each: the caller then runs it on NCHW copies (the policy's "channels_last"
// entry at the top). That answer is cached like an algorithm, so cuDNN is asked once per call.
template <class Direction, class Run>
bool run_convolution(const ConvCall& c, bool overwrites_output, void* out, std::size_t out_bytes, const Run& run) {
  CudaResources& r = cuda_resources(c.ctx);
  const std::string key = cache_key(Direction::name, c);
  std::string failures;  // "; "-separated, for the error when nothing runs
  bool out_of_memory = false;

  // True if algo ran (it becomes the cached choice); false after a failure that another
  // algorithm may not have (noted in `failures`); throws on any other failure.
  const auto attempt = [&](const ConvAlgorithm& algo) {
    c.conv.set_math(algo.math, Direction::name);
    std::optional<Workspace> workspace;
    try {
      workspace.emplace(c.ctx, algo.workspace_bytes);
    } catch (const OutOfMemoryError&) {
      r.conv_algorithms.erase(key);
      out_of_memory = true;
      note(failures, fmt::format("{}: out of memory for its workspace", algo_name<Direction>(algo)));
      return false;
    }
    const cudnnStatus_t status = run(algo, workspace->data(), workspace->bytes(), out);
    if (status == CUDNN_STATUS_SUCCESS) {
      r.conv_algorithms.insert_or_assign(key, algo);
      return true;
    }
    r.conv_algorithms.erase(key);
    if (!another_algorithm_may_work(status, overwrites_output, c.channels_last()))
      cuda_detail::throw_cudnn(
          status, Direction::call, __FILE__, __LINE__,
          fmt::format("{} {}, algorithm {}", Direction::name, describe_call<Direction>(c), algo_name<Direction>(algo)));
    cudaGetLastError();  // a failed launch leaves its error behind; the next kernel check must not report it
    note(failures, fmt::format("{}: {}", algo_name<Direction>(algo), cudnnGetErrorString(status)));
    return false;
  };

  std::optional<ConvAlgorithm> cached;
  if (auto it = r.conv_algorithms.find(key); it != r.conv_algorithms.end()) cached = it->second;
  if (cached && cached->algo == kLayoutsRefused) return false;
  if (cached && attempt(*cached)) return true;
  const bool measured = c.ctx.conv_search() == ConvSearch::measured;
  if (measured && !cached) {
    // A choice measured by an earlier run on this GPU and cuDNN: no search when it runs.
    if (const std::optional<ConvAlgorithm> saved = from_disk<Direction>(c)) {
      if (attempt(*saved)) return true;
      cached = saved;  // not tried twice below
    }
  }
  std::vector<ConvAlgorithm> candidates = ranked_candidates<Direction>(c, failures);
  if (measured) candidates = fastest_first<Direction>(c, std::move(candidates), out_bytes, run);
  for (const ConvAlgorithm& algo : candidates)
    if (!(cached && same_algorithm(algo, *cached)) && attempt(algo)) {
      if (measured)
        disk_cache(c.ctx).store(disk_key<Direction>(c), {algo.algo, static_cast<int>(algo.math), algo.workspace_bytes});
      return true;
    }
  if (c.channels_last() && !out_of_memory) {
    // Once per call key (the answer is cached): a GPU run's log shows which calls lost NHWC.
    fmt::print(stderr, "cudl: warning: {}: cuDNN ran no algorithm on {}; running it on NCHW copies (tried: {})\n",
               Direction::name, describe_call<Direction>(c), failures.empty() ? "none offered" : failures);
    ConvAlgorithm refused;
    refused.algo = kLayoutsRefused;
    r.conv_algorithms.insert_or_assign(key, refused);
    return false;
  }

  const std::string message =
      fmt::format("{}: no cuDNN algorithm could run {}; tried: {}", Direction::name, describe_call<Direction>(c),
                  failures.empty() ? "none (cuDNN offered no usable candidate)" : failures);
  if (out_of_memory) throw OutOfMemoryError(detail::with_location(message, __FILE__, __LINE__));
  CUDL_THROW("{}", message);
}

}  // namespace

void CudaBackend::do_conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  constexpr std::string_view op = Forward::name;
  if (y.numel() == 0) return;
  if (x.numel() == 0 || w.numel() == 0) {  // no input channels: the sum is empty
    cuda_detail::launch_fill(y.raw(), cuda_detail::float_type(y.dtype()), y.numel(), 0.0f, cuda_resources(ctx).stream);
    return;
  }
  const DType dtype = x.dtype();  // x, w and y share it (the front checked)
  TensorDescriptor xd(op, "x", x.shape(), dtype, x.format()), yd(op, "y", y.shape(), dtype, y.format());
  FilterDescriptor wd(op, "w", w.shape(), dtype);
  ConvolutionDescriptor cd(p, op);
  const ConvCall call{ctx, dtype, x.shape(), w.shape(), y.shape(), p, xd, wd, cd, yd, x.format(), y.format()};
  const float alpha = 1.0f, beta = 0.0f;  // float scaling factors for every data type (float compute)
  const bool ran =
      run_convolution<Forward>(call, /*overwrites_output=*/true, y.raw(), y.nbytes(),
                               [&](const ConvAlgorithm& a, void* ws, std::size_t bytes, void* out) {
                                 return cudnnConvolutionForward(
                                     cuda_resources(ctx).cudnn, &alpha, xd.get(), x.raw(), wd.get(), w.raw(), cd.get(),
                                     static_cast<cudnnConvolutionFwdAlgo_t>(a.algo), ws, bytes, &beta, yd.get(), out);
                               });
  if (!ran) {  // cuDNN refused these layouts (see the policy at the top)
    on_nchw_copies(ctx, [&](NchwRoute& r) { do_conv2d_forward(ctx, r.in(x), w, p, r.out(y)); });
  }
}

void CudaBackend::do_conv2d_backward_data(Context& ctx, const Tensor& dy, const Tensor& w, const Conv2dParams& p,
                                          Tensor& dx) {
  constexpr std::string_view op = BackwardData::name;
  if (dx.numel() == 0) return;
  if (dy.numel() == 0 || w.numel() == 0) {
    cuda_detail::launch_fill(dx.raw(), cuda_detail::float_type(dx.dtype()), dx.numel(), 0.0f,
                             cuda_resources(ctx).stream);
    return;
  }
  const DType dtype = dy.dtype();  // dy, w and dx share it
  TensorDescriptor xd(op, "dx", dx.shape(), dtype, dx.format()), yd(op, "dy", dy.shape(), dtype, dy.format());
  FilterDescriptor wd(op, "w", w.shape(), dtype);
  ConvolutionDescriptor cd(p, op);
  const ConvCall call{ctx, dtype, dx.shape(), w.shape(), dy.shape(), p, xd, wd, cd, yd, dx.format(), dy.format()};
  const float alpha = 1.0f, beta = 0.0f;
  const bool ran = run_convolution<BackwardData>(
      call, /*overwrites_output=*/true, dx.raw(), dx.nbytes(),
      [&](const ConvAlgorithm& a, void* ws, std::size_t bytes, void* out) {
        return cudnnConvolutionBackwardData(cuda_resources(ctx).cudnn, &alpha, wd.get(), w.raw(), yd.get(), dy.raw(),
                                            cd.get(), static_cast<cudnnConvolutionBwdDataAlgo_t>(a.algo), ws, bytes,
                                            &beta, xd.get(), out);
      });
  if (!ran) {
    on_nchw_copies(ctx, [&](NchwRoute& r) { do_conv2d_backward_data(ctx, r.in(dy), w, p, r.out(dx)); });
  }
}

void CudaBackend::do_conv2d_backward_filter(Context& ctx, const Tensor& x, const Tensor& dy, const Conv2dParams& p,
                                            Tensor& dw, bool accumulate) {
  constexpr std::string_view op = BackwardFilter::name;
  if (dw.numel() == 0) return;
  const cuda_detail::FloatType dw_type = cuda_detail::float_type(dw.dtype());
  if (x.numel() == 0 || dy.numel() == 0) {  // empty batch: the gradient is zero
    if (!accumulate) cuda_detail::launch_fill(dw.raw(), dw_type, dw.numel(), 0.0f, cuda_resources(ctx).stream);
    return;
  }
  const DType dtype = x.dtype();  // x and dy share it; dw is it or f32 (always KCRS: the front checked)
  TensorDescriptor xd(op, "x", x.shape(), dtype, x.format()), yd(op, "dy", dy.shape(), dtype, dy.format());
  FilterDescriptor wd(op, "dw", dw.shape(), dtype);
  ConvolutionDescriptor cd(p, op);
  const ConvCall call{ctx, dtype, x.shape(), dw.shape(), dy.shape(), p, xd, wd, cd, yd, x.format(), dy.format()};
  const auto backward_filter = [&](float beta, bool overwrites_output, void* out, std::size_t out_bytes) {
    const float alpha = 1.0f;
    return run_convolution<BackwardFilter>(
        call, overwrites_output, out, out_bytes, [&](const ConvAlgorithm& a, void* ws, std::size_t bytes, void* o) {
          return cudnnConvolutionBackwardFilter(
              cuda_resources(ctx).cudnn, &alpha, xd.get(), x.raw(), yd.get(), dy.raw(), cd.get(),
              static_cast<cudnnConvolutionBwdFilterAlgo_t>(a.algo), ws, bytes, &beta, wd.get(), o);
        });
  };
  // cuDNN refused these layouts (see the policy at the top): nothing was written, dw included.
  const auto nchw_fallback = [&] {
    on_nchw_copies(ctx, [&](NchwRoute& r) { do_conv2d_backward_filter(ctx, r.in(x), r.in(dy), p, dw, accumulate); });
  };
  if (dw.dtype() == dtype) {
    if (!backward_filter(accumulate ? 1.0f : 0.0f, /*overwrites_output=*/!accumulate, dw.raw(), dw.nbytes()))
      nchw_fallback();
    return;
  }
  // Half x and dy, f32 dw: the gradient in x's dtype first, then into dw in one pass.
  const std::size_t half_bytes = static_cast<std::size_t>(dw.numel()) * dtype_size(dtype);
  Workspace half_dw(ctx, half_bytes);
  if (!backward_filter(0.0f, /*overwrites_output=*/true, half_dw.data(), half_bytes)) return nchw_fallback();
  const cuda_detail::FloatType half_type = cuda_detail::float_type(dtype);
  if (accumulate)
    cuda_detail::launch_cast_add(half_dw.data(), half_type, dw.data<float>(), dw.numel(), cuda_resources(ctx).stream);
  else
    cuda_detail::launch_cast(half_dw.data(), half_type, dw.raw(), dw_type, dw.numel(), cuda_resources(ctx).stream);
}

}  // namespace cudl
