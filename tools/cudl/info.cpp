#include <fmt/format.h>

#include <filesystem>

#include "cudl/engine/allocator.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/cpu_threads.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/io/conv_algo_cache.hpp"
#include "cudl/kernels/cpu/onednn_conv.hpp"
#include "tools/cudl/commands.hpp"
#include "tools/cudl/threads.hpp"

namespace cudl::cli {

void add_info_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("info", "Print the version, the libraries cudl was built against and the devices found");
  cmd->callback([] {
    BuildInfo info = build_info();
    fmt::print("cudl {}\n", info.cudl_version);
    fmt::print("backends compiled in: {}\n", fmt::join(info.backends, ", "));
    fmt::print("CPU BLAS: {}\n", info.blas);
    // A new context's CPU policy (engine/cpu_policy.hpp): what every command here runs on the CPU.
    const Context cpu_ctx(Device::cpu());
    fmt::print("CPU DNN: {}\n", cpu::onednn_description(cpu_ctx.cpu_conv()));
    fmt::print(
        "CPU policy: convolutions {}, GEMM {} (Context::set_cpu_conv / set_cpu_gemm; defaults from "
        "CUDL_CPU_CONV, CUDL_CPU_GEMM)\n",
        cpu_conv_name(cpu_ctx.cpu_conv()), cpu_gemm_name(cpu_ctx.cpu_gemm()));
    const CpuHalfSupport half = cpu_half_support();
    fmt::print("CPU {}\n", half.bf16);
    fmt::print("CPU {}\n", half.f16);
    fmt::print("CPU threads: {} of {} ({}); OpenMP waiting: {}\n", cpu_threads(), available_cpus(),
               threads_auto() ? "--threads auto: the cores other processes leave idle" : "--threads",
               openmp_wait_policy());
    if (cuda_compiled()) {
      fmt::print("CUDA runtime: {}\n", info.cuda_runtime);
      fmt::print("CUDA driver: {}\n", info.cuda_driver);
      fmt::print("cuDNN: {}\n", info.cudnn);
      fmt::print("cuBLAS: {}\n", info.cublas);
      // Where --conv-algo measured (the default) keeps its winners (engine/io/conv_algo_cache.hpp).
      const std::filesystem::path cache = default_conv_algo_cache_file();
      std::error_code ec;
      if (cache.empty())
        fmt::print("cuDNN algorithm cache: none (neither XDG_CACHE_HOME nor HOME is set): measured in memory only\n");
      else
        fmt::print("cuDNN algorithm cache: {} ({})\n", cache.string(),
                   std::filesystem::exists(cache, ec) ? "present" : "not written yet");
    }
    auto devices = cuda_devices();
    if (devices.empty()) {
      fmt::print("no CUDA device: using the CPU backend\n");
      return;
    }
    for (const auto& d : devices) {
      fmt::print("cuda:{}: {}, {} total ({} free), compute capability {}.{}, {} SMs\n", d.index, d.name,
                 format_bytes(d.total_memory), format_bytes(d.free_memory), d.cc_major, d.cc_minor, d.multiprocessors);
    }
  });
}

}  // namespace cudl::cli
