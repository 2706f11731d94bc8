// `cudl train`, `cudl eval` and `cudl plot` end to end on a small synthetic MNIST-shaped set:
// validation, the best checkpoint, stopping rules, the non-finite guard, the evaluation report and
// the curves, each as a user sees them (exit status, one-line errors, files written or not).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "cudl/engine/io/image.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;
namespace fs = std::filesystem;

namespace {

CliRun cli(const TempDir& dir, const std::string& args) { return run_cli(dir, args); }

std::size_t lines(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

// A temp folder holding the synthetic MNIST set in data/.
struct TrainWorkspace {
  TempDir dir;
  std::string data;
  TrainWorkspace() : data(dir.file("data")) {
    fs::create_directories(data);
    Context ctx{Device::cpu()};
    write_synthetic_mnist_dir(data, ctx);
  }
  std::string train(const std::string& extra) const {
    return fmt::format("train --model mlp --data '{}' --device cpu --batch-size 32 {}", data, extra);
  }
};

nlohmann::json read_json(const std::string& path) {
  const auto bytes = read_bytes(path);
  return nlohmann::json::parse(bytes.begin(), bytes.end());
}

}  // namespace

TEST(CliTrainOptions, BadValuesAreOneLineAndExitOne) {
  TrainWorkspace w;
  const std::pair<std::string, std::string> cases[] = {
      {"--val-split 1", "--val-split: 1 must be a finite number in [0, 1)"},
      {"--val-split -0.1", "--val-split"},
      {"--reduce-lr-on-plateau 0", "N or N,FACTOR"},
      {"--reduce-lr-on-plateau 2,1.5", "FACTOR must be one finite number in (0, 1)"},
      {"--reduce-lr-on-plateau 2,x", "FACTOR"},
      {"--clip-grad-norm 0", "--clip-grad-norm: 0 must be a finite number > 0"},
      {"--early-stopping 0", "--early-stopping"},
      {"--max-steps 0", "--max-steps"},
      {"--subset -3", "--subset"},
      {fmt::format("--save-best '{}'", w.dir.file("missing/best.st")), "--save-best"},
      {fmt::format("--plot '{}'", w.dir.file("missing/curves.png")), "does not exist"},
  };
  for (const auto& [args, fragment] : cases) {
    SCOPED_TRACE(args);
    const CliRun r = cli(w.dir, w.train(args));
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(lines(r.err), 1u) << r.err;
    EXPECT_TRUE(contains(r.err, fragment)) << r.err;
    EXPECT_FALSE(contains(r.out, "epoch")) << "refused before training";
  }
}

TEST(CliTrain, ValidationBestCheckpointMetricsAndCurves) {
  TrainWorkspace w;
  const std::string best = w.dir.file("best.st"), metrics = w.dir.file("m.json"), png = w.dir.file("curves.png");
  const CliRun r = cli(w.dir, w.train(fmt::format("--epochs 3 --val-split 0.1 --save-best '{}' --metrics-json '{}' "
                                                  "--plot '{}' --lr 1e-3",
                                                  best, metrics, png)));
  ASSERT_EQ(r.status, 0) << r.err;
  // 10 classes of 32 images: 3 of each held out.
  EXPECT_TRUE(contains(r.out, "(290 train / 30 validation / 100 test images)")) << r.out;
  EXPECT_TRUE(contains(r.out, "| val loss ")) << r.out;
  EXPECT_TRUE(contains(r.out, "best epoch ")) << r.out;
  EXPECT_TRUE(contains(r.out, "memory pool peak ")) << r.out;
  EXPECT_TRUE(contains(r.err, " lr 1.00e-03")) << "the progress line shows the learning rate: " << r.err;
  const nlohmann::json m = read_json(metrics);
  EXPECT_EQ(m["train_size"], 290);
  EXPECT_EQ(m["val_size"], 30);
  EXPECT_EQ(m["test_size"], 100);
  EXPECT_EQ(m["monitor"], "val_accuracy");
  ASSERT_EQ(m["epochs"].size(), 3u);
  double best_acc = -1;
  std::int64_t best_epoch = 0;
  for (const auto& e : m["epochs"]) {
    ASSERT_TRUE(e.contains("val_loss") && e.contains("val_accuracy"));
    if (e["val_accuracy"].get<double>() > best_acc) best_acc = e["val_accuracy"], best_epoch = e["epoch"];
  }
  EXPECT_EQ(m["best_epoch"], best_epoch);
  EXPECT_EQ(read_checkpoint_info(best).epoch, best_epoch);
  const Image curves = read_image(png);
  EXPECT_EQ(curves.width, 1400);
  EXPECT_EQ(curves.height, 620);

  // cudl plot draws the same picture from the file.
  const std::string replot = w.dir.file("replot.png");
  const CliRun p = cli(w.dir, fmt::format("plot '{}' -o '{}'", metrics, replot));
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(read_bytes(replot), read_bytes(png));
}

TEST(CliTrain, QuickTrialOptionsSubsetMaxStepsAndEarlyStopping) {
  TrainWorkspace w;
  CliRun r = cli(w.dir, w.train("--epochs 5 --subset 64 --max-steps 3"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "(64 train / 100 test images)")) << r.out;
  EXPECT_TRUE(contains(r.out, "stopped at --max-steps 3 (epoch 2)")) << r.out;  // 2 steps per epoch
  // A learning rate this small improves nothing that shows in validation accuracy: patience 1
  // stops it. (Model selection watches the validation split, never the test set; without one,
  // the training loss: TrainerSelection.*.)
  r = cli(w.dir, w.train("--epochs 6 --optimizer sgd --momentum 0 --lr 1e-9 --schedule none --early-stopping 1 "
                         "--val-split 0.1"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "early stopping: no better val_accuracy for 1 epochs since epoch 1")) << r.out;
  EXPECT_FALSE(contains(r.out, "epoch   3:")) << r.out;
}

TEST(CliTrain, ADivergingRunExitsOneAndKeepsTheLastFiniteCheckpoint) {
  TrainWorkspace w;
  const std::string save = w.dir.file("run.st");
  CliRun r = cli(w.dir, w.train(fmt::format("--epochs 1 --optimizer sgd --save '{}'", save)));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto finite = read_bytes(save);
  // SGD at 3e38 with momentum overflows the weights within a step or two of epoch 2.
  r = cli(w.dir, w.train(fmt::format("--epochs 3 --resume '{}' --save '{}' --optimizer sgd --lr 3e38 --schedule none",
                                     save, save)));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.err.substr(r.err.find("cudl: error"))), 1u) << r.err;
  EXPECT_TRUE(contains(r.err, "cudl: error: fit: the ")) << r.err;
  EXPECT_TRUE(contains(r.err, "at epoch 2, step ") || contains(r.err, "of epoch 2, step ")) << r.err;
  EXPECT_TRUE(contains(r.err, fmt::format("the last good checkpoint is '{}' (epoch 1)", save))) << r.err;
  EXPECT_EQ(read_bytes(save), finite);
}

TEST(CliEval, ReportsTopKPerClassAndTheConfusionMatrix) {
  TrainWorkspace w;
  const std::string save = w.dir.file("run.st"), json = w.dir.file("eval.json"), labels = w.dir.file("labels.txt");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 2 --save '{}'", save))).status, 0);
  write_string(labels, "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n");
  const std::string eval = fmt::format("eval --model mlp --data '{}' --device cpu --weights '{}'", w.data, save);
  CliRun r = cli(w.dir, eval + fmt::format(" --json '{}' --labels '{}'", json, labels));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "top-1 ")) << r.out;
  EXPECT_TRUE(contains(r.out, "top-5 ")) << r.out;
  EXPECT_TRUE(contains(r.out, "confusion matrix (rows: true class, columns: predicted class)")) << r.out;
  EXPECT_TRUE(contains(r.out, "  9 nine ")) << r.out;
  const nlohmann::json j = read_json(json);
  EXPECT_EQ(j["images"], 100);
  EXPECT_EQ(j["class_names"][3], "three");
  std::int64_t total = 0, diagonal = 0;
  for (std::size_t t = 0; t < 10; ++t)
    for (std::size_t p = 0; p < 10; ++p) {
      total += j["confusion"][t][p].get<std::int64_t>();
      if (t == p) diagonal += j["confusion"][t][p].get<std::int64_t>();
    }
  EXPECT_EQ(total, 100);
  EXPECT_DOUBLE_EQ(j["top1"].get<double>(), static_cast<double>(diagonal) / 100.0);
  EXPECT_GE(j["top5"].get<double>(), j["top1"].get<double>());
  // A labels file with too few names is refused in one line.
  write_string(labels, "zero\none\n");
  r = cli(w.dir, eval + fmt::format(" --labels '{}'", labels));
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "has 2 lines, but the data has 10 classes")) << r.err;
}

TEST(CliPlot, RefusesAFileThatIsNotMetrics) {
  TempDir dir;
  write_string(dir.file("bad.json"), "{\"epochs\": [{\"epoch\": 1, \"train_loss\": 0.5}]}");
  CliRun r = cli(dir, fmt::format("plot '{}'", dir.file("bad.json")));
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "epochs[0].train_accuracy is missing or not a number")) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("bad.png")));
  write_string(dir.file("text.json"), "not json");
  r = cli(dir, fmt::format("plot '{}'", dir.file("text.json")));
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "not valid JSON")) << r.err;
}
