// Issue 23 item 8: the bench chart drawn in C++ (`cudl plot bench.json`), no matplotlib needed.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cudl/models/train/curves.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::TempDir;

namespace {

nlohmann::json bench_doc() {
  return {{"machine", {{"cpu", "test cpu"}}},
          {"results",
           {{{"op", "gemm"},
             {"backend", "cpu"},
             {"shape", "256x256x256"},
             {"median_ms", 0.2},
             {"rate", 170.0},
             {"rate_unit", "GFLOP/s"},
             {"peak_share", 0.8}},
            {{"op", "gemm"},
             {"backend", "cuda:0"},
             {"shape", "256x256x256"},
             {"median_ms", 0.01},
             {"rate", 3000.0},
             {"rate_unit", "GFLOP/s"},
             {"peak_share", 0.3}},
            {{"op", "train_step"},
             {"backend", "cpu"},
             {"shape", "[128,1,28,28]"},
             {"model", "mnist_cnn"},
             {"batch", 128},
             {"median_ms", 50.0},
             {"rate", 2560.0},
             {"rate_unit", "img/s"}}}}};
}

// How many pixels of `image` have colour c (within rounding).
int pixels_of(const Image& image, const float (&c)[3]) {
  int n = 0;
  for (int y = 0; y < image.height; ++y)
    for (int x = 0; x < image.width; ++x) {
      bool same = true;
      for (int k = 0; k < 3; ++k) same = same && std::abs(image.at(y, x, k) - c[k]) < 1e-3f;
      n += same;
    }
  return n;
}

}  // namespace

TEST(BenchChart, DrawsABarPerCaseColouredByBackend) {
  const Image chart = draw_bench_chart(bench_doc(), "doc");
  EXPECT_EQ(chart.height, 130 + 3 * 26 + 60);
  // cpu rows in the first colour (two time bars and one share bar), cuda:0 in the second.
  const int cpu = pixels_of(chart, CurveColors::train), cuda = pixels_of(chart, CurveColors::test);
  EXPECT_GT(cpu, 0);
  EXPECT_GT(cuda, 0);
  EXPECT_GT(cpu, cuda);  // the slower CPU's bars are longer on the log-time axis
  EXPECT_TRUE(is_bench_document(bench_doc()));
  EXPECT_FALSE(is_bench_document(nlohmann::json{{"epochs", nlohmann::json::array()}}));
  cudl::testing::expect_error(
      [] {
        draw_bench_chart({{"results", nlohmann::json::array()}}, "empty.json");
      },
      {"empty.json", "holds no bench results"});
  cudl::testing::expect_error(
      [] {
        draw_bench_chart({{"results", {{{"op", "x"}, {"median_ms", -1.0}}}}}, "neg.json");
      },
      {"neg.json", "results[0].median_ms is -1"});
}

TEST(BenchChartCli, PlotDrawsABenchJson) {
  TempDir dir;
  { std::ofstream(dir.file("bench.json")) << bench_doc().dump(2); }
  const std::string cmd = fmt::format("'{}' plot '{}' -o '{}' > '{}' 2> '{}'", cudl::testing::cli_path(),
                                      dir.file("bench.json"), dir.file("bench.png"), dir.file("out"), dir.file("err"));
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const Image png = read_image(dir.file("bench.png"));
  EXPECT_EQ(png.height, 130 + 3 * 26 + 60);
  EXPECT_GT(png.width, 1000);
}
