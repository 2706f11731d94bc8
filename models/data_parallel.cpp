#include "cudl/models/data_parallel.hpp"

#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

void check_data_parallel_batches(const Communicator* comm, std::int64_t dataset_size, std::int64_t batch_size) {
  if (!comm || comm->size() == 1) return;
  const int n = comm->size();
  CUDL_CHECK(batch_size % n == 0,
             "--batch-size {} is the global batch and must divide by the {} ranks (each takes {} or {} images); "
             "pick a multiple of {}",
             batch_size, n, batch_size / n, batch_size / n + 1, n);
  const std::int64_t last = dataset_size % batch_size;
  CUDL_CHECK(last == 0 || last >= n,
             "the last batch of each epoch holds {} image(s) ({} training images, --batch-size {}), fewer than the {} "
             "ranks: change --batch-size or --subset so every rank gets at least one",
             last, dataset_size, batch_size, n);
}

Batch local_shard(Context& ctx, const Batch& global, const Communicator* comm) {
  if (!comm || comm->size() == 1) return global;
  const Shard s = shard_of(global.labels.dim(0), comm->rank(), comm->size());
  ctx.set_batch_shard({s.begin, global.labels.dim(0)});
  Batch local;
  local.images = global.images.slice(s.begin, s.end);
  local.labels = global.labels.slice(s.begin, s.end);
  local.index = global.index;
  return local;
}

float shard_loss_scale(const Communicator* comm, std::int64_t shard_rows, std::int64_t global_rows) {
  if (!comm || comm->size() == 1 || global_rows == 0) return 1.0f;
  return static_cast<float>(static_cast<double>(comm->size()) * static_cast<double>(shard_rows) /
                            static_cast<double>(global_rows));
}

Dataset local_part(const Dataset& data, const Communicator* comm) {
  if (!comm || comm->size() == 1 || data.size() == 0) return data;
  const Shard s = shard_of(data.size(), comm->rank(), comm->size());
  // select_samples takes the rows of a decoded dataset and the paths of a listed folder alike.
  std::vector<std::int64_t> rows(static_cast<std::size_t>(s.end - s.begin));
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = s.begin + static_cast<std::int64_t>(i);
  return select_samples(data, rows);
}

Sums combine_sums(Communicator* comm, Sums local) {
  if (!comm || comm->size() == 1) return local;
  std::vector<double> v = {local.loss, local.correct, local.samples};
  comm->allreduce_sum(v);
  return {v[0], v[1], v[2]};
}

}  // namespace cudl
