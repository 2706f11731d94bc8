// The NCCL communicator on the one GPU a test machine has (issue 27 item 5): one rank alone, no
// MPI, through the same code as a data-parallel run's (engine/dist/nccl.cpp): non-blocking creation,
// bucketed all-reduces on its own stream ordered after the context's work, a broadcast, the
// timed wait for the device, abort and teardown. The suite's name puts it in the GPU kit's CUDA
// filter (tools/gpu-check.sh); it skips visibly without NCCL in the build or without a GPU.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/context.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/tensor.hpp"
#include "tests/test_util.hpp"

// Defined by cudl_distributed's build when CMake found MPI (and NCCL).
#ifndef CUDL_HAVE_MPI
#define CUDL_HAVE_MPI 0
#endif
#ifndef CUDL_HAVE_NCCL
#define CUDL_HAVE_NCCL 0
#endif

#if CUDL_HAVE_MPI
#include "cudl/engine/dist/mpi.hpp"
#endif

using namespace cudl;
using namespace cudl::testing;

TEST(NcclCuda, OneRankCommunicatorReducesAbortsAndTearsDown) {
#if !(CUDL_HAVE_MPI && CUDL_HAVE_NCCL)
  GTEST_SKIP() << "built without NCCL (it needs MPI and the CUDA backend in the build, and nccl.h/libnccl)";
#else
  if (cuda_device_count() < 1) GTEST_SKIP() << "no CUDA device";
  Context ctx{Device::cuda(0)};
  std::unique_ptr<Communicator> comm = make_single_rank_nccl_communicator(ctx, 60);
  EXPECT_EQ(comm->name(), "nccl");
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);

  // A known buffer: its mean over one rank is itself, bit for bit.
  std::vector<float> values(100'003);
  std::iota(values.begin(), values.end(), -50'000.0f);
  Tensor block = Tensor::from_host(values, {static_cast<std::int64_t>(values.size())}, ctx);
  comm->allreduce_mean(ctx, block);
  comm->synchronize(ctx);
  EXPECT_EQ(block.to_vector(ctx), values);

  // In buckets, as the training loop does, after work the context's stream queued just before: the
  // all-reduce on the communication stream must see the doubled values (the events order them).
  for (int step = 0; step < 3; ++step) {
    ctx.backend().scale(ctx, block, 2.0f);
    comm->start_allreduce_mean(ctx, block.view(60'000, Shape{40'003}));
    comm->start_allreduce_mean(ctx, block.view(0, Shape{60'000}));
    comm->finish_collectives(ctx);
  }
  comm->synchronize(ctx);
  std::vector<float> expected = values;
  for (float& v : expected) v *= 8.0f;
  EXPECT_EQ(block.to_vector(ctx), expected);
  EXPECT_GT(comm->allreduce_seconds(), 0.0) << "timed by events around the all-reduces";

  comm->broadcast(ctx, block, 0);
  EXPECT_EQ(block.to_vector(ctx), expected);
  std::vector<double> sums = {1.5, 2.5};
  comm->allreduce_sum(sums);
  EXPECT_EQ(sums, (std::vector<double>{1.5, 2.5}));

  // Abort: later collectives refuse in one line instead of queueing on a dead communicator, and
  // the teardown after it neither hangs nor throws.
  comm->abort_collectives();
  expect_error([&] { comm->allreduce_mean(ctx, block); }, {"allreduce_mean", "was aborted"});
  comm.reset();

  // A second communicator on the same GPU, torn down cleanly (ncclCommFinalize, then destroy).
  std::unique_ptr<Communicator> again = make_single_rank_nccl_communicator(ctx, 60);
  again->allreduce_mean(ctx, block);
  again->synchronize(ctx);
  EXPECT_EQ(block.to_vector(ctx), expected);
  again.reset();
  ctx.synchronize();
#endif
}
