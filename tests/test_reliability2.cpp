// Issue 22, the second hostile-input round, end to end through the CLI: each test builds its own
// hostile input (an output that is an input under another spelling, a deeply nested model file,
// unsorted epochs, hand-edited checkpoint metadata...) and checks what the user sees: exit status 1,
// one line naming the file or option, and nothing written or overwritten.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/engine/io/json.hpp"
#include "cudl/engine/io/loader.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/preprocess.hpp"
#include "tests/safetensors_edit.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;
namespace fs = std::filesystem;

namespace {

// Runs the CLI in `dir` (under `timeout`, so a hang fails the test instead of stalling it).
CliRun cli(const TempDir& dir, const std::string& args, int timeout_s = 120) { return run_cli(dir, args, timeout_s); }

std::size_t lines(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Refused: exit 1, one line on stderr holding every fragment, no raw library text.
void expect_refused(const CliRun& r, std::initializer_list<std::string> fragments) {
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  for (const auto& f : fragments) EXPECT_TRUE(contains(r.err, f)) << "missing '" << f << "' in: " << r.err;
  for (const char* raw : {"json.exception", "basic_filebuf", "std::", "stoi", "type_error"})
    EXPECT_FALSE(contains(r.err, raw)) << r.err;
}

std::string read_text(const std::string& path) {
  const auto b = read_bytes(path);
  return {b.begin(), b.end()};
}

struct CliWorkspace {
  TempDir dir;
  std::string data;
  CliWorkspace() : data(dir.file("data")) {
    fs::create_directories(data);
    Context ctx{Device::cpu()};
    write_synthetic_mnist_dir(data, ctx);
  }
  std::string train(const std::string& extra) const {
    return fmt::format("train --model mlp --data '{}' --device cpu --batch-size 32 {}", data, extra);
  }
};

Image flat_image(int w, int h, float v) {
  Image img(w, h, 3);
  std::fill(img.pixels.begin(), img.pixels.end(), v);
  return img;
}

}  // namespace

// ---------------------------------------------------------------- 1. outputs never overwrite inputs

TEST(Reliability2Outputs, StyleOutputDirThatIsTheContentDirUnderAnySpellingIsRefused) {
  TempDir dir;
  const std::string frames = dir.file("frames");
  fs::create_directories(frames);
  write_image(frames + "/a.png", flat_image(16, 16, 0.2f));
  write_image(frames + "/b.png", flat_image(16, 16, 0.4f));
  write_image(dir.file("style.png"), flat_image(16, 16, 0.7f));
  fs::create_directory_symlink(frames, dir.file("link"));
  const std::string before_a = read_text(frames + "/a.png"), before_b = read_text(frames + "/b.png");
  for (const std::string& out : {frames, frames + "/./", frames + "/", dir.file("link"), dir.file("link/../frames")}) {
    const CliRun r = cli(dir, fmt::format("style --content-dir '{}' --output-dir '{}' --style '{}' --weights random:1 "
                                          "--size 16 --iters 1 --device cpu",
                                          frames, out, dir.file("style.png")));
    expect_refused(r, {"--output-dir", "--content-dir", "overwritten"});
  }
  EXPECT_EQ(read_text(frames + "/a.png"), before_a);
  EXPECT_EQ(read_text(frames + "/b.png"), before_b);
  // An output folder whose frame names would replace the style image is refused too.
  fs::create_directories(dir.file("out"));
  write_image(dir.file("out/a.png"), flat_image(16, 16, 0.9f));
  const std::string style_before = read_text(dir.file("out/a.png"));
  const CliRun r = cli(dir, fmt::format("style --content-dir '{}' --output-dir '{}' --style '{}' --weights random:1 "
                                        "--size 16 --iters 1 --device cpu",
                                        frames, dir.file("out"), dir.file("out/a.png")));
  expect_refused(r, {"--output-dir", "--style"});
  EXPECT_EQ(read_text(dir.file("out/a.png")), style_before);
}

TEST(Reliability2Outputs, StyleOutputThatIsTheContentIsRefused) {
  TempDir dir;
  write_image(dir.file("c.png"), flat_image(16, 16, 0.2f));
  write_image(dir.file("s.png"), flat_image(16, 16, 0.6f));
  const std::string before = read_text(dir.file("c.png"));
  CliRun r = cli(dir, fmt::format("style --content '{}' --output '{}/./c.png' --style '{}' --weights random:1 "
                                  "--size 16 --iters 1 --device cpu",
                                  dir.file("c.png"), dir.path().string(), dir.file("s.png")));
  expect_refused(r, {"--output", "--content"});
  EXPECT_EQ(read_text(dir.file("c.png")), before);
  // --save-every's intermediate images count as outputs too: o_2.png would replace the style image.
  write_image(dir.file("o_2.png"), flat_image(16, 16, 0.6f));
  const std::string style_before = read_text(dir.file("o_2.png"));
  r = cli(dir, fmt::format("style --content '{}' --output '{}' --style '{}' --weights random:1 --size 16 --iters 3 "
                           "--save-every 1 --device cpu",
                           dir.file("c.png"), dir.file("o.png"), dir.file("o_2.png")));
  expect_refused(r, {"--save-every", "o_2.png", "--style"});
  EXPECT_EQ(read_text(dir.file("o_2.png")), style_before);
  EXPECT_FALSE(fs::exists(dir.file("o.png")));
}

TEST(Reliability2Outputs, TrainOutputsThatAreInputsOrEachOtherAreRefusedBeforeAnyWork) {
  CliWorkspace w;
  const std::string run = w.dir.file("run.st");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 1 --save '{}'", run))).status, 0);
  const std::string checkpoint = read_text(run);
  // --metrics-json over --resume (spelled differently).
  CliRun r = cli(
      w.dir, w.train(fmt::format("--epochs 2 --resume '{}' --metrics-json '{}/./run.st'", run, w.dir.path().string())));
  expect_refused(r, {"--metrics-json", "--resume", "overwritten"});
  EXPECT_EQ(read_text(run), checkpoint);
  // --save into the training data.
  r = cli(w.dir, w.train(fmt::format("--epochs 1 --save '{}/new.st'", w.data)));
  expect_refused(r, {"--save", "lies in the input --data folder"});
  EXPECT_FALSE(fs::exists(w.data + "/new.st"));
  // --save and --save-best: the same file through a hard link.
  write_string(w.dir.file("a.st"), "x");
  fs::create_hard_link(w.dir.file("a.st"), w.dir.file("b.st"));
  r = cli(w.dir,
          w.train(fmt::format("--epochs 1 --save '{}' --save-best '{}'", w.dir.file("a.st"), w.dir.file("b.st"))));
  expect_refused(r, {"--save", "--save-best", "same path"});
  EXPECT_EQ(read_text(w.dir.file("a.st")), "x");
  // Resuming in place stays allowed: it continues the run.
  r = cli(w.dir, w.train(fmt::format("--epochs 2 --resume '{0}' --save '{0}'", run)));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "resuming '" + run + "' at epoch 1")) << r.out;
}

TEST(Reliability2Outputs, EvalPredictPlotAndSummaryRefuseAnOutputThatIsAnInput) {
  CliWorkspace w;
  const std::string run = w.dir.file("run.st");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 1 --save '{}'", run))).status, 0);
  const std::string checkpoint = read_text(run);
  CliRun r =
      cli(w.dir, fmt::format("eval --model mlp --data '{}' --device cpu --weights '{}' --json '{}'", w.data, run, run));
  expect_refused(r, {"--json", "--weights"});
  write_image(w.dir.file("img.png"), flat_image(28, 28, 0.5f));
  r = cli(w.dir, fmt::format("predict --model mlp --weights '{}' --image '{}' --json '{}/../{}/run.st'", run,
                             w.dir.file("img.png"), w.dir.path().string(), w.dir.path().filename().string()));
  expect_refused(r, {"--json", "--weights"});
  EXPECT_EQ(read_text(run), checkpoint);
  write_string(w.dir.file("m.json"), R"({"epochs": []})");
  r = cli(w.dir, fmt::format("plot '{}' -o '{}'", w.dir.file("m.json"), w.dir.file("m.json")));
  expect_refused(r, {"--output", "metrics"});
  const std::string net =
      R"({"input": [1, 4, 4], "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 2}]})";
  write_string(w.dir.file("net.json"), net);
  r = cli(w.dir, fmt::format("summary --model '{}' --export './net.json'", w.dir.file("net.json")));
  expect_refused(r, {"--export", "--model"});
  EXPECT_EQ(read_text(w.dir.file("net.json")), net);
}

// ---------------------------------------------------------------- 2. crashes

std::string deeply_nested_model(int depth) {
  return R"({"input": [1, 4, 4], "layers": [{"type": "relu", "name": )" + std::string(depth, '[') +
         std::string(depth, ']') + "}]}";
}

TEST(Reliability2Crashes, AModelFileNested75000DeepIsOneLineNotASegfault) {
  TempDir dir;
  const std::string path = dir.file("deep.json");
  write_string(path, deeply_nested_model(75000));
  // A valid (empty) weights file: predict and eval read a checkpoint's metadata before the model
  // file, and the model file's depth is what is under test.
  write_safetensors(dir.file("w.st"), {});
  fs::create_directories(dir.file("data"));
  for (const std::string cmd : {"summary --model", "predict --weights w.st --image w.st --model",
                                "train --data data --model", "eval --data data --weights w.st --model"}) {
    const CliRun r = cli(dir, fmt::format("{} '{}'", cmd, path));
    expect_refused(r, {"deep.json", "nested more than 64 deep"});
  }
  expect_error([&] { (void)parse_model_json(deeply_nested_model(75000), "deep.json"); }, {"deep.json", "nested"});
  // Shallow nesting in a wrong place still gets the field's message, with the value cut short.
  expect_error([&] { (void)parse_model_json(deeply_nested_model(10), "d.json"); }, {"'name' must be a non-empty"});
}

TEST(Reliability2Crashes, JsonReaderRefusesRepeatedKeysAndOverflowingNumbersNamingTheSource) {
  expect_error([] { (void)io::parse_json(R"({"a": 1, "a": 2})", "f.json"); }, {"f.json", "\"a\" appears twice"});
  expect_error([] { (void)io::parse_json(R"({"a": {"b": 1, "b": 1}})", "f.json"); }, {"\"b\" appears twice"});
  EXPECT_NO_THROW((void)io::parse_json(R"({"a": {"b": 1}, "c": {"b": 1}})", "f.json"));
  const std::string message = error_message([] { (void)io::parse_json(R"({"x": 1e400})", "big.json"); });
  EXPECT_TRUE(contains(message, "big.json")) << message;
  EXPECT_FALSE(contains(message, "json.exception")) << message;
}

// ---------------------------------------------------------------- 3. hangs

TEST(Reliability2Hangs, PlotWithUnsortedOrHugeEpochsFinishes) {
  TempDir dir;
  const auto epoch = [](double e) {
    return nlohmann::json{{"epoch", e},       {"train_loss", 0.5},      {"train_accuracy", 0.5},
                          {"test_loss", 0.6}, {"test_accuracy", 0.4},   {"lr", 0.01},
                          {"seconds", 1.0},   {"images_per_second", 10}};
  };
  write_string(dir.file("unsorted.json"), nlohmann::json{{"epochs", {epoch(3), epoch(1), epoch(2)}}}.dump());
  CliRun r = cli(dir, fmt::format("plot '{}'", dir.file("unsorted.json")), 30);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir.file("unsorted.png")));
  write_string(dir.file("huge.json"), nlohmann::json{{"epochs", {epoch(1), epoch(1e17), epoch(1e17 + 64)}}}.dump());
  r = cli(dir, fmt::format("plot '{}'", dir.file("huge.json")), 30);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir.file("huge.png")));
}

TEST(Reliability2Hangs, AModelFileOfTooManyLayersIsRefusedAndManyAreQuick) {
  const auto model = [](int n) {
    std::string text = R"({"input": [1, 2, 2], "layers": [)";
    for (int i = 0; i < n; ++i) text += fmt::format("{}{{\"type\": \"relu\", \"name\": \"r{}\"}}", i ? "," : "", i);
    return text + "]}";
  };
  expect_error([&] { (void)parse_model_json(model(100000), "big.json"); }, {"big.json", "at most 10000"});
  const auto start = std::chrono::steady_clock::now();
  const ModelFile f = parse_model_json(model(10000), "many.json");
  EXPECT_EQ(f.model.size(), 10000u);
  // A linear name check; quadratic took seconds at this size even before the file limit.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20.0);
}

// ---------------------------------------------------------------- 4. memory before checks

TEST(Reliability2Memory, ForgedNumClassesAndHugeLabelLinesAreRefusedBeforeAllocating) {
  CliWorkspace w;
  const std::string run = w.dir.file("run.st"), forged = w.dir.file("forged.st");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 1 --save '{}' --max-steps 1", run))).status, 0);
  rewrite_safetensors(run, forged, [](auto&, auto& meta) { meta["extra.num_classes"] = "9999999"; });
  write_image(w.dir.file("img.png"), flat_image(28, 28, 0.5f));
  CliRun r = cli(w.dir, fmt::format("predict --model mlp --weights '{}' --image '{}'", forged, w.dir.file("img.png")));
  expect_refused(r, {"forged.st", "num_classes is 9999999", "does not match"});
  // A labels "line" of 50 MB with no newline stops at the line limit.
  {
    std::string big(50u << 20, 'x');
    write_string(w.dir.file("labels.txt"), big);
  }
  r = cli(w.dir, fmt::format("predict --model mlp --weights '{}' --image '{}' --labels '{}'", run,
                             w.dir.file("img.png"), w.dir.file("labels.txt")));
  expect_refused(r, {"--labels", "labels.txt", "line 1 is longer than"});
}

// ---------------------------------------------------------------- 5. raw library text

TEST(Reliability2Messages, ReadersNameTheFileAndTheField) {
  TempDir dir;
  write_string(dir.file("inf.json"), R"({"input": [1, 4, 4], "layers": [{"type": "dropout", "p": 1e400}]})");
  expect_refused(cli(dir, fmt::format("summary --model '{}'", dir.file("inf.json"))), {"inf.json", "not valid JSON"});
  write_string(dir.file("m.json"), R"({"epochs": [{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.5,
    "test_loss": 0.5, "test_accuracy": 0.5}], "best_epoch": "one"})");
  expect_refused(cli(dir, fmt::format("plot '{}'", dir.file("m.json"))), {"m.json", "best_epoch"});
  const auto bench = [](double median) {
    return nlohmann::json{{"results", {{{"op", "relu"}, {"shape", "[4]"}, {"backend", "cpu"}, {"median_ms", median}}}}}
        .dump();
  };
  write_string(dir.file("old.json"), bench(1.0));
  fs::create_directories(dir.file("folder"));
  expect_refused(cli(dir, fmt::format("bench --compare '{}' '{}'", dir.file("old.json"), dir.file("folder"))),
                 {"--compare", "folder"});
  write_string(dir.file("zero.json"), bench(0.0));
  expect_refused(cli(dir, fmt::format("bench --compare '{}' '{}'", dir.file("old.json"), dir.file("zero.json"))),
                 {"zero.json", "median_ms", "> 0"});
  write_string(dir.file("typed.json"),
               R"({"results": [{"op": 5, "shape": "[4]", "backend": "cpu", "median_ms": 1.0}]})");
  expect_refused(cli(dir, fmt::format("bench --compare '{}' '{}'", dir.file("old.json"), dir.file("typed.json"))),
                 {"typed.json", "results[0].op must be a string"});
}

TEST(Reliability2Messages, LabelFilesAreCheckedLineByLine) {
  CliWorkspace w;
  const std::string run = w.dir.file("run.st");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 1 --save '{}' --max-steps 1", run))).status, 0);
  const std::string eval = fmt::format("eval --model mlp --data '{}' --device cpu --weights '{}'", w.data, run);
  const auto labels = [&](const std::string& text) {
    write_string(w.dir.file("l.txt"), text);
    return cli(w.dir, eval + fmt::format(" --labels '{}' --json '{}'", w.dir.file("l.txt"), w.dir.file("e.json")));
  };
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += fmt::format("c{}\n", i);
  expect_refused(labels(ten + "extra\n"), {"l.txt", "more than 10 lines"});
  expect_refused(labels("a\n\nc\nd\ne\nf\ng\nh\ni\nj\n"), {"l.txt", "line 2 is blank"});
  expect_refused(labels("a\n\xff\xfe\nc\nd\ne\nf\ng\nh\ni\nj\n"), {"l.txt", "line 2 is not UTF-8"});
  EXPECT_FALSE(fs::exists(w.dir.file("e.json")));
  // CRLF is read as LF: no '\r' in the names.
  std::string crlf;
  for (int i = 0; i < 10; ++i) crlf += fmt::format("c{}\r\n", i);
  const CliRun r = labels(crlf);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_FALSE(contains(read_text(w.dir.file("e.json")), "\\r"));
}

// ---------------------------------------------------------------- 6. resume says what it does

TEST(Reliability2Resume, RefusesWhatItCannotHonourAndAcceptsAnotherSpellingOfTheModelFile) {
  CliWorkspace w;
  const std::string run = w.dir.file("run.st");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 2 --save '{}'", run))).status, 0);
  const std::string checkpoint = read_text(run);
  const std::string out = w.dir.file("out.st"), metrics = w.dir.file("metrics.json");
  const std::string outputs = fmt::format("--save '{}' --metrics-json '{}'", out, metrics);
  // Already past the target.
  expect_refused(cli(w.dir, w.train(fmt::format("--epochs 2 --resume '{}' {}", run, outputs))),
                 {"--resume", "at epoch 2 already", "--epochs 2"});
  // Another batch size or another training set.
  expect_refused(
      cli(w.dir, fmt::format("train --model mlp --data '{}' --device cpu --batch-size 64 --epochs 3 --resume '{}' {}",
                             w.data, run, outputs)),
      {"--resume", "--batch-size 32", "asks 64"});
  expect_refused(cli(w.dir, w.train(fmt::format("--epochs 3 --subset 100 --resume '{}' {}", run, outputs))),
                 {"--resume", "320 training images", "this run has 100"});
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(metrics));
  // Hand-edited metadata: forged accuracies, a text learning rate, a NaN.
  const std::string edited = w.dir.file("edited.st");
  const std::vector<std::pair<std::string, std::string>> forgeries = {
      {"optimizer.lr", "abc"}, {"optimizer.momentum", "nan"}, {"extra.batch_size", "x"}};
  for (const auto& forgery : forgeries) {
    const std::string& key = forgery.first;  // not structured bindings: the lambda below captures them
    const std::string& value = forgery.second;
    rewrite_safetensors(run, edited, [&](auto&, auto& meta) { meta[key] = value; });
    expect_refused(cli(w.dir, w.train(fmt::format("--epochs 3 --resume '{}' {}", edited, outputs))), {key, value});
  }
  rewrite_safetensors(run, edited, [](auto&, auto& meta) {
    nlohmann::json m = nlohmann::json::parse(meta["extra.metrics"]);
    m[0]["test_accuracy"] = 7.5;
    meta["extra.metrics"] = m.dump();
  });
  expect_refused(cli(w.dir, w.train(fmt::format("--epochs 3 --resume '{}' {}", edited, outputs))),
                 {"extra.metrics", "test_accuracy", "[0, 1]"});
  rewrite_safetensors(run, edited, [](auto&, auto& meta) {
    nlohmann::json m = nlohmann::json::parse(meta["extra.metrics"]);
    m[1]["epoch"] = 1e30;
    meta["extra.metrics"] = m.dump();
  });
  expect_refused(cli(w.dir, w.train(fmt::format("--epochs 3 --resume '{}' {}", edited, outputs))),
                 {"extra.metrics", "epoch"});
  EXPECT_EQ(read_text(run), checkpoint);
  EXPECT_FALSE(fs::exists(out));
}

TEST(Reliability2Resume, AModelFileMayBeSpelledOtherwiseOrCopied) {
  CliWorkspace w;
  const std::string net =
      R"({"input": [1, 28, 28], "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10}]})";
  fs::create_directories(w.dir.file("m"));
  write_string(w.dir.file("m/net.json"), net);
  write_string(w.dir.file("copy.json"), net);
  const std::string run = w.dir.file("run.st");
  const auto train = [&](const std::string& model, const std::string& extra) {
    return fmt::format("train --model '{}' --data '{}' --dataset mnist --device cpu --batch-size 32 {}", model, w.data,
                       extra);
  };
  ASSERT_EQ(cli(w.dir, train(w.dir.file("m/net.json"), fmt::format("--epochs 1 --save '{}'", run))).status, 0);
  CliRun r =
      cli(w.dir, train(w.dir.file("m/../m/./net.json"), fmt::format("--epochs 2 --resume '{0}' --save '{0}'", run)));
  EXPECT_EQ(r.status, 0) << r.err;
  r = cli(w.dir, train(w.dir.file("copy.json"), fmt::format("--epochs 3 --resume '{0}' --save '{0}'", run)));
  EXPECT_EQ(r.status, 0) << r.err;
  // Another model file with the same name but other layers is refused.
  write_string(w.dir.file("other.json"),
               R"({"input": [1, 28, 28], "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10},
                   {"type": "relu"}]})");
  r = cli(w.dir, train(w.dir.file("other.json"), fmt::format("--epochs 4 --resume '{}'", run)));
  expect_refused(r, {"--resume", "layers differ"});
}

// ---------------------------------------------------------------- 7. accepted silently before

TEST(Reliability2Silent, StyleListsAndPlotExtensionsAreCheckedUpFront) {
  TempDir dir;
  write_image(dir.file("c.png"), flat_image(16, 16, 0.2f));
  write_image(dir.file("s.png"), flat_image(16, 16, 0.6f));
  const std::string base = fmt::format(
      "style --content '{}' --output '{}' --style '{}' --weights random:1 --size 16 "
      "--iters 1 --device cpu",
      dir.file("c.png"), dir.file("o.png"), dir.file("s.png"));
  expect_refused(cli(dir, base + " --style-masks ,"), {"--style-masks", "empty item"});
  expect_refused(cli(dir, base + " --content-layers relu4_2,relu4_2"), {"relu4_2", "twice"});
  EXPECT_FALSE(fs::exists(dir.file("o.png")));
  CliWorkspace w;
  expect_refused(cli(w.dir, w.train(fmt::format("--epochs 1 --plot '{}'", w.dir.file("curves.txt")))),
                 {"--plot", ".png"});
  // A model name with a control character would break every line that prints it.
  expect_error(
      [] {
        (void)parse_model_json(R"({"input": [1, 2, 2], "layers": [{"type": "relu", "name": "a\nb"}]})", "ctl.json");
      },
      {"ctl.json", "control characters"});
}

TEST(Reliability2Silent, ShapesWhoseElementCountOverflowsAreRefused) {
  // Each size within its own limit; their product per sample past 2^40.
  expect_error(
      [] {
        (void)parse_model_json(R"({"input": [1048576, 65536, 65536], "layers": [{"type": "relu"}]})", "huge.json");
      },
      {"huge.json", "more than 2^40 elements"});
  expect_error(
      [] {
        (void)parse_model_json(R"({"input": [1, 65536, 65536], "layers": [{"type": "conv2d", "out_channels": 1048576,
          "kernel_size": 1}]})",
                               "wide.json");
      },
      {"wide.json", "layer 0", "more than 2^40 elements"});
}

TEST(Reliability2Silent, ImageFoldersRefuseEmptyClassesAndImageNamesThatAreNotFiles) {
  TempDir dir;
  for (const char* split : {"train", "test"}) {
    fs::create_directories(dir.file(fmt::format("d/{}/a", split)));
    fs::create_directories(dir.file(fmt::format("d/{}/b", split)));
    write_image(dir.file(fmt::format("d/{}/a/1.png", split)), flat_image(8, 8, 0.1f));
  }
  write_image(dir.file("d/test/b/1.png"), flat_image(8, 8, 0.1f));
  // train/b is empty.
  expect_error([&] { (void)list_image_folder(dir.file("d"), 8); }, {"class folder", "train/b", "holds no"});
  write_image(dir.file("d/train/b/1.png"), flat_image(8, 8, 0.1f));
  EXPECT_NO_THROW((void)list_image_folder(dir.file("d"), 8));
  // A dangling link named like an image stops the listing instead of being skipped.
  fs::create_symlink(dir.file("d/nowhere.png"), dir.file("d/train/b/2.png"));
  expect_error([&] { (void)list_image_folder(dir.file("d"), 8); }, {"2.png", "not a regular file"});
  fs::remove(dir.file("d/train/b/2.png"));
  ASSERT_EQ(::mkfifo(dir.file("d/train/b/3.png").c_str(), 0600), 0);
  expect_error([&] { (void)list_image_folder(dir.file("d"), 8); }, {"3.png", "not a regular file"});
}

TEST(Reliability2Silent, ValidationSplitLeavesEveryClassATrainingImage) {
  Context ctx{Device::cpu()};
  Dataset data = synthetic_patterns(21, 1, 2, 2, 3, 1, ctx);
  // Make class 2 a class of one image: relabel all but one of its images as class 0.
  std::int32_t* labels = data.labels.data<std::int32_t>();
  bool kept = false;
  for (std::int64_t i = 0; i < data.size(); ++i)
    if (labels[i] == 2) {
      if (kept) labels[i] = 0;
      kept = true;
    }
  const auto [train, val] = split_validation(data, 0.9, 3);
  bool class2_trains = false;
  const std::int32_t* t = train.labels.data<std::int32_t>();
  for (std::int64_t i = 0; i < train.size(); ++i) class2_trains = class2_trains || t[i] == 2;
  EXPECT_TRUE(class2_trains);
  EXPECT_GT(val.size(), 0);
}

TEST(Reliability2Silent, PreprocessMetadataIsReadAsWholeNumbersNotTruncatedOrWrapped) {
  EXPECT_EQ(preprocess_from_json(R"({"resize": 16, "crop": [16, 16], "channels": 3})", "w.st").resize, 16);
  expect_error([] { (void)preprocess_from_json(R"({"resize": 16.5, "crop": [16, 16], "channels": 3})", "w.st"); },
               {"w.st", "resize must be a whole number"});
  expect_error([] { (void)preprocess_from_json(R"({"resize": 4294967312, "crop": [16, 16], "channels": 3})", "w.st"); },
               {"w.st", "resize must be a whole number"});
  expect_error([] { (void)preprocess_from_json(R"({"resize": 16, "crop": [16], "channels": 3})", "w.st"); },
               {"w.st", "crop must be [height, width]"});
  expect_error([] { (void)classes_from_json(R"(["a", 5])", "w.st"); }, {"w.st", "item 1 is not a string"});
}

TEST(Reliability2Silent, AModelWithNothingToTrainIsRefused) {
  Context ctx{Device::cpu()};
  const Dataset data = synthetic_patterns(8, 1, 2, 2, 4, 1, ctx);
  ModelFile f =
      parse_model_json(R"({"input": [1, 2, 2], "layers": [{"type": "flatten"}, {"type": "relu"}]})", "flat.json");
  f.model.build(ctx, 1);
  FitOptions o;
  o.model_name = "flat.json";
  o.epochs = 1;
  o.batch_size = 4;
  expect_error([&] { (void)fit(ctx, f.model, data, Dataset{}, data, o); }, {"flat.json", "nothing to train"});
}

TEST(Reliability2Memory, PrefetchStagingBeyondTheMachinesMemoryIsRefusedBeforeAllocating) {
  Context ctx{Device::cpu()};
  // A listed folder of one image that decodes to 3 x 200000 x 200000 floats (480 GB): staging even
  // one batch of it cannot fit, and the loader says so before allocating anything.
  auto files = std::make_shared<ImageFiles>();
  files->paths = {"never-read.png"};
  files->size = 200000;
  Dataset d;
  d.files = files;
  d.num_classes = 1;
  d.name = "huge";
  const std::int32_t label = 0;
  d.labels = Tensor::from_host(std::span<const std::int32_t>(&label, 1), {1}, ctx);
  LoaderOptions o;
  o.batch_size = 1;
  o.prefetch = 4;
  expect_error([&] { DataLoader loader(d, ctx, o); }, {"--prefetch", "would stage", "huge"});
}

TEST(Reliability2Silent, AnAutoencoderTrainedAsAClassifierSaysWhatItOutputs) {
  CliWorkspace w;
  const CliRun r = cli(w.dir, fmt::format("train --model '{}/examples/conv_autoencoder.json' --data '{}' --dataset "
                                          "mnist --device cpu --epochs 1",
                                          source_dir(), w.data));
  expect_refused(r, {"conv_autoencoder.json", "not class scores", "--target input"});
  EXPECT_FALSE(contains(r.err, "0 outputs")) << r.err;
}

TEST(Reliability2Silent, PredictRefusesAnImageNameThatIsNotAFile) {
  CliWorkspace w;
  const std::string run = w.dir.file("run.st");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 1 --max-steps 1 --save '{}'", run))).status, 0);
  fs::create_directories(w.dir.file("imgs"));
  write_image(w.dir.file("imgs/a.png"), flat_image(28, 28, 0.5f));
  fs::create_symlink(w.dir.file("imgs/missing.png"), w.dir.file("imgs/b.png"));
  const CliRun r = cli(w.dir, fmt::format("predict --model mlp --weights '{}' --image '{}'", run, w.dir.file("imgs")));
  expect_refused(r, {"b.png", "not a regular file"});
}

TEST(Reliability2Silent, PredictOnAnotherImageSizeBlamesTheModelNotAFolderDataset) {
  CliWorkspace w;
  const std::string run = w.dir.file("run.st");
  ASSERT_EQ(cli(w.dir, w.train(fmt::format("--epochs 1 --max-steps 1 --save '{}'", run))).status, 0);
  write_image(w.dir.file("img.png"), flat_image(28, 28, 0.5f));
  const CliRun r = cli(w.dir, fmt::format("predict --model mlp --weights '{}' --image '{}' --image-size 32", run,
                                          w.dir.file("img.png")));
  expect_refused(r, {"predict: mlp takes", "square RGB"});
  EXPECT_FALSE(contains(r.err, "--dataset folder")) << r.err;
}

TEST(Reliability2Silent, ALogRedirectedToAFileKeepsItsLinesWhenTheRunIsKilled) {
  CliWorkspace w;
  const std::string out = w.dir.file("log.txt");
  // Train for long; once the first line is in the file, SIGTERM. Block buffering kept that line in
  // the process until exit, so a killed run left an empty log.
  const std::string script = fmt::format(
      "'{}' {} > '{}' 2> /dev/null & pid=$!; for i in $(seq 600); do grep -q training '{}' && break; sleep 0.1; done; "
      "kill -TERM $pid; wait $pid",
      cli_path(), w.train("--epochs 100000"), out, out);
  write_string(w.dir.file("kill.sh"), script + "\n");
  (void)std::system(fmt::format("cd '{}' && bash kill.sh", w.dir.path().string()).c_str());
  EXPECT_TRUE(contains(read_text(out), "training mlp")) << read_text(out);
}
