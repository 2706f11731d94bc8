// gather_rows (engine/backend.hpp; kernels/cpu/gather.cpp, kernels/cuda/gather.cu): rows picked
// by index on each backend against hand-written expectations, empty gathers, the refusals, and CUDA
// against the CPU byte for byte in every dtype and at row sizes and offsets that select each of
// the kernel's copy widths (skipped visibly without a GPU).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tests/backend_fixture.hpp"
#include "tests/op_coverage.hpp"
#include "tests/test_util.hpp"

namespace {

using namespace cudl;
using cudl::testing::BackendTest;
using cudl::testing::expect_error;

CUDL_OP_COVERAGE(cuda_vs_cpu, "gather_rows");
CUDL_OP_COVERAGE(cuda_vs_cpu_half, "gather_rows");

class GatherRows : public BackendTest {};
CUDL_INSTANTIATE_BACKENDS(GatherRows);

// src[r, j] = 10 r + j: each value names its row.
std::vector<float> numbered(std::int64_t rows, std::int64_t cols) {
  std::vector<float> v;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j) v.push_back(static_cast<float>(10 * r + j));
  return v;
}

TEST_P(GatherRows, PicksRowsInIndexOrderWithRepeats) {
  const Tensor src = make(numbered(5, 6), {5, 2, 3});
  const Tensor index = make_int({4, 0, 4, 2}, {4});
  Tensor out = Tensor::empty({4, 2, 3}, ctx());
  backend().gather_rows(ctx(), src, index, out);
  std::vector<float> expected;
  for (int r : {4, 0, 4, 2})
    for (int j = 0; j < 6; ++j) expected.push_back(static_cast<float>(10 * r + j));
  EXPECT_EQ(host(out), expected);
}

TEST_P(GatherRows, GathersIntegerRowsSuchAsLabels) {
  const Tensor labels = make_int({7, 1, 3, 9, 0}, {5});
  const Tensor index = make_int({3, 3, 0, 4, 1, 2}, {6});
  Tensor out = Tensor::empty({6}, ctx(), DType::i32);
  backend().gather_rows(ctx(), labels, index, out);
  EXPECT_EQ(out.to_int_vector(ctx()), (std::vector<std::int32_t>{9, 9, 7, 0, 1, 3}));
}

TEST_P(GatherRows, EmptyIndexAndEmptyRowsWriteNothing) {
  const Tensor src = make(numbered(3, 4), {3, 4});
  Tensor none = Tensor::empty({0, 4}, ctx());
  backend().gather_rows(ctx(), src, make_int({}, {0}), none);
  EXPECT_EQ(none.numel(), 0);
  // Rows of no elements: the index is still checked on the CPU, and nothing is copied.
  const Tensor flat = Tensor::empty({3, 0}, ctx());
  Tensor out = Tensor::empty({2, 0}, ctx());
  backend().gather_rows(ctx(), flat, make_int({2, 0}, {2}), out);
  EXPECT_EQ(out.shape(), (Shape{2, 0}));
}

TEST_P(GatherRows, RefusesMismatchedArguments) {
  const Tensor src = make(numbered(3, 4), {3, 4});
  Tensor out = Tensor::empty({2, 4}, ctx());
  const Tensor index = make_int({0, 1}, {2});
  expect_error([&] { backend().gather_rows(ctx(), src, make({0, 1}, {2}), out); }, {"gather_rows", "index", "i32"});
  expect_error([&] { backend().gather_rows(ctx(), src, make_int({0, 1}, {1, 2}), out); }, {"gather_rows", "index"});
  Tensor wrong_shape = Tensor::empty({2, 3}, ctx());
  expect_error([&] { backend().gather_rows(ctx(), src, index, wrong_shape); },
               {"gather_rows", "out", "expected [2,4]"});
  Tensor wrong_dtype = Tensor::empty({2, 4}, ctx(), DType::i32);
  expect_error([&] { backend().gather_rows(ctx(), src, index, wrong_dtype); }, {"gather_rows", "out", "src"});
}

TEST(GatherRowsCpu, OutOfRangeIndexThrowsNamingItAndWritesNothing) {
  Context ctx(Device::cpu());
  const Tensor src = Tensor::from_host(numbered(5, 2), {5, 2}, ctx);
  Tensor out = Tensor::full({3, 2}, -1.0f, ctx);
  for (std::int32_t bad : {5, -1}) {
    const std::vector<std::int32_t> idx{0, bad, 1};
    const Tensor index = Tensor::from_host(std::span<const std::int32_t>(idx), {3}, ctx);
    expect_error([&] { ctx.backend().gather_rows(ctx, src, index, out); },
                 {"gather_rows", fmt::format("index[1]={} is outside [0, 5)", bad)});
    EXPECT_EQ(out.to_vector(ctx), std::vector<float>(6, -1.0f)) << "nothing written before the check";
  }
}

// A CPU tensor of random bytes (every bit pattern: NaN payloads and signalling NaNs must survive).
Tensor random_bytes(Context& cpu, const Shape& shape, DType dtype, std::uint32_t seed) {
  Tensor t = Tensor::empty(shape, cpu, dtype);
  std::mt19937 rng(seed);
  auto* p = static_cast<unsigned char*>(t.raw());
  for (std::size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(rng());
  return t;
}

std::vector<unsigned char> bytes_of(const Tensor& t, Context& cpu) {
  const Tensor h = t.to(cpu);
  const auto* p = static_cast<const unsigned char*>(h.raw());
  return {p, p + h.nbytes()};
}

TEST(GatherRowsCuda, MatchesTheCpuByteForByteInEveryDtypeAndWidth) {
  CUDL_REQUIRE_CUDA();
  Context cpu(Device::cpu()), gpu(Device::cuda(0));
  // Row elements chosen so that f32 rows take 16-, 8- and 4-byte units and f16 rows 2-byte ones;
  // `skip` rows dropped from the front offset src's address off 16-byte alignment.
  struct Case {
    DType dtype;
    std::int64_t cols, skip;
  };
  const std::vector<Case> cases{{DType::f32, 784, 0}, {DType::f32, 2, 0},    {DType::f32, 3, 0},
                                {DType::f32, 4, 1},   {DType::bf16, 8, 0},   {DType::bf16, 3, 0},
                                {DType::f16, 1, 0},   {DType::f16, 4099, 1}, {DType::i32, 1, 0}};
  std::uint32_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("{} x {} skip {}", dtype_name(c.dtype), c.cols, c.skip));
    const std::int64_t n = 37, b = 53;
    const Tensor whole = random_bytes(cpu, {n + c.skip, c.cols}, c.dtype, seed++);
    const Tensor src_host = whole.slice(c.skip, n + c.skip);
    std::mt19937 rng(seed++);
    std::vector<std::int32_t> idx(static_cast<std::size_t>(b));
    for (auto& i : idx) i = static_cast<std::int32_t>(rng() % n);
    const Tensor index_host = Tensor::from_host(std::span<const std::int32_t>(idx), {b}, cpu);
    Tensor want = Tensor::empty({b, c.cols}, cpu, c.dtype);
    cpu.backend().gather_rows(cpu, src_host, index_host, want);

    const Tensor src = whole.to(gpu).slice(c.skip, n + c.skip);
    Tensor got = Tensor::empty({b, c.cols}, gpu, c.dtype);
    gpu.backend().gather_rows(gpu, src, index_host.to(gpu), got);
    EXPECT_EQ(bytes_of(got, cpu), bytes_of(want, cpu));
  }
}

TEST(GatherRowsCuda, OutOfRangeIndexZeroesItsRowAndFaultsAtTheNextRead) {
  CUDL_REQUIRE_CUDA();
  Context gpu(Device::cuda(0));
  const Tensor src = Tensor::from_host(numbered(4, 3), {4, 3}, gpu);
  const std::vector<std::int32_t> idx{1, 4, 2};
  const Tensor index = Tensor::from_host(std::span<const std::int32_t>(idx), {3}, gpu);
  Tensor out = Tensor::full({3, 3}, -1.0f, gpu);
  cudl::testing::expect_error_by_next_read([&] { gpu.backend().gather_rows(gpu, src, index, out); },
                                           [&] { (void)out.to_vector(gpu); }, {"gather_rows", "outside [0, N)"});
  // The fault is reported once; the rows gathered around the bad index are right.
  EXPECT_EQ(out.to_vector(gpu), (std::vector<float>{10, 11, 12, 0, 0, 0, 20, 21, 22}));
}

}  // namespace
