// Data-parallel training (issue 12): the shard arithmetic in process, and `mpirun -np 2 cudl train`
// against one process on a small synthetic MNIST-shaped set: the same parameters after a step,
// resuming on another number of ranks, one writer, a clear error for a batch that does not split,
// and a dead or hung rank ending the run within the timeout with the last checkpoint intact.
// The mpirun tests skip visibly without MPI in the build or mpirun on the PATH; the NCCL one
// without two GPUs.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "cudl/engine/dist/session.hpp"
#include "cudl/engine/distributed.hpp"
#include "cudl/engine/io/safetensors.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/train/data_parallel.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

// Defined by cudl_distributed's build when CMake found MPI (and NCCL).
#ifndef CUDL_HAVE_MPI
#define CUDL_HAVE_MPI 0
#endif
#ifndef CUDL_HAVE_NCCL
#define CUDL_HAVE_NCCL 0
#endif

using namespace cudl;
using namespace cudl::testing;
namespace fs = std::filesystem;

namespace {

// A communicator that only knows its place: enough for the shard arithmetic.
class PlaceOnly final : public Communicator {
 public:
  PlaceOnly(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return rank_; }
  std::string name() const override { return "test"; }
  void allreduce_mean(Context&, Tensor&) override {}
  void allreduce_sum(std::vector<double>&) override {}
  void broadcast(Context&, Tensor&, int) override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }

 private:
  int rank_, size_;
};

}  // namespace

TEST(DataParallel, ShardsCoverEveryBatchOnceAndWeightTheGradient) {
  for (int size : {1, 2, 3, 8})
    for (std::int64_t batch : {0, 1, 7, 8, 64, 100}) {
      std::int64_t next = 0;
      double weight = 0;
      for (int r = 0; r < size; ++r) {
        const Shard s = shard_of(batch, r, size);
        EXPECT_EQ(s.begin, next) << batch << " rows over " << size;
        EXPECT_LE(s.rows(), batch / size + 1);
        next = s.end;
        PlaceOnly comm(r, size);
        weight += shard_loss_scale(&comm, s.rows(), batch) / size;
      }
      EXPECT_EQ(next, batch);
      // The ranks' gradient weights average to one: the mean of the ranks' gradients is the batch's.
      if (batch > 0) {
        EXPECT_NEAR(weight, 1.0, 1e-6) << batch << " rows over " << size;
      }
    }
  EXPECT_THROW(shard_of(8, 2, 2), Error);
}

TEST(DataParallel, BatchThatDoesNotSplitIsRefusedBeforeTraining) {
  PlaceOnly comm(0, 2);
  expect_error([&] { check_data_parallel_batches(&comm, 320, 33); },
               {"--batch-size 33 is the global batch and must divide by the 2 ranks"});
  expect_error([&] { check_data_parallel_batches(&comm, 321, 32); }, {"last batch of each epoch holds 1 image"});
  check_data_parallel_batches(&comm, 322, 32);  // 2 in the last batch: one each
  check_data_parallel_batches(nullptr, 321, 33);
}

TEST(DataParallel, LocalShardSlicesTheGlobalBatch) {
  Context ctx{Device::cpu()};
  const Dataset d = synthetic_patterns(10, 1, 4, 4, 3, 1, ctx);
  Batch global;
  global.images = d.images;
  global.labels = d.labels;
  Sequential model;
  model.add("drop", std::make_unique<Dropout>(0.5f));
  PlaceOnly second(1, 2);
  const Batch local = local_shard(model, global, &second);
  ASSERT_EQ(local.labels.dim(0), 5);
  EXPECT_EQ(local.labels.to_int_vector(ctx)[0], d.labels.to_int_vector(ctx)[5]);
  EXPECT_EQ(local.images.to_vector(ctx)[0], d.images.to_vector(ctx)[5 * 16]);
  EXPECT_EQ(local_part(d, &second).size(), 5);
  // The model's dropout knows its rows of the global batch (the layer's own setting, not the context's).
  const auto& drop = dynamic_cast<const Dropout&>(model.layer("drop"));
  EXPECT_EQ(drop.global_rows().begin, 5);
  EXPECT_EQ(drop.global_rows().global, 10);
  EXPECT_EQ(local_shard(model, global, nullptr).labels.dim(0), 10);
}

TEST(DataParallel, DropoutOnAShardDrawsTheGlobalBatchsMaskForItsRows) {
  // Two steps of a [10, 6] batch in one process against rows 5..9 on rank 1 of 2: the rank's masks
  // are the global masks' rows, and its counter steps past the whole global batch each time.
  Context ctx{Device::cpu()};
  std::vector<float> ones(60, 1.0f);
  const Tensor x = Tensor::from_host(std::span<const float>(ones), {10, 6}, ctx);
  Dropout whole(0.5f, 11), shard(0.5f, 11);
  shard.set_global_rows({5, 10});
  for (int step = 0; step < 2; ++step) {
    const std::vector<float> all = whole.forward(ctx, x, true).to_vector(ctx);
    const std::vector<float> part = shard.forward(ctx, x.slice(5, 10), true).to_vector(ctx);
    ASSERT_EQ(part.size(), 30u);
    EXPECT_EQ(part, std::vector<float>(all.begin() + 30, all.end())) << "step " << step;
    EXPECT_EQ(shard.counter(), whole.counter()) << "step " << step;
  }
}

TEST(DataParallel, SessionStartedWithoutALauncherIsOneProcess) {
  // The C++ API a program uses for data parallel (engine/dist/session.hpp); `mpirun` starts the
  // multi-rank case below, through `cudl train`, which runs on it.
  DistributedSession session;
  EXPECT_EQ(session.rank(), 0);
  EXPECT_EQ(session.size(), 1);
  EXPECT_FALSE(session.active());
  EXPECT_TRUE(session.writer());
  EXPECT_EQ(session.device("cpu"), Device::cpu());
  Context ctx{Device::cpu()};
  EXPECT_EQ(session.connect(ctx, 5.0), nullptr);
  EXPECT_EQ(session.communicator(), nullptr);
  session.fail("one process: the caller reports the error itself");  // returns
}

TEST(DataParallel, LocalPartOfAListedFolderTakesItsFilesAndLabels) {
  // An image folder streams from its files (engine/io/datasets.hpp): a rank's part of it is a
  // part of the list, not of an image tensor it does not have.
  Dataset listed;
  listed.name = "folder";
  listed.num_classes = 2;
  auto files = std::make_shared<ImageFiles>();
  files->size = 8;
  std::vector<std::int32_t> labels;
  for (int i = 0; i < 6; ++i) {
    files->paths.push_back(fmt::format("img{}.png", i));
    labels.push_back(i % 2);
  }
  listed.files = files;
  Context ctx{Device::cpu()};
  listed.labels = Tensor::from_host(std::span<const std::int32_t>(labels), {6}, ctx);
  PlaceOnly second(1, 2);
  const Dataset part = local_part(listed, &second);
  ASSERT_TRUE(part.listed());
  EXPECT_EQ(part.files->paths, (std::vector<std::string>{"img3.png", "img4.png", "img5.png"}));
  EXPECT_EQ(part.files->size, 8);
  EXPECT_EQ(part.labels.to_int_vector(ctx), (std::vector<std::int32_t>{1, 0, 1}));
}

// ---------------------------------------------------------------- under mpirun

namespace {

struct ShellRun {
  int status = -1;
  std::string out, err;
  double seconds = 0;
};

// Runs `command` (a shell line) with a hard limit, capturing stdout and stderr.
ShellRun shell(const TempDir& dir, const std::string& command, int limit_seconds = 120) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const auto start = std::chrono::steady_clock::now();
  const int status =
      std::system(fmt::format("timeout -k 5 {} {} > '{}' 2> '{}'", limit_seconds, command, out, err).c_str());
  ShellRun r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  const auto o = read_bytes(out), e = read_bytes(err);
  r.out.assign(o.begin(), o.end());
  r.err.assign(e.begin(), e.end());
  return r;
}

bool have_mpirun() { return std::system("command -v mpirun > /dev/null 2>&1") == 0; }

// mpirun with N ranks on this machine: --oversubscribe (CI has 2 cores), --allow-run-as-root
// when root (CI is), one OpenMP thread per rank; `program` (the CLI by default) on each.
std::string mpirun(int ranks, const std::string& program = "") {
  return fmt::format("mpirun --oversubscribe {} -np {} -x OMP_NUM_THREADS=1 {}",
                     ::geteuid() == 0 ? "--allow-run-as-root" : "", ranks,
                     program.empty() ? fmt::format("'{}'", cli_path()) : program);
}

std::string one_process() { return fmt::format("env OMP_NUM_THREADS=1 '{}'", cli_path()); }

// The CLI with a test-only fault hook (tests/drivers/dist_fault.cpp), built beside the CLI; its
// first argument is RANK:STEP:exit|hang.
std::string fault_driver_path() {
  if (const char* cli = std::getenv("CUDL_TEST_CLI"); cli != nullptr && *cli != '\0')
    return (fs::path(cli).parent_path() / "cudl_test_dist_fault").string();
  return CUDL_DIST_FAULT_DRIVER;
}

#define SKIP_WITHOUT_MPIRUN()                                                                          \
  do {                                                                                                 \
    if (!CUDL_HAVE_MPI) GTEST_SKIP() << "built without MPI (CUDL_DISTRIBUTED found no MPI)";           \
    if (!have_mpirun()) GTEST_SKIP() << "no mpirun on the PATH (Debian: apt-get install openmpi-bin)"; \
  } while (0)

struct MpiWorkspace {
  TempDir dir;
  std::string data;
  MpiWorkspace() : data(dir.file("data")) {
    fs::create_directories(data);
    Context ctx{Device::cpu()};
    write_synthetic_mnist_dir(data, ctx);  // 320 train (10 batches of 32), 100 test
  }
  // CPU ranks unless `extra` names a device: in an MPI+CUDA build a run with no --device would
  // take the GPU (issue 27).
  std::string train(const std::string& model, const std::string& extra) const {
    return fmt::format("train --model {} --data '{}' --optimizer sgd --lr 0.05 --schedule none --seed 7 {}{}{}", model,
                       data, contains(extra, "--batch-size") ? "" : "--batch-size 32 ",
                       contains(extra, "--device") ? "" : "--device cpu ", extra);
  }
};

// Every tensor of two checkpoints within `rtol` of each other, relative to the larger magnitude
// (with an absolute floor for values near zero): the parameters within `rtol`, the optimizer
// state (after one SGD step, the gradient itself: sums over 16 rows twice against 32 rows once
// round differently) within `state_rtol`.
void expect_same_checkpoint(const std::string& a_path, const std::string& b_path, double rtol,
                            double state_rtol = 1e-3) {
  const SafetensorsFile a = SafetensorsFile::open(a_path), b = SafetensorsFile::open(b_path);
  ASSERT_EQ(a.names(), b.names());
  double worst[2] = {0, 0};
  std::string where[2];
  for (const auto& name : a.names()) {
    if (a.dtype(name) != "F32") continue;
    const int state = name.starts_with("optimizer.") ? 1 : 0;
    const auto x = a.read_f32(name), y = b.read_f32(name);
    ASSERT_EQ(x.size(), y.size()) << name;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double scale = std::max({std::abs(double(x[i])), std::abs(double(y[i])), 1e-3});
      const double rel = std::abs(double(x[i]) - double(y[i])) / scale;
      if (rel > worst[state]) worst[state] = rel, where[state] = fmt::format("{}[{}] {} vs {}", name, i, x[i], y[i]);
    }
  }
  EXPECT_LE(worst[0], rtol) << "parameters: largest relative difference at " << where[0];
  EXPECT_LE(worst[1], state_rtol) << "optimizer state: largest relative difference at " << where[1];
}

}  // namespace

TEST(Distributed, TwoCpuRanksMatchOneProcessAfterOneStep) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  for (const std::string model : {"mlp", "mnist_cnn"}) {
    const std::string one = w.dir.file(model + "-1.st"), two = w.dir.file(model + "-2.st");
    ShellRun r =
        shell(w.dir, fmt::format("{} {}", one_process(), w.train(model, "--epochs 1 --max-steps 1 --save " + one)));
    ASSERT_EQ(r.status, 0) << r.err;
    r = shell(w.dir, fmt::format("{} {}", mpirun(2), w.train(model, "--epochs 1 --max-steps 1 --save " + two)));
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    // One writer: rank 0 alone prints.
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n') > 0, true);
    EXPECT_EQ(r.out.find("training " + model), r.out.rfind("training " + model)) << r.out;
    EXPECT_TRUE(contains(r.out, "data-parallel: 2 ranks over mpi, global batch 32 (16 per rank)")) << r.out;
    expect_same_checkpoint(one, two, 1e-5);
  }
}

// Issue 27 item 1: gradients all-reduced in small buckets under backward give the same weights,
// bit for bit, as one all-reduce after backward (with two ranks each element's sum is the same
// two addends), over several steps of mnist_cnn (49 buckets of 50 KB).
TEST(Distributed, BucketsUnderBackwardGiveTheSameWeightsAsOneAllReduceAfterIt) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  const std::string whole = w.dir.file("whole.st"), buckets = w.dir.file("buckets.st");
  ShellRun r = shell(
      w.dir,
      fmt::format("{} {}", mpirun(2), w.train("mnist_cnn", "--epochs 1 --max-steps 4 --bucket-mb 0 --save " + whole)));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  r = shell(w.dir, fmt::format("{} {}", mpirun(2),
                               w.train("mnist_cnn", "--epochs 1 --max-steps 4 --bucket-mb 0.05 --save " + buckets)));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "gradients reduce-scattered in 49 buckets of 0.05 MB under backward")) << r.out;
  expect_same_checkpoint(whole, buckets, 0.0, 0.0);
}

// The sharded update (the default on MPI ranks: each rank runs the optimizer, here SGD with
// momentum, on its half of every bucket, then the halves are all-gathered) gives the all-reduce's bits: with two ranks
// every element's sum is the same two addends, and the update is element by element. Over two
// epochs with a checkpoint at each, so the optimizer state a checkpoint holds (gathered from the
// ranks at every epoch's end) is checked too, with several buckets of uneven halves.
TEST(Distributed, ShardedUpdateGivesTheAllReducesBits) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  const std::string reduced = w.dir.file("allreduce.st"), sharded = w.dir.file("sharded.st");
  const std::string args = "--epochs 2 --bucket-mb 0.3 --save ";
  ShellRun r =
      shell(w.dir, fmt::format("{} {}", mpirun(2), w.train("mnist_cnn", args + reduced + " --shard-update false")));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "gradients all-reduced in 9 buckets of 0.3 MB under backward\n")) << r.out;
  r = shell(w.dir, fmt::format("{} {}", mpirun(2), w.train("mnist_cnn", args + sharded)));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out,
                       "gradients reduce-scattered in 9 buckets of 0.3 MB under backward, each rank updating its 1/2 "
                       "of the parameters"))
      << r.out;
  EXPECT_EQ(read_checkpoint_info(sharded).step, 20);
  expect_same_checkpoint(reduced, sharded, 0.0, 0.0);
  // Clipping needs the whole gradient's norm on every rank: that run all-reduces.
  r = shell(w.dir,
            fmt::format("{} {}", mpirun(2), w.train("mnist_cnn", "--epochs 1 --max-steps 1 --clip-grad-norm 1")));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "gradients all-reduced in one piece after backward\n")) << r.out;
}

// Issue 27 item 3: two ranks accumulating two global batches of 16 (8 rows each per rank) take
// the steps of one process on batches of 32: one all-reduce per step, of the summed gradients,
// here in small buckets (the gradients hook fires only in the group's last backward).
TEST(Distributed, TwoCpuRanksAccumulatingTwoBatchesMatchOneProcessOnTheDoubleBatch) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  const std::string one = w.dir.file("one.st"), two = w.dir.file("two.st");
  ShellRun r =
      shell(w.dir, fmt::format("{} {}", one_process(), w.train("mnist_cnn", "--epochs 1 --max-steps 3 --save " + one)));
  ASSERT_EQ(r.status, 0) << r.err;
  r = shell(w.dir, fmt::format("{} {}", mpirun(2),
                               w.train("mnist_cnn",
                                       "--batch-size 16 --accumulate-steps 2 --bucket-mb 0.5 --epochs 1 "
                                       "--max-steps 3 --save " +
                                           two)));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "gradient accumulation: one optimizer step per 2 batches of 16 (32 images)")) << r.out;
  EXPECT_TRUE(contains(r.out, "data-parallel: 2 ranks over mpi, global batch 16 (8 per rank)")) << r.out;
  EXPECT_EQ(read_checkpoint_info(two).step, 3);
  expect_same_checkpoint(one, two, 1e-5);
}

// Reconstruction runs in the same loop (models/train/), so it trains data-parallel too: the same
// step as one process.
TEST(Distributed, TwoCpuRanksTrainAnAutoencoderAsOneProcessDoes) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  const std::string model = fmt::format("'{}/examples/conv_autoencoder.json'", CUDL_SOURCE_DIR);
  const std::string args = "--target input --loss mse --epochs 1 --max-steps 1 --save ";
  const std::string one = w.dir.file("ae-1.st"), two = w.dir.file("ae-2.st");
  ShellRun r = shell(w.dir, fmt::format("{} {}", one_process(), w.train(model, args + one)));
  ASSERT_EQ(r.status, 0) << r.err;
  r = shell(w.dir, fmt::format("{} {}", mpirun(2), w.train(model, args + two)));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "data-parallel: 2 ranks over mpi, global batch 32 (16 per rank)")) << r.out;
  expect_same_checkpoint(one, two, 1e-5);
}

TEST(Distributed, ResumesOnAnotherNumberOfRanks) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  const std::string straight = w.dir.file("straight.st"), split = w.dir.file("split.st");
  // Two epochs in one process, against epoch 1 on two ranks then epoch 2 in one process, and
  // epoch 1 in one process then epoch 2 on two ranks: the global batches are the same either way.
  // (A constant learning rate: a run of --epochs 1 would otherwise schedule over 1 epoch, not 2.)
  ShellRun r = shell(w.dir, fmt::format("{} {}", one_process(), w.train("mlp", "--epochs 2 --save " + straight)));
  ASSERT_EQ(r.status, 0) << r.err;
  r = shell(w.dir, fmt::format("{} {}", mpirun(2), w.train("mlp", "--epochs 1 --save " + split)));
  ASSERT_EQ(r.status, 0) << r.err;
  r = shell(w.dir, fmt::format("{} {}", one_process(),
                               w.train("mlp", fmt::format("--epochs 2 --resume {0} --save {0}", split))));
  ASSERT_EQ(r.status, 0) << r.err;
  expect_same_checkpoint(straight, split, 1e-4);
  const std::string other = w.dir.file("other.st");
  r = shell(w.dir, fmt::format("{} {}", one_process(), w.train("mlp", "--epochs 1 --save " + other)));
  ASSERT_EQ(r.status, 0) << r.err;
  r = shell(w.dir,
            fmt::format("{} {}", mpirun(2), w.train("mlp", fmt::format("--epochs 2 --resume {0} --save {0}", other))));
  ASSERT_EQ(r.status, 0) << r.err;
  expect_same_checkpoint(straight, other, 1e-4);
}

TEST(Distributed, GlobalBatchThatDoesNotSplitIsAClearError) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  const ShellRun r = shell(w.dir, fmt::format("{} {}", mpirun(2), w.train("mlp", "--epochs 1 --batch-size 33")));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "--batch-size 33 is the global batch and must divide by the 2 ranks")) << r.err;
}

// A rank that hangs (or dies) in epoch 2: the other stops within --dist-timeout with a message
// saying so, and epoch 1's checkpoint stays whole.
// Issue 22: two ranks started with different arguments (mpirun's A : B form) stop with one line
// naming what differs, before any collective whose sizes they would disagree on (that corrupted
// the heap: MPI_ERR_TRUNCATE, then free(): invalid pointer) or a different seed trained silently.
TEST(Distributed, RanksThatDisagreeStopNamingWhatDiffers) {
  SKIP_WITHOUT_MPIRUN();
  MpiWorkspace w;
  const auto rank = [](const std::string& args) {
    return fmt::format("-np 1 -x OMP_NUM_THREADS=1 '{}' {}", cli_path(), args);
  };
  const std::string launcher = fmt::format("mpirun --oversubscribe {}", ::geteuid() == 0 ? "--allow-run-as-root" : "");
  const std::string out = w.dir.file("never.st");
  std::string seed8 = w.train("mlp", "--epochs 1");
  seed8.replace(seed8.find("--seed 7"), 8, "--seed 8");
  struct Case {
    std::string a, b, expected;
  };
  const std::vector<Case> cases = {
      {w.train("mlp", "--epochs 1"), w.train("mlp", "--epochs 1 --batch-size 64"),
       "ranks disagree on --batch-size: rank 0 has 32, rank 1 has 64"},
      {w.train("mlp", "--epochs 1"), seed8, "ranks disagree on --seed: rank 0 has 7, rank 1 has 8"},
      {w.train("mlp", "--epochs 1"), w.train("mnist_cnn", "--epochs 1"), "ranks disagree on the model"},
      {w.train("mlp", "--epochs 1"), w.train("mlp", "--epochs 1 --subset 160"),
       "ranks disagree on the training images: rank 0 has 320, rank 1 has 160"},
      // Buckets of other sizes would exchange all-reduces of other sizes.
      {w.train("mlp", "--epochs 1 --bucket-mb 1"), w.train("mlp", "--epochs 1 --bucket-mb 2"),
       "ranks disagree on --bucket-mb"},
      // Other accumulations would all-reduce at other batches (one rank waiting for the other's).
      {w.train("mlp", "--epochs 1"), w.train("mlp", "--epochs 1 --accumulate-steps 2"),
       "ranks disagree on --accumulate-steps: rank 0 has 1, rank 1 has 2"},
  };
  for (const Case& c : cases) {
    const ShellRun r = shell(w.dir, fmt::format("{} {} --save '{}' : {}", launcher, rank(c.a), out, rank(c.b)));
    EXPECT_NE(r.status, 0) << c.expected;
    EXPECT_TRUE(contains(r.err, c.expected)) << r.err;
    for (const char* crash : {"MPI_ERR_TRUNCATE", "free()", "Segmentation", "SIGSEGV"})
      EXPECT_FALSE(contains(r.err, crash)) << r.err;
    EXPECT_FALSE(fs::exists(out)) << c.expected;
  }
}

TEST(Distributed, HungOrDeadRankStopsTheRunAndKeepsTheCheckpoint) {
  SKIP_WITHOUT_MPIRUN();
  const std::string driver = fault_driver_path();
  if (!fs::exists(driver)) GTEST_SKIP() << "no fault-injection driver at " << driver;
  // What epoch 1 leaves when nothing fails: the faulty runs' checkpoint must hold exactly this.
  MpiWorkspace reference;
  const std::string epoch1 = reference.dir.file("epoch1.st");
  const ShellRun clean =
      shell(reference.dir,
            fmt::format("{} {}", mpirun(2), reference.train("mlp", "--epochs 3 --max-steps 10 --save " + epoch1)));
  ASSERT_EQ(clean.status, 0) << clean.err;
  for (const std::string mode : {"hang", "exit"}) {
    MpiWorkspace w;
    const std::string save = w.dir.file("run.st");
    // The driver's first argument makes rank 1 hang or exit just before step 13's all-reduce.
    const std::string launch = mpirun(2, fmt::format("'{}' 1:13:{}", driver, mode));
    const ShellRun r =
        shell(w.dir, fmt::format("{} {}", launch, w.train("mlp", "--epochs 3 --dist-timeout 3 --save " + save)));
    EXPECT_NE(r.status, 0) << mode;
    EXPECT_LT(r.seconds, 60) << mode;
    EXPECT_TRUE(contains(r.err, "test fault: rank 1 " + mode + " at step 13")) << r.err;
    if (mode == "hang") {
      EXPECT_TRUE(contains(r.err, "rank 0 of 2 waited 3 s (--dist-timeout) for the other ranks")) << r.err;
    }
    const CheckpointInfo info = read_checkpoint_info(save);
    EXPECT_EQ(info.epoch, 1) << mode;
    EXPECT_EQ(info.step, 10) << mode;
    EXPECT_NO_THROW(SafetensorsFile::open(save)) << mode;
    expect_same_checkpoint(epoch1, save, 0.0, 0.0);  // intact: epoch 1's weights and optimizer state
  }
}

TEST(Distributed, TwoGpuRanksOverNcclMatchOneProcess) {
  SKIP_WITHOUT_MPIRUN();
  if (!CUDL_HAVE_NCCL) GTEST_SKIP() << "built without NCCL (no CUDA backend, or nccl.h/libnccl not found)";
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << cuda_device_count();
  MpiWorkspace w;
  const std::string one = w.dir.file("one.st"), two = w.dir.file("two.st");
  ShellRun r =
      shell(w.dir, fmt::format("'{}' {}", cli_path(),
                               w.train("mnist_cnn", "--device cuda:0 --epochs 1 --max-steps 1 --save " + one)));
  ASSERT_EQ(r.status, 0) << r.err;
  r = shell(w.dir, fmt::format("{} {}", mpirun(2),
                               w.train("mnist_cnn", "--device cuda --epochs 1 --max-steps 1 --save " + two)));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "2 ranks over nccl")) << r.out;
  expect_same_checkpoint(one, two, 1e-5);
}
