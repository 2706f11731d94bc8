// The cudl CLI against bad input (issue 11): every bad number, list, seed, path or file is refused
// before any work with exit code 1 and ONE line on stderr that names the option or the file (never
// "stoull" or a CLI11 exit code); NaN results are failures; outputs that cannot be written are
// refused before training or optimisation starts; a killed save's temporary is cleaned up.
// Fast: tiny MNIST-shaped data, the mlp, style at 16 px, --device cpu.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/backend_fixture.hpp"
#include "tests/safetensors_edit.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::rewrite_safetensors;
using cudl::testing::slurp;
using cudl::testing::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kImages = cudl::testing::source_dir() + "/tests/data/";

struct CliResult {
  int status = -1;  // exit code, or 128 + signal
  std::string out, err;
  std::vector<std::string> err_lines() const {
    std::vector<std::string> lines;
    std::stringstream ss(err);
    for (std::string line; std::getline(ss, line);) lines.push_back(line);
    return lines;
  }
};

class Cli : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.file(name); }

  CliResult run(const std::string& args) const {
    const std::string cmd =
        fmt::format("'{}' {} > '{}' 2> '{}'", cudl::testing::cli_path(), args, file("stdout.txt"), file("stderr.txt"));
    const int status = std::system(cmd.c_str());
    CliResult r;
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    r.out = slurp(file("stdout.txt"));
    r.err = slurp(file("stderr.txt"));
    return r;
  }

  // Exit code 1, one line on stderr starting "cudl: error: " and holding every fragment, nothing on
  // stdout (no work started), and none of the C++ library's words.
  void expect_refused(const std::string& args, const std::vector<std::string>& fragments) const {
    const CliResult r = run(args);
    SCOPED_TRACE("cudl " + args);
    EXPECT_EQ(r.status, 1);
    ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
    const std::string line = r.err_lines()[0];
    EXPECT_EQ(line.rfind("cudl: error: ", 0), 0u) << line;
    for (const auto& f : fragments) EXPECT_TRUE(contains(line, f)) << "'" << f << "' not in: " << line;
    for (const char* leak : {"stoull", "stoll", "stoi", "stod", "std::", "basic_string", "bad_alloc", "Run with"})
      EXPECT_FALSE(contains(line, leak)) << line;
    EXPECT_TRUE(r.out.empty()) << "work started: " << r.out;
  }

  // Four IDX files of n random 28x28 images (and n / 2 test images) with labels 0..9.
  std::string tiny_mnist(int n = 64, const std::string& name = "mnist") const {
    const std::string dir = file(name);
    cudl::testing::write_mnist_bytes_dir(dir, n, [](int i, int p) {
      const int flat = i * 28 * 28 + p;
      return static_cast<std::uint8_t>((flat * 37 + i) % 256);
    });
    return dir;
  }

  std::string mlp_weights(const std::string& name) const {
    Context ctx(Device::cpu());
    Sequential m = make_model("mlp");
    m.build(ctx, 1);
    save_weights(file(name), ctx, m);
    return file(name);
  }

  std::string style_args(const std::string& output) const {
    return fmt::format(
        "style --content '{}' --style '{}' --output '{}' --weights random:1 --size 16 --iters 2 --device cpu "
        "--style-layers relu1_1 --content-layers relu1_2",
        kImages + "chelsea.png", kImages + "brick.png", output);
  }

  TempDir dir_;
};

TEST_F(Cli, EveryBadNumberIsOneLineNamingTheOptionBeforeAnyWork) {
  const std::string data = tiny_mnist();
  const std::string train =
      fmt::format("train --model mlp --data '{}' --device cpu --epochs 1 --save '{}'", data, file("run.st"));
  const std::string style = style_args(file("out.png"));
  const std::string bench = "bench --device cpu --models mlp --repeat 1";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      // train: each option, NaN and inf never silently become a default
      {train + " --lr nan", {"--lr: nan must be a finite number > 0", "(see cudl train --help)"}},
      {train + " --lr inf", {"--lr: inf must be a finite number > 0"}},
      {train + " --lr -0.1", {"--lr: -0.1 must be"}},
      {train + " --lr 0", {"--lr: 0 must be"}},
      {train + " --lr 1e39", {"--lr: 1e39", "32-bit float"}},
      {train + " --lr 1e-50", {"--lr: 1e-50 (0 as a 32-bit float)"}},
      {train + " --lr abc", {"--lr: 'abc' must be a finite number > 0"}},
      {train + " --momentum nan", {"--momentum: nan must be a finite number in [0, 1]"}},
      {train + " --momentum 2", {"--momentum: 2 must be"}},
      {train + " --weight-decay -1", {"--weight-decay: -1 must be a finite number >= 0"}},
      {train + " --weight-decay inf", {"--weight-decay: inf"}},
      {train + " --epochs 0", {"--epochs: 0 must be a whole number in [1, 100000]"}},
      {train + " --epochs 1e3", {"--epochs: 1e3 must be a whole number"}},
      {train + " --batch-size -5", {"--batch-size: -5 must be a whole number in [1, 1048576]"}},
      {train + " --batch-size 99999999999999999999", {"--batch-size: 99999999999999999999"}},
      {train + " --seed -1", {"--seed: -1 must be a whole number in [0, 18446744073709551615]"}},
      {train + " --seed 18446744073709551616", {"--seed: 18446744073709551616"}},
      {train + " --seed 12abc", {"--seed: 12abc"}},
      {train + " --device cuda:abc", {"--device: 'cuda:abc' is not a device: expected cpu, cuda, cuda:N or auto"}},
      // eval
      {fmt::format("eval --model mlp --data '{}' --weights '{}' --batch-size 0", data, mlp_weights("w.st")),
       {"--batch-size: 0"}},
      // style: weights, scales, sizes, seeds, lists
      {style + " --style-weight nan", {"--style-weight: nan must be a finite number >= 0"}},
      {style + " --content-weight -1", {"--content-weight: -1"}},
      {style + " --tv-weight 1e39", {"--tv-weight: 1e39", "32-bit float"}},
      {style + " --style-scale 0", {"--style-scale: 0 must be a finite number in (0, 100]"}},
      {style + " --style-scale nan", {"--style-scale: nan"}},
      {style + " --style-scale 50 --scales 1024", {"--style-scale 50 makes the style images 51200 px"}},
      {style + " --lr nan", {"--lr: nan"}},
      {style + " --size 8", {"--size: 8 must be a whole number in [16, 32768]", "(see cudl style --help)"}},
      {style + " --size 1e10", {"--size: 1e10"}},
      {style + " --iters -1", {"--iters: -1"}},
      {style + " --lbfgs-history 0", {"--lbfgs-history: 0"}},
      {style + " --print-every -5", {"--print-every: -5"}},
      {style + " --save-every nan", {"--save-every: nan"}},
      {style + " --seed -3", {"--seed: -3"}},
      {style + " --scales 1e10", {"--scales: 1e10 must be a whole number in [16, 32768]"}},
      {style + " --scales 32,1e10", {"--scales: 1e10 must be", "(in '32,1e10')"}},
      {style + " --scales 32,,64", {"--scales: '32,,64' has an empty item"}},
      {style + " --scales abc", {"--scales: abc"}},
      {style + " --style-blend-weights nan", {"--style-blend-weights: nan must be a finite number >= 0"}},
      {style + " --style-blend-weights 1,-2", {"--style-blend-weights: -2"}},
      {style + " --weights random:99999999999999999999", {"--weights: random:99999999999999999999 needs a seed"}},
      {style + " --weights random:x", {"--weights: random:x needs a seed"}},
      // classify
      {fmt::format("classify --image '{}' --weights random:-1 --device cpu", kImages + "chelsea.png"),
       {"--weights: random:-1 needs a seed", "(see cudl classify --help)"}},
      {fmt::format("classify --image '{}' --weights random:1 --top 0 --device cpu", kImages + "chelsea.png"),
       {"--top: 0 must be a whole number in [1, 1000]"}},
      // bench
      {bench + " --batch-sizes x", {"--batch-sizes: x must be a whole number in [1, 65536]"}},
      {bench + " --batch-sizes 1,1e10", {"--batch-sizes: 1e10"}},
      {bench + " --repeat 0", {"--repeat: 0"}},
      {"bench --device cpu,gpu --repeat 1", {"--device: 'gpu' is not a device"}},
  };
  for (const auto& [args, fragments] : cases) expect_refused(args, fragments);
  EXPECT_FALSE(fs::exists(file("run.st")));
  EXPECT_FALSE(fs::exists(file("out.png")));
}

TEST_F(Cli, UsageErrorsAreOneLineAndExitCodeOne) {
  expect_refused("", {"A subcommand is required (see cudl --help)"});
  expect_refused("bogus", {"unknown command 'bogus': expected one of info, summary, train"});
  expect_refused("train", {"--data is required (see cudl train --help)"});
  expect_refused("style --size", {"--size", "(see cudl style --help)"});
  expect_refused("summary --model mlp --extra", {"--extra"});
  expect_refused("train --data . --deterministic maybe", {"--deterministic"});
  expect_refused("train --data . --precision bf17", {"--precision", "bf17", "fp32", "tf32", "bf16", "fp16"});
  expect_refused("style --content x --style y --conv-algo fastest", {"--conv-algo", "fastest"});
  // --help and --version are not errors.
  const CliResult help = run("train --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_TRUE(contains(help.out, "--lr")) << help.out;
  EXPECT_EQ(run("--version").status, 0);
}

TEST_F(Cli, CudaOnlyComputeOptionsAreNotedOnTheCpuAndRecordedInBenchJson) {
  const CliResult r =
      run(fmt::format("bench --device cpu --ops sum --repeat 1 --precision tf32 --conv-algo measured "
                      "--cuda-graphs true --json '{}'",
                      file("bench.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "note: --precision tf32 and --cuda-graphs change nothing on the CPU")) << r.err;
  const std::string json = slurp(file("bench.json"));
  EXPECT_TRUE(contains(json, "\"precision\": \"tf32\"")) << json;
  EXPECT_TRUE(contains(json, "\"conv_algo\": \"measured\"")) << json;
  EXPECT_TRUE(contains(json, "\"cuda_graphs\": true")) << json;
  // The defaults say nothing.
  const CliResult quiet = run("bench --device cpu --ops sum --repeat 1");
  ASSERT_EQ(quiet.status, 0) << quiet.err;
  EXPECT_FALSE(contains(quiet.err, "note:")) << quiet.err;
}

// The peer rows (kernels/cuda/peers.hpp) exist on a GPU only: the CPU's run has its own sum alone.
TEST_F(Cli, BenchHasNoPeerRowOnTheCpu) {
  const CliResult r =
      run(fmt::format("bench --device cpu --ops sum --shape 4096 --repeat 1 --json '{}'", file("p.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(slurp(file("p.json")));
  ASSERT_EQ(doc["results"].size(), 1u) << doc.dump();
  EXPECT_EQ(doc["results"][0]["op"], "sum");
  EXPECT_FALSE(doc["results"][0].contains("peer_of"));
  EXPECT_FALSE(contains(r.out, "sum:cub")) << r.out;
}

// On a GPU, sum's row is followed by CUB's on a buffer of the same size, with its GB/s and how
// many times its time cudl's sum takes; `--ops sum` keeps both.
TEST_F(Cli, BenchTimesCubsSumBesideOursOnTheGpu) {
  CUDL_REQUIRE_CUDA();
  const CliResult r =
      run(fmt::format("bench --device cuda --ops sum --shape 1048576 --repeat 3 --json '{}'", file("g.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(slurp(file("g.json")));
  ASSERT_EQ(doc["results"].size(), 2u) << doc.dump();
  const nlohmann::json &own = doc["results"][0], &peer = doc["results"][1];
  EXPECT_EQ(own["op"], "sum");
  EXPECT_EQ(peer["op"], "sum:cub");
  EXPECT_EQ(peer["peer_of"], "sum");
  EXPECT_TRUE(contains(peer["peer"].get<std::string>(), "cub::DeviceReduce::Sum")) << peer.dump();
  EXPECT_EQ(peer["shape"], own["shape"]);
  EXPECT_EQ(peer["rate_unit"], "GB/s");
  EXPECT_GT(peer["rate"].get<double>(), 0.0);
  EXPECT_NEAR(peer["own_time_over_peer"].get<double>(),
              own["median_ms"].get<double>() / peer["median_ms"].get<double>(), 1e-9);
  EXPECT_TRUE(contains(r.out, "peer of sum")) << r.out;
}

TEST_F(Cli, BenchTimesOneOpAtAUsersShapeWithItsSpreadAndTheMachine) {
  const CliResult r = run(fmt::format(
      "bench --device cpu --ops conv2d_fwd --shape 2x3x9x9,4x3x3x3 --repeat 3 --json '{}'", file("shape.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "conv2d_fwd")) << r.out;
  EXPECT_TRUE(contains(r.out, "x=[2,3,9,9] w=[4,3,3,3]")) << r.out;
  const nlohmann::json doc = nlohmann::json::parse(slurp(file("shape.json")));
  ASSERT_EQ(doc["results"].size(), 1u);
  const nlohmann::json& row = doc["results"][0];
  EXPECT_GE(row["samples"].get<int>(), 3);
  EXPECT_LE(row["min_ms"].get<double>(), row["median_ms"].get<double>());
  EXPECT_LE(row["q1_ms"].get<double>(), row["q3_ms"].get<double>());
  EXPECT_GE(row["cv"].get<double>(), 0.0);
  EXPECT_TRUE(doc["machine"].contains("cores"));
  EXPECT_TRUE(doc["machine"]["build"].contains("commit"));
  EXPECT_TRUE(doc["machine"].contains("load_average"));

  expect_refused("bench --device cpu --ops conv2d_fwd --shape 2x3x9x9", {"--shape '2x3x9x9' does not fit conv2d_fwd"});
  expect_refused("bench --device cpu --ops gemm --shape 8x0x8", {"--shape '8x0x8': '0' is not a whole number"});
  expect_refused("bench --device cpu --ops gemm,sum --shape 8", {"--shape needs exactly one op in --ops"});
}

TEST_F(Cli, BenchCompareFlagsARegressionBeyondTheNoiseOnly) {
  const auto write_run = [&](const std::string& name, double gemm_ms, double sum_ms, double cv) {
    nlohmann::json doc = {
        {"results",
         {{{"op", "gemm"}, {"shape", "8x8x8"}, {"backend", "cpu"}, {"median_ms", gemm_ms}, {"cv", cv}},
          {{"op", "sum"}, {"shape", "[8]"}, {"backend", "cpu"}, {"median_ms", sum_ms}, {"cv", cv}}}}};
    std::ofstream(file(name)) << doc.dump();
  };
  write_run("old.json", 1.0, 1.0, 0.01);
  write_run("new.json", 1.5, 1.02, 0.01);  // gemm 50% slower; sum 2% (inside the 5% floor)
  const CliResult r = run(fmt::format("bench --compare '{}' '{}'", file("old.json"), file("new.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "REGRESSION (slower by 50%")) << r.out;
  EXPECT_TRUE(contains(r.out, "same within noise")) << r.out;
  EXPECT_TRUE(contains(r.out, "2 cases compared, 1 regression(s)")) << r.out;
  // A noisy pair widens the allowance: the same 50% is noise when each run's cv is 20%.
  write_run("old.json", 1.0, 1.0, 0.2);
  write_run("new.json", 1.5, 1.0, 0.2);
  EXPECT_TRUE(contains(run(fmt::format("bench --compare '{}' '{}'", file("old.json"), file("new.json"))).out,
                       "0 regression(s)"));
  expect_refused(fmt::format("bench --compare '{}' '{}'", file("old.json"), file("missing.json")),
                 {"--compare: cannot read", "missing.json"});
}

TEST_F(Cli, EvalRefusesWeightsHoldingNanOrInfNamingTheFileAndTheTensor) {
  const std::string data = tiny_mnist();
  const std::string good = mlp_weights("good.st");
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    rewrite_safetensors(good, file("bad.st"), [&](auto& tensors, auto&) { tensors.at("fc2.weight").at(7) = bad; });
    expect_refused(fmt::format("eval --model mlp --data '{}' --weights '{}' --device cpu", data, file("bad.st")),
                   {file("bad.st"), "non-finite", "'fc2.weight'", "index 7"});
  }
  // Finite weights so large the logits overflow: a NaN/inf loss is a failure, not a result.
  rewrite_safetensors(good, file("huge.st"), [&](auto& tensors, auto&) {
    for (float& w : tensors.at("fc2.weight")) w = 3e38f;
  });
  expect_refused(fmt::format("eval --model mlp --data '{}' --weights '{}' --device cpu", data, file("huge.st")),
                 {"eval: the loss of '" + file("huge.st") + "' on the mnist test split is", "unusable"});
  // The good file evaluates.
  const CliResult r = run(fmt::format("eval --model mlp --data '{}' --weights '{}' --device cpu", data, good));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "accuracy")) << r.out;
}

TEST_F(Cli, ExtraTensorsAreAWarningAndAnErrorWithStrict) {
  const std::string data = tiny_mnist();
  rewrite_safetensors(mlp_weights("good.st"), file("extra.st"), [](auto& tensors, auto&) {
    tensors["classifier.9.weight"] = {1, 2, 3};
    tensors["typo.bias"] = {0};
  });
  const std::string eval =
      fmt::format("eval --model mlp --data '{}' --weights '{}' --device cpu", data, file("extra.st"));
  const CliResult r = run(eval);
  EXPECT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_EQ(r.err_lines()[0], fmt::format("cudl: warning: '{}' holds 2 tensors the model does not use: "
                                          "classifier.9.weight, typo.bias (--strict makes this an error)",
                                          file("extra.st")));
  expect_refused(eval + " --strict", {file("extra.st"), "unexpected classifier.9.weight; unexpected typo.bias"});
}

TEST_F(Cli, AFolderOrADeviceIsNotAWeightsOrCheckpointFile) {
  const std::string data = tiny_mnist();
  fs::create_directories(file("folder.st"));
  expect_refused(fmt::format("eval --model mlp --data '{}' --weights '{}' --device cpu", data, file("folder.st")),
                 {"--weights: '" + file("folder.st") + "' is a folder, not a file"});
  expect_refused(fmt::format("eval --model mlp --data '{}' --weights /dev/zero --device cpu", data),
                 {"--weights: '/dev/zero' is not a regular file"});
  expect_refused(fmt::format("eval --model mlp --data '{}' --weights '{}' --device cpu", data, file("missing.st")),
                 {"--weights: '" + file("missing.st") + "' does not exist"});
  expect_refused(fmt::format("train --model mlp --data '{}' --resume '{}' --device cpu", data, file("folder.st")),
                 {"--resume '" + file("folder.st") + "' is a folder, not a file"});
  expect_refused(
      fmt::format("classify --image '{}' --weights '{}' --device cpu", kImages + "chelsea.png", file("folder.st")),
      {"is a folder"});
}

TEST_F(Cli, ResumeRefusesOverflowingCountsAndBadMetadataNamingTheFile) {
  const std::string data = tiny_mnist();
  const std::string train = fmt::format("train --model mlp --data '{}' --device cpu --batch-size 32", data);
  ASSERT_EQ(run(train + fmt::format(" --epochs 1 --save '{}'", file("run.st"))).status, 0);
  const std::string resume = fmt::format("{} --epochs 2 --resume '{}'", train, file("bad.st"));
  rewrite_safetensors(file("run.st"), file("bad.st"),
                      [](auto&, auto& meta) { meta["optimizer.steps"] = "9223372036854775807"; });
  expect_refused(resume, {file("bad.st"), "metadata optimizer.steps = 9223372036854775807 is outside [0, "});
  rewrite_safetensors(file("run.st"), file("bad.st"), [](auto&, auto& meta) { meta["optimizer.steps"] = "-2"; });
  expect_refused(resume, {file("bad.st"), "optimizer.steps = -2"});
  rewrite_safetensors(file("run.st"), file("bad.st"), [](auto&, auto& meta) { meta["seed"] = "99999999999999999999"; });
  expect_refused(resume, {file("bad.st"), "metadata seed = '99999999999999999999', expected an integer"});
  rewrite_safetensors(file("run.st"), file("bad.st"), [](auto&, auto& meta) { meta["extra.metrics"] = "{not json"; });
  const CliResult r = run(resume);  // fails after the data is read: only the one line matters here
  EXPECT_EQ(r.status, 1);
  ASSERT_FALSE(r.err_lines().empty());
  EXPECT_TRUE(contains(r.err_lines().back(), "extra.metrics is not the metrics list cudl writes")) << r.err;
  EXPECT_TRUE(contains(r.err_lines().back(), file("bad.st"))) << r.err;
}

TEST_F(Cli, OutputsThatCannotBeWrittenAreRefusedBeforeAnyWork) {
  const std::string data = tiny_mnist();
  fs::create_directories(file("folder"));
  const std::string train = fmt::format("train --model mlp --data '{}' --device cpu --epochs 1", data);
  const std::string missing = file("no/such/folder/x.st");
  expect_refused(train + " --save '" + missing + "'",
                 {"--save '" + missing + "': the folder '" + file("no/such/folder") + "' does not exist"});
  expect_refused(train + " --save '" + file("folder") + "'", {"--save '" + file("folder") + "' is a folder"});
  expect_refused(train + " --metrics-json '" + missing + "'", {"--metrics-json '" + missing + "'"});
  expect_refused(train + " --save /dev/null", {"--save '/dev/null' exists and is not a regular file"});
  expect_refused(style_args(file("no/x.png")), {"--output '" + file("no/x.png") + "'"});
  expect_refused(style_args(file("out.png")) + " --log '" + file("folder") + "'", {"--log '" + file("folder") + "'"});
  expect_refused("bench --device cpu --ops sum --repeat 1 --json '" + missing + "'", {"--json '" + missing + "'"});
  // A folder we may not write in: permissions for a user; root writes anywhere except read-only
  // file systems such as /sys.
  std::string read_only;
  if (::geteuid() != 0) {
    read_only = file("read-only");
    fs::create_directories(read_only);
    fs::permissions(read_only, fs::perms::owner_read | fs::perms::owner_exec);
  } else if (fs::is_directory("/sys")) {
    std::string probe = "/sys/.cudl-test-XXXXXX";
    const int fd = ::mkstemp(probe.data());
    if (fd < 0)
      read_only = "/sys";  // sysfs refuses new files even to root
    else
      ::close(fd), ::unlink(probe.c_str());
  }
  if (!read_only.empty()) {
    expect_refused(train + " --save '" + read_only + "/x.st'", {"--save '" + read_only + "/x.st': cannot write in"});
    expect_refused(style_args(read_only + "/x.png"), {"--output '" + read_only + "/x.png': cannot write in"});
  }
  EXPECT_FALSE(fs::exists(file("out.png")));
}

TEST_F(Cli, ARunThatDivergesFailsAndSavesNothing) {
  const std::string data = tiny_mnist();
  const CliResult r =
      run(fmt::format("train --model mlp --data '{}' --device cpu --epochs 1 --batch-size 16 --optimizer sgd "
                      "--schedule none --lr 1e30 --save '{}'",
                      data, file("run.st")));
  EXPECT_EQ(r.status, 1);
  ASSERT_FALSE(r.err_lines().empty());
  EXPECT_TRUE(contains(r.err_lines().back(), "training diverged")) << r.err;
  EXPECT_TRUE(contains(r.err_lines().back(), "stopped before saving it to '" + file("run.st") + "'")) << r.err;
  EXPECT_FALSE(fs::exists(file("run.st")));
}

TEST_F(Cli, StyleWithANonFiniteLossWritesNoImage) {
  const CliResult r = run(style_args(file("out.png")) + " --tv-weight 3e38");
  EXPECT_EQ(r.status, 1);
  ASSERT_FALSE(r.err_lines().empty());
  EXPECT_TRUE(contains(r.err_lines().back(), "style: the loss ended as")) << r.err;
  EXPECT_TRUE(contains(r.err_lines().back(), "no image written")) << r.err;
  EXPECT_FALSE(fs::exists(file("out.png")));
}

TEST_F(Cli, ASaveRemovesTheTemporaryAKilledSaveOfTheSameFileLeft) {
  const std::string stale = file(".out.png.Ab12Cd.tmp"), other = file(".other.png.Ab12Cd.tmp");
  cudl::testing::write_string(stale, "half an image");
  cudl::testing::write_string(other, "another target's");
  const CliResult r = run(style_args(file("out.png")));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(file("out.png")));
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(other));
}

TEST_F(Cli, AnIdxFileLongerThanItsHeaderSaysIsNamed) {
  const std::string data = tiny_mnist();
  std::ofstream(data + "/t10k-labels-idx1-ubyte", std::ios::binary | std::ios::app).put('\x01');
  const CliResult r = run(fmt::format("train --model mlp --data '{}' --device cpu --epochs 1", data));
  EXPECT_EQ(r.status, 1);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_TRUE(contains(r.err, "t10k-labels-idx1-ubyte' is too long (trailing bytes): 41 bytes")) << r.err;
}

TEST_F(Cli, ImagesClaimingMoreThanThePixelLimitAreRefusedBeforeAnyWork) {
  // A real 16x16 JPEG whose frame header claims 30257x10758 (325 megapixels, 4 GB as floats).
  write_image(file("small.jpg"), Image(16, 16, 3));
  std::string jpeg = slurp(file("small.jpg"));
  const std::size_t sof = jpeg.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  jpeg.replace(sof + 5, 4, std::string("\x2a\x06\x76\x31", 4));  // height 10758, width 30257
  cudl::testing::write_string(file("huge.jpg"), jpeg);
  for (const std::string& args :
       {fmt::format("classify --weights random:1 --image '{}' --device cpu", file("huge.jpg")),
        fmt::format("style --content '{}' --style '{}' --output '{}' --weights random:1 --device cpu", file("huge.jpg"),
                    kImages + "brick.png", file("out.png"))}) {
    const CliResult r = run(args);
    EXPECT_EQ(r.status, 1) << args;
    ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
    EXPECT_TRUE(contains(r.err, "'" + file("huge.jpg") +
                                    "': the JPEG claims 30257x10758 (325504806 pixels), over the "
                                    "limit of 100000000 pixels"))
        << r.err;
  }
  EXPECT_FALSE(fs::exists(file("out.png")));
}

TEST_F(Cli, StyleDecodesALargeJpegAtTheScaleItNeeds) {
  // 1200x800 at --size 32: decoded at 1/8 (150x100), the output as from the full image.
  Image photo(1200, 800, 3);
  for (std::size_t i = 0; i < photo.pixels.size(); ++i) photo.pixels[i] = static_cast<float>(i % 997) / 997.0f;
  write_image(file("photo.jpg"), photo);
  const CliResult r = run(
      fmt::format("style --content '{}' --style '{}' --output '{}' --weights random:1 --size 32 --iters 2 --device cpu "
                  "--style-layers relu1_1 --content-layers relu1_2",
                  file("photo.jpg"), file("photo.jpg"), file("out.png")));
  ASSERT_EQ(r.status, 0) << r.err;
  const Image out = read_image(file("out.png"));
  EXPECT_EQ(out.width, 32);
  EXPECT_EQ(out.height, 21);
}

}  // namespace
