#pragma once
// fit()'s data-parallel hooks (issue 12), kept apart from the training loop so that the loop reads
// as the one-process loop with a few calls added. With no communicator every hook is the identity.
//
// Every rank draws the same global batch (the loader's order depends on the seed and the epoch
// only, never on the number of ranks) and trains on its rows shard_of(B, rank, N); the gradient
// block is averaged over the ranks once per step, so every rank applies the same update. Metrics
// are sums over all ranks' shards. BatchNorm statistics stay per rank (PyTorch DDP without
// SyncBatchNorm).
#include <cstdint>
#include <string>
#include <vector>

#include "cudl/engine/distributed.hpp"
#include "cudl/engine/io/loader.hpp"

namespace cudl {

// Checks, before the first step, that the global batch splits over the ranks: it must divide by
// the number of ranks, and an epoch's last, partial batch must give every rank a row.
void check_data_parallel_batches(const Communicator* comm, std::int64_t dataset_size, std::int64_t batch_size);

struct FitOptions;
enum class Precision;

// Whether the run updates parameters sharded (TrainConfig::shard_update; GradientBuckets): asked
// for, the communicator can, and nothing in the step needs the whole averaged gradient on every
// rank: not gradient clipping (its norm is over the whole gradient) nor fp16's loss scaling (its
// overflow check is, and every rank must skip the same steps).
bool shards_update(const FitOptions& o, const Communicator& comm, Precision precision);

// This rank's rows of a global batch (the batch itself without a communicator): a sharded
// loader's batch as it is (LoaderOptions::shard_count: the rank's rows already), a whole global
// batch sliced; tells the model's Dropout layers which rows they are (Dropout::set_global_rows),
// so they draw one process's masks for them.
class Sequential;
Batch local_shard(Sequential& model, const Batch& global, const Communicator* comm);

// The dloss that makes the all-reduced mean of the ranks' gradients the gradient of the global
// batch's mean loss: each rank's loss is a mean over its own rows, so its gradient is weighted by
// its share of the batch (N * rows / B; exactly 1 when the shards are equal).
float shard_loss_scale(const Communicator* comm, std::int64_t shard_rows, std::int64_t global_rows);

// This rank's contiguous part of an evaluation split (each rank evaluates its part; the results
// are combined with combine_eval). The dataset itself without a communicator.
Dataset local_part(const Dataset& data, const Communicator* comm);

// Running sums over all ranks: `loss_sum` and `correct` are sums over samples, `samples` a count.
// Collective: every rank calls it at the same step.
struct Sums {
  double loss = 0, correct = 0, samples = 0;
};
Sums combine_sums(Communicator* comm, Sums local);

// A value every rank of a run must share: the model, its parameter count, an option, a dataset's
// size, the seed. `hashed`: a fingerprint (printed in hex) rather than a number to print.
struct AgreedValue {
  std::string name;
  std::uint64_t value = 0;
  bool hashed = false;
};

// Checks with one small collective (each rank's values, exchanged by one host all-reduce) that every
// rank holds the same `values`; call it before any other collective, so that ranks that disagree
// on the model, the batch or the step count stop with this Error instead of exchanging blocks of
// different sizes: "ranks disagree on --batch-size: rank 0 has 64, rank 1 has 32". Every rank
// must pass the same number of values (the same code builds them). No-op without a communicator.
void check_ranks_agree(Communicator* comm, const std::vector<AgreedValue>& values);

// What fit's ranks must agree on before their first collective: the model (name, layer names,
// types and parameter shapes), its parameter count, every option that sets the steps or the update
// (batch, epochs, max steps, optimizer, schedule, augmentation, seed...), the splits' sizes and
// labels, and where a resumed run starts (epoch and step).
class Sequential;
std::vector<AgreedValue> fit_agreement(const Sequential& model, const FitOptions& o, const Dataset& train,
                                       const Dataset& validation, const Dataset& test, std::int64_t first_epoch,
                                       std::int64_t first_step);

// 64-bit FNV-1a over bytes, continued from `h`: the fingerprints above.
std::uint64_t fingerprint(const void* data, std::size_t bytes, std::uint64_t h = 14695981039346656037ull);
std::uint64_t fingerprint(const std::string& text, std::uint64_t h = 14695981039346656037ull);

}  // namespace cudl
