#pragma once
// One pass of a model over a dataset in order, in inference mode, averaging two per-batch metrics
// weighted by batch size: the loop that classification's evaluate() and reconstruction's
// evaluation share. The sums stay on the device; the host reads them once at the end.
#include <cstdint>
#include <functional>

#include "cudl/engine/io/loader.hpp"
#include "cudl/models/network/sequential.hpp"

namespace cudl {

struct BatchMeans {
  double first = 0, second = 0;  // 0 when there were no samples
  std::int64_t samples = 0;
};

// metric(output, batch, first, second) writes the batch's two means into the one-element tensors.
BatchMeans batch_means(
    Context& ctx, Sequential& model, const Dataset& data, std::int64_t batch_size,
    const std::function<void(const Tensor& output, const Batch& batch, Tensor& first, Tensor& second)>& metric);

}  // namespace cudl
